"""What the use cases are configured with: a small value, built once by the composition root
(bootstrap) from `Settings`, with the tenant explicit. The use cases never see `Settings`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from face_dedup.calibration import ImpostorTail
from face_dedup.decision import DecisionPolicy, PolicySettings
from face_dedup.record_templates import TemplatePolicy


class _InputLimits(Protocol):
    @property
    def max_bytes(self) -> int: ...


class ConfigSettings(PolicySettings, Protocol):
    """The part of `Settings` the core is built from (Settings has it; nothing here reads it)."""

    @property
    def tenant(self) -> str: ...
    @property
    def keep_photos(self) -> bool: ...
    @property
    def review_link_base(self) -> str: ...
    @property
    def data_dir(self) -> Path: ...
    @property
    def max_templates(self) -> int: ...
    @property
    def template_min_detection_score(self) -> float: ...
    @property
    def decode(self) -> _InputLimits: ...
    def backups(self) -> dict[str, int]: ...


@dataclass(frozen=True)
class ServiceConfig:
    tenant: str  # whose registry: every read and write is this tenant's
    policy: DecisionPolicy  # thresholds and outcomes (its tail names the model pack)
    max_input_bytes: int  # an input file larger than this is refused unread (FACE_DEDUP_DECODE_MAX_BYTES)
    keep_photos: bool = True  # photos and aligned crops kept for case officers
    review_link_base: str = "face-dedup://cases/"  # a notification's link: this + the case id
    # Backups that keep erased data, name -> days (an erasure receipt says until when).
    backups: tuple[tuple[str, int], ...] = ()
    # One machine: where `face-dedup migrate` records each tenant's active pack (None: nowhere).
    data_dir: Path | None = None
    templates: TemplatePolicy = field(default_factory=TemplatePolicy)  # which later photos may join a record
    # Ask the store which packs another tenant's templates are in before serving it (one
    # machine). False for the cloud functions: DynamoDB has no cheap answer (its adapter says
    # None) and their roles do not declare the call; the deploy-time check covers them
    # (pack_guard.check_deployment).
    tenant_packs_from_store: bool = True

    @property
    def model_pack(self) -> str:
        return self.policy.model_pack

    @classmethod
    def from_settings(cls, settings: ConfigSettings, tail: ImpostorTail) -> ServiceConfig:
        return cls(
            tenant=settings.tenant,
            policy=DecisionPolicy.from_settings(settings, tail),
            max_input_bytes=settings.decode.max_bytes,
            keep_photos=settings.keep_photos,
            review_link_base=settings.review_link_base,
            backups=tuple(sorted(settings.backups().items())),
            data_dir=settings.data_dir,
            templates=TemplatePolicy(settings.max_templates, settings.template_min_detection_score),
        )

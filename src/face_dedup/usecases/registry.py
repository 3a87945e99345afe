"""What every use case shares: one tenant's registry (its ports, engine and config) and the
small steps they all take (search above a threshold, describe hits, audit, count, notify)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from face_dedup.calibration import DedupThresholds
from face_dedup.decision import DecisionPolicy
from face_dedup.domain import AuditEvent, Candidate, ImportItem, Notification, StagedInput, utc_now
from face_dedup.drift import DriftRecorder
from face_dedup.errors import ConfigError
from face_dedup.ports import BlobStore, FaceAnalyzer, Hit, Notifier, RecordStore, VectorIndex
from face_dedup.record_templates import calibrated_score
from face_dedup.usecases.config import ServiceConfig

if TYPE_CHECKING:
    from face_dedup.migration import ShadowPack

log = logging.getLogger(__name__)

SYSTEM_ACTOR = "system"


@dataclass
class Registry:
    config: ServiceConfig
    engine: FaceAnalyzer | None  # None for steps that never look at a photo (workflow tasks)
    index: VectorIndex
    store: RecordStore
    blobs: BlobStore
    notifier: Notifier
    # One machine, many processes: held around search + commit so every input is compared
    # with every face committed before it (the cloud re-checks after committing instead).
    registry_lock: Callable[[], AbstractContextManager[None]] = nullcontext
    # Where files hold the data (one machine): finds copies of erased bytes left in them.
    erasure_check: Callable[[str, dict[str, bytes]], list[str]] | None = None
    # Daily counts of what is decided (drift.py), where a registry keeps them.
    drift: DriftRecorder | None = None
    # A migration's second pack (migration.py): searched on each new input, deciding nothing.
    shadow: ShadowPack | None = field(default=None)
    # Encodes an aligned crop as PNG where no engine is (a service registering templates it
    # was handed); the composition root passes vision.png's. With an engine, the engine's.
    crop_png: Callable[[NDArray[np.uint8]], bytes] | None = None
    # Decodes a stored photo to RGB for the review sheet, the safe way (header checked against
    # the decode limits first); the composition root passes vision.decode's, so the use cases
    # load no decoder of their own.
    photo_rgb: Callable[[bytes], NDArray[np.uint8]] | None = None

    @property
    def tenant(self) -> str:
        return self.config.tenant

    @property
    def model_pack(self) -> str:
        return self.config.model_pack

    @property
    def policy(self) -> DecisionPolicy:
        return self.config.policy

    def encode_crop(self, crop: NDArray[np.uint8]) -> bytes:
        """The aligned crop officers review, as PNG: encoded behind the engine port (or the
        encoder the composition root gave), so no use case loads an image library."""
        if self.engine is not None:
            return self.engine.crop_png(crop)
        if self.crop_png is not None:
            return self.crop_png(crop)
        raise RuntimeError("this service was built with neither a face engine nor a crop encoder")

    def analyzer(self) -> FaceAnalyzer:
        if self.engine is None:
            raise RuntimeError("this service was built without a face engine (a workflow step)")
        return self.engine

    def for_tenant(self, tenant: str) -> Registry:
        """The same ports and engine, another tenant (refused when that tenant's templates were
        migrated to another pack than this process runs: it would search nothing)."""
        recorded = self.recorded_pack(tenant)
        if recorded not in (None, self.model_pack):
            raise ConfigError(
                f"tenant {tenant}'s templates are in model pack {recorded}, this process runs "
                f"{self.model_pack}: serve that tenant from a process started for it"
            )
        # A tenant that never migrated records its pack only in its templates (pack_guard.py
        # checks the process's own tenant at start; this, each other one it serves).
        packs = self.store.template_packs(tenant=tenant) if self.config.tenant_packs_from_store else None
        if packs and not packs <= {self.model_pack}:
            raise ConfigError(
                f"tenant {tenant}'s templates are in model pack {', '.join(sorted(packs))}, this "
                f"process runs {self.model_pack}: serve that tenant from a process started for it"
            )
        return replace(self, config=replace(self.config, tenant=tenant), shadow=None)

    def still_this_pack(self) -> None:
        """A process started before a cut-over (or rollback) would search a partition the index
        no longer fills, and enroll everyone as new: it stops instead (a file read, in the lock)."""
        recorded = self.recorded_pack(self.tenant)
        if recorded not in (None, self.model_pack):
            raise ConfigError(
                f"this registry was moved to model pack {recorded} while this process ran with "
                f"{self.model_pack}: restart it, then submit this input again (nothing was decided)"
            )

    def recorded_pack(self, tenant: str) -> str | None:
        """The tenant's active pack as `face-dedup migrate` recorded it (None: nothing recorded)."""
        if self.config.data_dir is None:
            return None
        from face_dedup.migration import recorded_active  # the migration's own record of it

        return recorded_active(self.config.data_dir, tenant)

    # -- thresholds and search ---------------------------------------------------------------

    def gallery_size(self) -> int:
        return self.index.count(tenant=self.tenant, model_pack=self.model_pack)

    def thresholds(self, gallery_size: int | None = None) -> DedupThresholds:
        return self.policy.thresholds(self.gallery_size() if gallery_size is None else gallery_size)

    def search_above(self, staged: StagedInput, threshold: float) -> tuple[list[Candidate], bool]:
        """Enrolled faces scoring at or above `threshold` against the staged one (not itself),
        and whether the index cut the list (more than max_candidates faces are there)."""
        limit = self.policy.max_candidates
        found = self.index.search_above(
            staged.embedding,
            tenant=self.tenant,
            model_pack=self.model_pack,
            min_score=threshold,
            limit=limit + 1,  # room for the staged record itself, when it is indexed already
        )
        hits = [h for h in found.hits if h.record_id != staged.record_id]
        capped = found.capped or len(hits) > limit
        return self.describe(hits[:limit], staged.embedding), capped

    def describe(self, hits: list[Hit], probe: NDArray[np.float32]) -> list[Candidate]:
        records = self.store.describe_records(h.record_id for h in hits)
        candidates = []
        for hit in hits:
            record = records.get(hit.record_id)
            if record is None:
                continue  # in the index but not the store: an erase or crash in progress
            # The index's score is the engine's; the decision uses the one computed here, held
            # to the one-template calibration for a record of several (record_templates.py).
            score = calibrated_score(float(np.dot(record.embedding, probe)), record.template_count)
            candidates.append(Candidate(hit.record_id, score, record.source, record.application_id))
        return candidates

    # -- audit, counts, notifications --------------------------------------------------------

    def event(self, action: str, actor: str, at: str, **details: Any) -> AuditEvent:
        return AuditEvent(action=action, actor=actor, tenant=self.tenant, at=at, details=details)

    def record_event(self, action: str, actor: str, **details: Any) -> None:
        """An audit entry for something that happened outside the use cases."""
        self.store.append_audit(self.event(action, actor, utc_now(), **details))

    def observe(self, item: ImportItem, actor: str) -> None:
        """Counts for drift watching, after the input is safely committed. Losing a count must
        not fail an enrollment: a failure is logged (its kind only, nothing of the input)."""
        if self.drift is None:
            return
        try:
            self.drift.observe(item, actor)
        except Exception as exc:  # any failure of the tally is reported, not raised
            log.warning("drift counts not recorded: %s", type(exc).__name__)

    def notify_case(self, case_id: str) -> None:
        self.notifier.notify(
            Notification(
                kind="case.opened",
                tenant=self.tenant,
                case_id=case_id,
                link=self.config.review_link_base + case_id,
            )
        )

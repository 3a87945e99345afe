"""`DedupService`: the facade the entry points hold, one object per tenant. It delegates to the
use cases in `face_dedup.usecases` (enrollment, matching, review, erasure), which share one
`Registry` (the ports, the engine, a `ServiceConfig` with the tenant and the `DecisionPolicy`).

Order of writes for one input (so a crash at any point loses nothing and duplicates nothing):
photos to the blob store (deterministic keys), then one atomic store commit (record, case,
import item, audit), then the index. `reconcile()` repairs an index that missed the last step.
Re-running the same input finds its import item and returns the stored outcome.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from face_dedup.calibration import DedupThresholds, ImpostorTail
from face_dedup.decision import DecisionPolicy
from face_dedup.domain import Actor, AuditEvent, Case, CaseDecision, ImportItem, StagedInput
from face_dedup.drift import DriftRecorder
from face_dedup.ports import BlobStore, FaceAnalyzer, Notifier, RecordStore, VectorIndex
from face_dedup.usecases.config import ServiceConfig
from face_dedup.usecases.enrollment import Enrollment
from face_dedup.usecases.erasure import Erasure
from face_dedup.usecases.inputs import InputRef, StagedDecision, StageResult, content_digest
from face_dedup.usecases.matching import Matching, SearchResult, VerifyResult
from face_dedup.usecases.registry import SYSTEM_ACTOR, Registry
from face_dedup.usecases.review import Review

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from face_dedup.analysis import FaceTemplate, Rejection
    from face_dedup.migration import ShadowPack
    from face_dedup.settings import Settings  # carried for the entry points only, never read here

# The names callers import from here.
__all__ = [
    "SYSTEM_ACTOR",
    "DedupService",
    "InputRef",
    "SearchResult",
    "ServiceConfig",
    "StageResult",
    "StagedDecision",
    "VerifyResult",
    "content_digest",
]


class DedupService:
    def __init__(
        self,
        config: ServiceConfig,
        engine: FaceAnalyzer | None,
        index: VectorIndex,
        store: RecordStore,
        blobs: BlobStore,
        notifier: Notifier,
        *,
        registry_lock: Callable[[], AbstractContextManager[None]] | None = None,
        erasure_check: Callable[[str, dict[str, bytes]], list[str]] | None = None,
        settings: Settings | None = None,
        crop_png: Callable[[NDArray[np.uint8]], bytes] | None = None,
        photo_rgb: Callable[[bytes], NDArray[np.uint8]] | None = None,
    ) -> None:
        """`engine=None` for steps that never look at a photo (the workflow's search, enroll and
        notify functions): they need no model files. `settings`: what the entry points that
        built this service read back (photo limits, paths); the use cases never see it."""
        pack_id = engine.pack.id if engine is not None else config.model_pack
        if config.policy.tail.model_pack != pack_id:
            raise ValueError(
                f"calibration is for {config.policy.tail.model_pack}, the service runs {pack_id}"
            )
        registry = Registry(
            config, engine, index, store, blobs, notifier, registry_lock or nullcontext, erasure_check
        )
        registry.crop_png = crop_png
        registry.photo_rgb = photo_rgb  # the review sheet's decoder of stored photos
        self._attach(registry, settings)

    def _attach(self, registry: Registry, settings: Settings | None) -> None:
        self._registry = registry
        self._settings = settings
        self._enrollment = Enrollment(registry)
        self._matching = Matching(registry)
        self._review = Review(registry)
        self._erasure = Erasure(registry)

    def for_tenant(self, tenant: str) -> DedupService:
        """The same service (same adapters, same engine) working for another tenant."""
        if tenant == self.tenant:
            return self
        other = DedupService.__new__(DedupService)
        settings = self._settings.with_overrides(tenant=tenant) if self._settings is not None else None
        other._attach(self._registry.for_tenant(tenant), settings)
        return other

    def with_index(
        self, index: VectorIndex, *, crop_png: Callable[[NDArray[np.uint8]], bytes] | None = None
    ) -> DedupService:
        """The same service searching and writing through another index (the cloud bulk job's
        decide step: its precomputed answers in front of the real index, cloud_bulk_decide.py);
        `crop_png` where it has no engine to encode the aligned crops it keeps."""
        other = DedupService.__new__(DedupService)
        registry = replace(self._registry, index=index)
        if crop_png is not None:
            registry.crop_png = crop_png
        other._attach(registry, self._settings)
        return other

    # -- what the entry points read ------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            raise RuntimeError("this service was built from a ServiceConfig alone (no Settings)")
        return self._settings

    @property
    def config(self) -> ServiceConfig:
        return self._registry.config

    @property
    def tenant(self) -> str:
        return self._registry.tenant

    @property
    def model_pack(self) -> str:
        return self._registry.model_pack

    @property
    def policy(self) -> DecisionPolicy:
        return self._registry.policy

    @property
    def tail(self) -> ImpostorTail:
        return self._registry.policy.tail

    @property
    def engine(self) -> FaceAnalyzer:
        return self._registry.analyzer()

    @property
    def store(self) -> RecordStore:
        return self._registry.store

    @property
    def blobs(self) -> BlobStore:
        return self._registry.blobs

    @blobs.setter
    def blobs(self, blobs: BlobStore) -> None:  # tests swap in another blob store
        self._registry.blobs = blobs

    @property
    def notifier(self) -> Notifier:
        return self._registry.notifier

    @property
    def index(self) -> VectorIndex:
        return self._registry.index

    @index.setter
    def index(self, index: VectorIndex) -> None:  # tests swap in a failing index
        self._registry.index = index

    @property
    def registry_lock(self) -> Callable[[], AbstractContextManager[None]]:
        return self._registry.registry_lock

    @property
    def drift(self) -> DriftRecorder | None:
        return self._registry.drift

    @drift.setter
    def drift(self, drift: DriftRecorder | None) -> None:  # set by bootstrap where counts are kept
        self._registry.drift = drift

    @property
    def shadow(self) -> ShadowPack | None:
        return self._registry.shadow

    @shadow.setter
    def shadow(self, shadow: ShadowPack | None) -> None:  # set by bootstrap during a migration
        self._registry.shadow = shadow

    def thresholds(self, gallery_size: int | None = None) -> DedupThresholds:
        return self._registry.thresholds(gallery_size)

    def gallery_size(self) -> int:
        return self._registry.gallery_size()

    def record_event(self, action: str, actor: str, **details: Any) -> None:
        self._registry.record_event(action, actor, **details)

    def _event(self, action: str, actor: str, at: str, **details: Any) -> AuditEvent:
        return self._registry.event(action, actor, at, **details)

    def notify_case(self, case_id: str) -> None:
        self._registry.notify_case(case_id)

    # -- enrollment (usecases/enrollment.py) -------------------------------------------------

    def idempotency_key(self, ref: InputRef, digest: str) -> str:
        return self._enrollment.idempotency_key(ref, digest)

    def analyze(self, data: bytes) -> FaceTemplate | Rejection:
        return self._enrollment.analyze(data)

    def enroll(self, data: bytes, ref: InputRef, actor: str = SYSTEM_ACTOR) -> ImportItem:
        return self._enrollment.enroll(data, ref, actor)

    def enroll_without_search(self, data: bytes, ref: InputRef, actor: str = SYSTEM_ACTOR) -> ImportItem:
        return self._enrollment.enroll_without_search(data, ref, actor)

    def register(
        self,
        ref: InputRef,
        digest: str,
        analysis: FaceTemplate | Rejection,
        data: bytes | None,
        actor: str = SYSTEM_ACTOR,
    ) -> ImportItem:
        return self._enrollment.register(ref, digest, analysis, data, actor)

    def recheck_registered(
        self, ref: InputRef, digest: str, analysis: FaceTemplate, actor: str = SYSTEM_ACTOR
    ) -> Case | None:
        return self._enrollment.recheck_registered(ref, digest, analysis, actor)

    def decide_staged(self, staged: StagedInput) -> StagedDecision:
        return self._enrollment.decide_staged(staged)

    def stage(self, data: bytes, ref: InputRef, actor: str = SYSTEM_ACTOR) -> StageResult:
        return self._enrollment.stage(data, ref, actor)

    def search_staged(self, key: str) -> StagedDecision:
        return self._enrollment.search_staged(key)

    def complete_staged(self, key: str, decision: StagedDecision, actor: str = SYSTEM_ACTOR) -> ImportItem:
        return self._enrollment.complete_staged(key, decision, actor)

    def fail_staged(self, key: str, error: str, actor: str = SYSTEM_ACTOR) -> ImportItem:
        return self._enrollment.fail_staged(key, error, actor)

    # -- 1:1 and 1:N (usecases/matching.py) --------------------------------------------------

    def verify(self, first: bytes, second: bytes, actor: str = SYSTEM_ACTOR) -> VerifyResult:
        return self._matching.verify(first, second, actor)

    def search(self, data: bytes, top_k: int, actor: str = SYSTEM_ACTOR) -> SearchResult:
        return self._matching.search(data, top_k, actor)

    # -- cases (usecases/review.py over usecases/case_rules.py) ------------------------------

    def claim_case(self, case_id: str, actor: Actor) -> Case:
        return self._review.claim(case_id, actor)

    def open_new_case(self, case: Case, actor: str, reason: str) -> bool:
        return self._review.open_new(case, actor, reason)

    def release_case(self, case_id: str, actor: Actor) -> Case:
        return self._review.release(case_id, actor)

    def undo_decision(self, case_id: str, actor: Actor, now: datetime | None = None) -> Case:
        return self._review.undo(case_id, actor, now)

    def decide_case(
        self,
        case_id: str,
        decision: CaseDecision,
        actor: Actor,
        comment: str,
        matched_record_id: str | None = None,
    ) -> Case:
        return self._review.decide(case_id, decision, actor, comment, matched_record_id)

    def confirm_case(self, case_id: str, actor: Actor, confirm: bool, comment: str) -> Case:
        return self._review.confirm(case_id, actor, confirm, comment)

    def case_sheet(self, case: Case, actor: str) -> bytes:
        return self._review.sheet(case, actor)

    # -- erasure and consistency (usecases/erasure.py) ---------------------------------------

    def erase(self, record_id: str, actor: str, reason: str) -> dict[str, Any]:
        return self._erasure.erase(record_id, actor, reason)

    def reconcile(self) -> dict[str, int]:
        return self._erasure.reconcile()

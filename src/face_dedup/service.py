"""The de-duplication service: the use cases, written against the ports only.

Order of writes for one input (so a crash at any point loses nothing and duplicates nothing):
photos to the blob store (deterministic keys), then one atomic store commit (record, case,
import item, audit), then the index. `reconcile()` repairs an index that missed the last step.
Re-running the same input finds its import item and returns the stored outcome.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext, suppress
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from face_dedup.blob_keys import crop_key, photo_key, record_prefix, template_crop_key, template_photo_key
from face_dedup.calibration import DedupThresholds, ImpostorTail
from face_dedup.decision import DecisionPolicy
from face_dedup.domain import (
    UNDO_MINUTES,
    Actor,
    AuditEvent,
    Candidate,
    Case,
    CaseDecision,
    CaseStatus,
    ImportItem,
    Notification,
    Outcome,
    Record,
    RecordStatus,
    Role,
    StagedInput,
    candidates_from_json,
    candidates_to_json,
    claim_holder,
    stable_id,
    template_problem,
    utc_now,
)
from face_dedup.drift import DriftRecorder
from face_dedup.errors import ConfigError, ErasureIncomplete, InvalidState, NotFound, PermissionDenied, Reason
from face_dedup.models.custom import find_pack
from face_dedup.outcomes import case_to_notify
from face_dedup.ports import (
    BlobStore,
    EnrollmentCommit,
    FaceAnalyzer,
    Hit,
    IndexEntry,
    Notifier,
    RecordStore,
    VectorIndex,
)
from face_dedup.record_templates import calibrated_score
from face_dedup.settings import Settings
from face_dedup.vision.pipeline import FaceTemplate, Rejection
from face_dedup.vision.png import encode_png

if TYPE_CHECKING:
    from face_dedup.migration import ShadowPack

log = logging.getLogger(__name__)

SYSTEM_ACTOR = "system"


@dataclass(frozen=True)
class InputRef:
    """Where an input came from. `source` is what the operator gave (a path or an object key)."""

    source: str
    application_id: str | None = None
    # What makes two submissions "the same submission": the application id when there is one,
    # otherwise the source's stable identity (e.g. its absolute path).
    identity: str | None = None

    @property
    def submission_identity(self) -> str:
        if self.application_id:
            return "app:" + self.application_id
        return "src:" + (self.identity or self.source)


@dataclass(frozen=True)
class VerifyResult:
    score: float | None
    threshold: float
    fmr: float
    match: bool
    model_pack: str
    rejected: tuple[tuple[str, str, str], ...] = ()  # (which, reason, message)


@dataclass(frozen=True)
class SearchResult:
    candidates: tuple[Candidate, ...]
    review_threshold: float
    duplicate_threshold: float
    gallery_size: int
    rejection: Rejection | None = None


@dataclass(frozen=True)
class StageResult:
    key: str
    item: ImportItem | None  # final already (rejected, or decided before); None: staged


@dataclass(frozen=True)
class StagedDecision:
    """What the search step decided; plain data, so a workflow can carry it between tasks
    (record ids and scores only, never a template)."""

    key: str
    outcome: Outcome
    candidates: tuple[Candidate, ...]
    thresholds: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "outcome": self.outcome.value,
            "candidates": json.loads(candidates_to_json(self.candidates)),
            "thresholds": self.thresholds,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> StagedDecision:
        return cls(
            str(raw["key"]),
            Outcome(raw["outcome"]),
            candidates_from_json(json.dumps(raw["candidates"])),
            dict(raw["thresholds"]),
        )

    @classmethod
    def of_item(cls, item: ImportItem) -> StagedDecision:
        return cls(item.key, item.outcome, item.candidates, {})


def content_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class DedupService:
    # Daily counts of what is decided (drift.py): set by bootstrap where a registry keeps them.
    drift: DriftRecorder | None = None
    # A migration's second pack (migration.py): searched on each new input, deciding nothing.
    shadow: ShadowPack | None = None

    def __init__(
        self,
        settings: Settings,
        engine: FaceAnalyzer | None,
        index: VectorIndex,
        store: RecordStore,
        blobs: BlobStore,
        notifier: Notifier,
        tail: ImpostorTail,
        *,
        registry_lock: Callable[[], AbstractContextManager[None]] | None = None,
        erasure_check: Callable[[str, dict[str, bytes]], list[str]] | None = None,
    ) -> None:
        """`engine=None` for steps that never look at a photo (the workflow's search, enroll and
        notify functions): they need no model files."""
        pack = engine.pack if engine is not None else find_pack(settings.model_pack, settings.models_dir)
        pack_id = pack.id
        if tail.model_pack != pack_id:
            raise ValueError(f"calibration is for {tail.model_pack}, the service runs {pack_id}")
        self._pack_id = pack_id
        self.settings = settings
        self._engine = engine
        self.index = index
        self.store = store
        self.blobs = blobs
        self.notifier = notifier
        self.tail = tail
        self.policy = DecisionPolicy.from_settings(settings, tail)
        # One machine, many processes: held around search + commit so every input is compared
        # with every face committed before it (the cloud re-checks after committing instead).
        self.registry_lock = registry_lock or nullcontext
        # Where files hold the data (one machine): finds copies of erased bytes left in them.
        self.erasure_check = erasure_check

    @property
    def tenant(self) -> str:
        return self.settings.tenant

    @property
    def model_pack(self) -> str:
        return self._pack_id

    @property
    def engine(self) -> FaceAnalyzer:
        if self._engine is None:
            raise RuntimeError("this service was built without a face engine (a workflow step)")
        return self._engine

    def for_tenant(self, tenant: str) -> DedupService:
        """The same service (same adapters, same engine) working for another tenant."""
        if tenant == self.tenant:
            return self
        from face_dedup.migration import recorded_active

        recorded = recorded_active(self.settings.data_dir, tenant)
        if recorded not in (None, self.model_pack):  # migrated apart: this engine would search nothing
            raise ConfigError(
                f"tenant {tenant}'s templates are in model pack {recorded}, this process runs "
                f"{self.model_pack}: serve that tenant from a process started for it"
            )
        other = DedupService(
            self.settings.with_overrides(tenant=tenant),
            self._engine,
            self.index,
            self.store,
            self.blobs,
            self.notifier,
            self.tail,
            registry_lock=self.registry_lock,
            erasure_check=self.erasure_check,
        )
        other.drift = self.drift
        return other

    # -- thresholds -----------------------------------------------------------------------

    def thresholds(self, gallery_size: int | None = None) -> DedupThresholds:
        return self.policy.thresholds(self.gallery_size() if gallery_size is None else gallery_size)

    def gallery_size(self) -> int:
        return self.index.count(tenant=self.tenant, model_pack=self.model_pack)

    # -- enrollment -----------------------------------------------------------------------

    def idempotency_key(self, ref: InputRef, digest: str) -> str:
        return stable_id("imp", self.tenant, self.model_pack, ref.submission_identity, digest)

    def analyze(self, data: bytes) -> FaceTemplate | Rejection:
        """Pure and thread-safe: decode, detect, quality, align, embed."""
        return self.engine.process(data)

    def enroll(self, data: bytes, ref: InputRef, actor: str = SYSTEM_ACTOR) -> ImportItem:
        digest = content_digest(data)
        done = self.store.get_import_item(self.idempotency_key(ref, digest))
        if done is not None:
            return done
        return self.register(ref, digest, self.analyze(data), data, actor)

    def enroll_without_search(self, data: bytes, ref: InputRef, actor: str = SYSTEM_ACTOR) -> ImportItem:
        """Enroll one photo as it is, searching nothing: for callers that ask for de-duplication
        separately (MOSIP's ABIS insert; its identify comes later). Same writes, same audit and
        same idempotency as `enroll`; rejections are kept as for any input."""
        digest = content_digest(data)
        key = self.idempotency_key(ref, digest)
        done = self.store.get_import_item(key)
        if done is not None:
            return done
        analysis = self.analyze(data)
        if isinstance(analysis, Rejection):
            return self._commit_rejection(key, ref, digest, analysis, actor)
        staged = self._staged(key, ref, digest, analysis)
        self._still_this_pack()
        self._keep_photos(staged.record_id, data, analysis)
        info = {"model_pack": self.model_pack, "calibration": self.tail.source, "searched": False}
        item, _ = self._commit(staged, StagedDecision(key, Outcome.ENROLLED, (), info), actor)
        return item

    def register(
        self,
        ref: InputRef,
        digest: str,
        analysis: FaceTemplate | Rejection,
        data: bytes | None,
        actor: str = SYSTEM_ACTOR,
    ) -> ImportItem:
        """Decide and persist one analysed input. Not thread-safe by design: each input must
        see every earlier one, so registration is sequential (analysis is what runs in parallel)."""
        key = self.idempotency_key(ref, digest)
        done = self.store.get_import_item(key)
        if done is not None:
            return done
        if isinstance(analysis, Rejection):
            return self._commit_rejection(key, ref, digest, analysis, actor)
        staged = self._staged(key, ref, digest, analysis)
        if data is not None:
            self._keep_photos(staged.record_id, data, analysis)
        with self.registry_lock():  # nothing enrolls between this search and this commit
            done = self.store.get_import_item(key)
            if done is not None:  # another process imported the same input meanwhile
                return done
            self._still_this_pack()
            decision = self.decide_staged(staged)
            item, _ = self._commit(staged, decision, actor)
            if self.shadow is not None:  # in the lock: its index sees every earlier input too
                self.shadow.observe(
                    self.engine.pack,
                    staged,
                    analysis,
                    data,
                    item,
                    lambda a, **d: self.record_event(a, actor, **d),
                )
        if (case_id := case_to_notify(item.outcome, item.case_id)) is not None:
            self.notify_case(case_id)
        return item

    def _still_this_pack(self) -> None:
        """A process started before a cut-over (or rollback) would search a partition the index
        no longer fills, and enroll everyone as new: it stops instead (a file read, in the lock)."""
        from face_dedup.migration import recorded_active

        recorded = recorded_active(self.settings.data_dir, self.tenant)
        if recorded not in (None, self.model_pack):
            raise ConfigError(
                f"this registry was moved to model pack {recorded} while this process ran with "
                f"{self.model_pack}: restart it, then submit this input again (nothing was decided)"
            )

    # -- the same steps, one at a time (the serverless workflow runs each as a task) ---------

    def stage(self, data: bytes, ref: InputRef, actor: str = SYSTEM_ACTOR) -> StageResult:
        """Analyse an upload and park its template for the workflow. Rejections, and inputs
        already decided, are final here (`item` is set); otherwise the workflow continues
        with the key. Only ids travel through the workflow: the template stays in the store,
        so no biometric data lands in execution histories."""
        digest = content_digest(data)
        key = self.idempotency_key(ref, digest)
        done = self.store.get_import_item(key)
        if done is not None:
            return StageResult(key, done)
        analysis = self.analyze(data)
        if isinstance(analysis, Rejection):
            return StageResult(key, self._commit_rejection(key, ref, digest, analysis, actor))
        staged = self._staged(key, ref, digest, analysis)
        self._keep_photos(staged.record_id, data, analysis)
        self.store.stage(staged)
        return StageResult(key, None)

    def search_staged(self, key: str) -> StagedDecision:
        staged = self.store.get_staged(key)
        if staged is None:
            done = self.store.get_import_item(key)
            if done is None:
                raise NotFound(f"nothing staged or imported under {key}")
            return StagedDecision.of_item(done)
        return self.decide_staged(staged)

    def complete_staged(self, key: str, decision: StagedDecision, actor: str = SYSTEM_ACTOR) -> ImportItem:
        """Enroll or open a case as decided. Idempotent, and a retry finishes what an earlier
        attempt started: the parked template is dropped only after the commit, the index write
        and the concurrency re-check, so while it is there those steps are (re)done."""
        staged = self.store.get_staged(key)
        done = self.store.get_import_item(key)
        if done is None:
            if staged is None:
                raise NotFound(f"nothing staged under {key}")
            done, _ = self._commit(staged, decision, actor)
        elif staged is None:
            return done  # completed before: nothing left to do
        elif done.record_id and done.outcome in (Outcome.ENROLLED, Outcome.REVIEW, Outcome.DUPLICATE):
            # committed by an attempt that stopped before the index write (e.g. index unavailable)
            self.index.add([IndexEntry(done.record_id, self.tenant, self.model_pack, staged.embedding)])
        if done.outcome is Outcome.ENROLLED:
            self._recheck_concurrent(staged, actor)
        self.store.drop_staged(key)
        return self.store.get_import_item(key) or done

    def fail_staged(self, key: str, error: str, actor: str = SYSTEM_ACTOR) -> ImportItem:
        """The workflow's failure path: the input becomes a rejected item with the reason, and
        its parked template is dropped. Nothing is lost silently; nothing biometric lingers."""
        done = self.store.get_import_item(key)
        if done is not None:
            return done
        staged = self.store.get_staged(key)
        now = utc_now()
        item = ImportItem(
            key=key,
            tenant=self.tenant,
            source=staged.source if staged else "",
            application_id=staged.application_id if staged else None,
            content_sha256=staged.content_sha256 if staged else "",
            outcome=Outcome.REJECTED,
            created_at=now,
            reason=Reason.INTERNAL_ERROR.value,
            message=f"the de-duplication workflow failed: {error}"[:500],
        )
        event = self._event("import.failed", actor, now, key=key, error=error[:200])
        self.store.commit(EnrollmentCommit(item=item, audit=(event,)))
        self._observe(item, actor)
        if staged is not None:
            self.blobs.delete_prefix(record_prefix(self.tenant, staged.record_id))
            self.store.drop_staged(key)
        return self.store.get_import_item(key) or item

    def record_event(self, action: str, actor: str, **details: Any) -> None:
        """An audit entry for something that happened outside the use cases above."""
        self.store.append_audit(self._event(action, actor, utc_now(), **details))

    def _observe(self, item: ImportItem, actor: str) -> None:
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
                link=self.settings.review_link_base + case_id,
            )
        )

    # -- the pieces ---------------------------------------------------------------------------

    def _staged(self, key: str, ref: InputRef, digest: str, analysis: FaceTemplate) -> StagedInput:
        return StagedInput(
            key=key,
            record_id=stable_id("rec", key),
            tenant=self.tenant,
            model_pack=self.model_pack,
            source=ref.source,
            application_id=ref.application_id,
            content_sha256=digest,
            embedding=analysis.embedding,
            measures=_rounded(analysis.measures),
            quality={
                **_rounded(analysis.measures),
                "notes": list(analysis.notes),
                "format": analysis.image_format,
                "rotation_degrees": analysis.rotation_degrees,
            },
            created_at=utc_now(),
        )

    def _keep_photos(self, record_id: str, data: bytes, analysis: FaceTemplate) -> None:
        if self.settings.keep_photos:
            self.blobs.put(photo_key(self.tenant, record_id), data, "application/octet-stream")
            self.blobs.put(crop_key(self.tenant, record_id), encode_png(analysis.aligned_crop), "image/png")

    def decide_staged(self, staged: StagedInput) -> StagedDecision:
        """1:1 first when the application already has an enrolled face (verify threshold), then
        1:N de-duplication. A photo that does not match its own application's face is a case."""
        thresholds = self.thresholds()
        own = self._application_candidates(staged)
        decision = self.policy.verified_by(own)
        if decision is None:
            found, capped = self._search_above(staged, thresholds.review)
            decision = self.policy.decide(found, thresholds, capped=capped, own=own)
        info = self.policy.describe(thresholds) | decision.notes
        return StagedDecision(staged.key, decision.outcome, decision.candidates, info)

    def _candidates_above(self, staged: StagedInput, threshold: float) -> list[Candidate]:
        """Enrolled faces scoring at or above `threshold` against the staged one (not itself)."""
        return self._search_above(staged, threshold)[0]

    def _search_above(self, staged: StagedInput, threshold: float) -> tuple[list[Candidate], bool]:
        """As `_candidates_above`, with whether the index cut the list (more than
        max_candidates faces are at or above the threshold)."""
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
        return self._describe(hits[:limit], staged.embedding), capped

    def _application_candidates(self, staged: StagedInput) -> list[Candidate]:
        if not staged.application_id:
            return []
        records = self.store.find_application_records(
            tenant=self.tenant, application_id=staged.application_id, model_pack=self.model_pack
        )
        own = [
            Candidate(
                r.record_id,
                calibrated_score(float(np.dot(r.embedding, staged.embedding)), r.template_count),
                r.source,
                r.application_id,
            )
            for r in records
            if r.record_id != staged.record_id
        ]
        return sorted(own, key=lambda c: -c.score)

    def _commit_rejection(
        self, key: str, ref: InputRef, digest: str, analysis: Rejection, actor: str
    ) -> ImportItem:
        now = utc_now()
        item = ImportItem(
            key=key,
            tenant=self.tenant,
            source=ref.source,
            application_id=ref.application_id,
            content_sha256=digest,
            outcome=Outcome.REJECTED,
            created_at=now,
            reason=analysis.reason.value,
            message=analysis.message,
            measures=_rounded(analysis.measures),
        )
        event = self._event(
            "import.rejected",
            actor,
            now,
            application_id=ref.application_id,
            reason=analysis.reason.value,
            model_pack=self.model_pack,
        )
        self.store.commit(EnrollmentCommit(item=item, audit=(event,)))
        self._observe(item, actor)
        return self.store.get_import_item(key) or item

    def _commit(
        self, staged: StagedInput, decision: StagedDecision, actor: str
    ) -> tuple[ImportItem, Case | None]:
        if decision.outcome is Outcome.VERIFIED:
            return self._commit_verification(staged, decision, actor), None
        now = utc_now()
        status = {
            Outcome.ENROLLED: RecordStatus.ENROLLED,
            Outcome.REVIEW: RecordStatus.PENDING_REVIEW,
            Outcome.DUPLICATE: RecordStatus.LINKED_DUPLICATE,
        }[decision.outcome]
        linked_to = decision.candidates[0].record_id if decision.outcome is Outcome.DUPLICATE else None
        record = Record(
            record_id=staged.record_id,
            tenant=self.tenant,
            model_pack=self.model_pack,
            application_id=staged.application_id,
            source=staged.source,
            content_sha256=staged.content_sha256,
            status=status,
            created_at=now,
            embedding=staged.embedding,
            linked_to=linked_to,
            quality=staged.quality,
        )
        case = None
        if decision.candidates:
            case = Case(
                case_id=stable_id("case", staged.key),
                tenant=self.tenant,
                probe_record_id=staged.record_id,
                kind=decision.outcome,
                candidates=decision.candidates,
                status=CaseStatus.OPEN,
                created_at=now,
                thresholds=decision.thresholds,
            )
        item = self._staged_item(staged, decision, now, staged.record_id, case.case_id if case else None)
        audit = [
            self._event(
                "import." + decision.outcome.value,
                actor,
                now,
                record_id=staged.record_id,
                application_id=staged.application_id,
                thresholds=decision.thresholds,
                candidates=[
                    {"record_id": c.record_id, "score": round(c.score, 4)} for c in decision.candidates
                ],
            )
        ]
        if case is not None:
            audit.append(
                self._event(
                    "case.opened",
                    actor,
                    now,
                    case_id=case.case_id,
                    kind=case.kind.value,
                    probe_record_id=staged.record_id,
                )
            )
        self.store.commit(EnrollmentCommit(item=item, record=record, case=case, audit=tuple(audit)))
        self._observe(item, actor)
        self.index.add([IndexEntry(staged.record_id, self.tenant, self.model_pack, staged.embedding)])
        return item, case

    def _staged_item(
        self, staged: StagedInput, decision: StagedDecision, now: str, record_id: str, case_id: str | None
    ) -> ImportItem:
        return ImportItem(
            key=staged.key,
            tenant=self.tenant,
            source=staged.source,
            application_id=staged.application_id,
            content_sha256=staged.content_sha256,
            outcome=decision.outcome,
            created_at=now,
            record_id=record_id,
            case_id=case_id,
            candidates=decision.candidates,
            measures=staged.measures,
        )

    def _commit_verification(self, staged: StagedInput, decision: StagedDecision, actor: str) -> ImportItem:
        """Nothing new is enrolled, and the photo is not kept: only the outcome and its audit."""
        now = utc_now()
        matched = decision.candidates[0]
        item = self._staged_item(staged, decision, now, matched.record_id, None)
        event = self._event(
            "import.verified",
            actor,
            now,
            record_id=matched.record_id,
            application_id=staged.application_id,
            score=round(matched.score, 4),
            thresholds=decision.thresholds,
        )
        self.store.commit(EnrollmentCommit(item=item, audit=(event,)))
        self._observe(item, actor)
        self.blobs.delete_prefix(record_prefix(self.tenant, staged.record_id))
        return item

    def _recheck_concurrent(self, staged: StagedInput, actor: str) -> Case | None:
        """Race-free enrollment. Two uploads of one new person, decided at the same moment,
        both find nothing and both enroll. After its own index write each enrollment searches
        again: anything above the review threshold now was enrolled concurrently. At least one
        of the two sees the other (each searches after its own write), and both open the same
        case (its id derives from the pair, written only if absent), with the later record
        of the pair as the probe. So the pair is always reviewed, and only once."""
        thresholds = self.thresholds()
        candidates = [
            c
            for c in self._candidates_above(staged, thresholds.review)
            # a pair officers already found to be different people is not raised again
            if not self.store.are_distinct(
                tenant=self.tenant, record_a=staged.record_id, record_b=c.record_id
            )
        ]
        if not candidates:
            return None
        best = max(candidates, key=lambda c: c.score)
        records = self.store.describe_records([best.record_id, staged.record_id])
        mine, theirs = records.get(staged.record_id), records.get(best.record_id)
        if mine is None or theirs is None:
            return None
        probe, other = sorted((mine, theirs), key=lambda r: (r.created_at, r.record_id))[::-1]
        pair_case = Case(
            case_id=stable_id("case", "concurrent", *sorted((mine.record_id, theirs.record_id))),
            tenant=self.tenant,
            probe_record_id=probe.record_id,
            kind=Outcome.REVIEW,
            candidates=(Candidate(other.record_id, best.score, other.source, other.application_id),),
            status=CaseStatus.OPEN,
            created_at=utc_now(),
            thresholds={**self.policy.describe(thresholds), "reason": "enrolled concurrently"},
        )
        event = self._event(
            "case.opened",
            actor,
            pair_case.created_at,
            case_id=pair_case.case_id,
            kind="review",
            probe_record_id=probe.record_id,
            reason="enrolled concurrently",
        )
        if self.store.open_case(pair_case, RecordStatus.PENDING_REVIEW, (event,)):
            if (case_id := case_to_notify(pair_case.kind, pair_case.case_id)) is not None:
                self.notify_case(case_id)
            return pair_case
        return None

    def _describe(self, hits: list[Hit], probe: NDArray[np.float32]) -> list[Candidate]:
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

    # -- 1:1 and 1:N queries --------------------------------------------------------------

    def verify(self, first: bytes, second: bytes, actor: str = SYSTEM_ACTOR) -> VerifyResult:
        threshold = self.policy.verify_threshold
        results = [self.analyze(first), self.analyze(second)]
        rejected = tuple(
            (name, r.reason.value, r.message)
            for name, r in zip(("first", "second"), results, strict=True)
            if isinstance(r, Rejection)
        )
        score = None
        a, b = results
        if isinstance(a, FaceTemplate) and isinstance(b, FaceTemplate):
            score = float(np.dot(a.embedding, b.embedding))
        match = score is not None and score >= threshold
        self.store.append_audit(
            self._event(
                "verify",
                actor,
                utc_now(),
                match=match,
                score=None if score is None else round(score, 4),
                threshold=round(threshold, 4),
                fmr=self.policy.verify_fmr,
                model_pack=self.model_pack,
                rejected=[r[1] for r in rejected],
            )
        )
        return VerifyResult(score, threshold, self.policy.verify_fmr, match, self.model_pack, rejected)

    def search(self, data: bytes, top_k: int, actor: str = SYSTEM_ACTOR) -> SearchResult:
        thresholds = self.thresholds()
        analysis = self.analyze(data)
        if isinstance(analysis, Rejection):
            return SearchResult(
                (), thresholds.review, thresholds.duplicate, thresholds.gallery_size, analysis
            )
        hits = self.index.search(analysis.embedding, tenant=self.tenant, model_pack=self.model_pack, k=top_k)
        candidates = tuple(sorted(self._describe(hits, analysis.embedding), key=lambda c: -c.score))
        self.store.append_audit(
            self._event(
                "search",
                actor,
                utc_now(),
                top_k=top_k,
                model_pack=self.model_pack,
                review_threshold=round(thresholds.review, 4),
                results=[{"record_id": c.record_id, "score": round(c.score, 4)} for c in candidates],
            )
        )
        return SearchResult(candidates, thresholds.review, thresholds.duplicate, thresholds.gallery_size)

    # -- cases ----------------------------------------------------------------------------

    def _open_case_for(self, case_id: str) -> Case:
        case = self.store.get_case(case_id)
        if case is None or case.tenant != self.tenant:  # another tenant's case does not exist here
            raise NotFound(f"no case {case_id}")
        return case

    def _transition(
        self,
        case: Case,
        actor: Actor,
        action: str,
        comment: str,
        changes: dict[str, Any],
        *,
        probe_status: RecordStatus | None = None,
        probe_linked_to: str | None = None,
        remember_distinct: bool = False,
    ) -> Case:
        now = utc_now()
        entry = {
            "at": now,
            "actor": actor.name,
            "role": actor.role.value,
            "action": action,
            "comment": comment,
        }
        entry |= {
            k: v for k, v in changes.items() if k in ("decision", "matched_record_id") and v is not None
        }
        updated = replace(case, **changes, history=(*case.history, entry))
        audit = self._event(
            f"case.{action}",
            actor.name,
            now,
            case_id=case.case_id,
            role=actor.role.value,
            probe_record_id=case.probe_record_id,
            status=updated.status.value,
            comment=comment,
            **{
                k: (v.value if hasattr(v, "value") else v)
                for k, v in changes.items()
                if k in ("decision", "matched_record_id")
            },
        )
        return self.store.save_case_transition(
            updated,
            probe_status=probe_status,
            probe_linked_to=probe_linked_to,
            remember_distinct=remember_distinct,
            audit=audit,
        )

    def claim_case(self, case_id: str, actor: Actor) -> Case:
        """An officer takes a case, so two officers do not review the same one at once."""
        _require_role(actor, Role.OFFICER, Role.SUPERVISOR)
        case = self._open_case_for(case_id)
        if case.status is not CaseStatus.OPEN:
            raise InvalidState(f"case {case_id} is {case.status.value}: nothing to claim")
        if case.escalated and actor.role is not Role.SUPERVISOR:
            raise PermissionDenied(f"case {case_id} is escalated: a supervisor reviews it")
        holder = claim_holder(case)  # a lapsed claim holds nothing
        if holder not in (None, actor.name):
            raise InvalidState(f"case {case_id} is claimed by {holder}")
        return self._transition(case, actor, "claimed", "", {"claimed_by": actor.name})

    def release_case(self, case_id: str, actor: Actor) -> Case:
        """Give a claimed case back to the queue: its holder, or any supervisor."""
        _require_role(actor, Role.OFFICER, Role.SUPERVISOR)
        case = self._open_case_for(case_id)
        if case.claimed_by is None:
            raise InvalidState(f"case {case_id} is not claimed")
        if actor.role is not Role.SUPERVISOR and claim_holder(case) not in (None, actor.name):
            raise PermissionDenied(
                f"case {case_id} is claimed by {case.claimed_by}: they or a supervisor release it"
            )
        return self._transition(case, actor, "released", "", {"claimed_by": None})

    def undo_decision(self, case_id: str, actor: Actor, now: datetime | None = None) -> Case:
        """The person who decided takes it back within UNDO_MINUTES, while it is not final: "same
        person" before a supervisor confirms, "cannot tell" before a supervisor claims the case.
        "Different people" is final at once (it enrolls the application); the console says so
        before it is sent. The case returns to the queue claimed by the same person."""
        _require_role(actor, Role.OFFICER, Role.SUPERVISOR)
        case = self._open_case_for(case_id)
        if case.decided_by != actor.name or case.decided_at is None:
            raise PermissionDenied("only the person who decided can undo the decision")
        elapsed = (now or datetime.now(UTC)) - datetime.fromisoformat(case.decided_at)
        if elapsed.total_seconds() > UNDO_MINUTES * 60:
            raise InvalidState(f"the {UNDO_MINUTES}-minute undo window for case {case_id} has passed")
        pending_same = case.status is CaseStatus.AWAITING_CONFIRMATION
        pending_unsure = (
            case.status is CaseStatus.OPEN
            and case.escalated
            and case.decision is CaseDecision.CANNOT_TELL
            and case.claimed_by is None
        )
        if not (pending_same or pending_unsure):
            raise InvalidState(f"case {case_id}'s decision is final: nothing to undo")
        changes = {
            "status": CaseStatus.OPEN,
            "escalated": False,
            "decision": None,
            "decided_by": None,
            "decided_at": None,
            "matched_record_id": None,
            "claimed_by": actor.name,
        }
        return self._transition(case, actor, "undone", "", changes)

    def decide_case(
        self,
        case_id: str,
        decision: CaseDecision,
        actor: Actor,
        comment: str,
        matched_record_id: str | None = None,
    ) -> Case:
        """The first person's decision. "Same person" waits for a second person to confirm (the
        two-person rule); "different people" enrolls the probe and remembers the pairs;
        "cannot tell" escalates the case to a supervisor."""
        _require_role(actor, Role.OFFICER, Role.SUPERVISOR)
        case = self._open_case_for(case_id)
        if case.status is not CaseStatus.OPEN:
            raise InvalidState(f"case {case_id} is already {case.status.value} ({case.decision})")
        if case.escalated and actor.role is not Role.SUPERVISOR:
            raise PermissionDenied(f"case {case_id} is escalated: a supervisor decides it")
        holder = claim_holder(case)  # a lapsed claim holds nothing
        if holder not in (None, actor.name):
            raise InvalidState(f"case {case_id} is claimed by {holder}")
        now = utc_now()
        common = {"decided_by": actor.name, "decided_at": now, "comment": comment, "decision": decision}
        if decision is CaseDecision.SAME_PERSON:
            candidate_ids = [c.record_id for c in case.candidates]
            matched = matched_record_id or candidate_ids[0]
            if matched not in candidate_ids:
                raise ValueError(f"{matched} is not a candidate of case {case_id}")
            return self._transition(
                case,
                actor,
                "decided",
                comment,
                {**common, "matched_record_id": matched, "status": CaseStatus.AWAITING_CONFIRMATION},
            )
        if matched_record_id:
            raise ValueError(f"a {decision.value} decision names no matched record")
        if decision is CaseDecision.CANNOT_TELL:
            return self._transition(
                case,
                actor,
                "escalated",
                comment,
                {**common, "escalated": True, "claimed_by": None, "status": CaseStatus.OPEN},
            )
        return self._transition(
            case,
            actor,
            "decided",
            comment,
            {**common, "matched_record_id": None, "status": CaseStatus.CLOSED},
            probe_status=RecordStatus.ENROLLED,
            probe_linked_to=None,
            remember_distinct=True,
        )

    def confirm_case(self, case_id: str, actor: Actor, confirm: bool, comment: str) -> Case:
        """The second person: a supervisor who did not make the decision confirms it (the probe
        becomes a confirmed duplicate) or overturns it (the case reopens, escalated)."""
        _require_role(actor, Role.SUPERVISOR)
        case = self._open_case_for(case_id)
        if case.status is not CaseStatus.AWAITING_CONFIRMATION:
            raise InvalidState(f"case {case_id} is {case.status.value}: nothing to confirm")
        if actor.name == case.decided_by:
            raise PermissionDenied("two-person rule: the person who decided cannot also confirm")
        if confirm:
            return self._transition(
                case,
                actor,
                "confirmed",
                comment,
                {"status": CaseStatus.CLOSED, "confirmed_by": actor.name, "confirmed_at": utc_now()},
                probe_status=RecordStatus.CONFIRMED_DUPLICATE,
                probe_linked_to=case.matched_record_id,
            )
        return self._transition(
            case,
            actor,
            "overturned",
            comment,
            {
                "status": CaseStatus.OPEN,
                "escalated": True,
                "claimed_by": None,
                "decision": None,
                "decided_by": None,
                "decided_at": None,
                "matched_record_id": None,
            },
        )

    def case_sheet(self, case: Case, actor: str) -> bytes:
        """The case as one PNG for an officer. Showing faces is audited."""
        from face_dedup.review_sheet import render_case_sheet

        ids = [case.probe_record_id, *(c.record_id for c in case.candidates)]
        sheet = render_case_sheet(case, self.store.describe_records(ids), self.blobs, self.tail)
        self.store.append_audit(self._event("case.viewed", actor, utc_now(), case_id=case.case_id))
        return sheet

    # -- erasure --------------------------------------------------------------------------

    def erase(self, record_id: str, actor: str, reason: str) -> dict[str, Any]:
        with self.registry_lock():
            record = self.store.get_record(record_id)
            if record is None or record.tenant != self.tenant:
                raise NotFound(f"no record {record_id} (never enrolled, or already erased)")
            needles, copies = self._erased_bytes(record)
            # Index and photos first: if this stops midway the record still exists and erase can
            # be run again; the store's row goes last, with the receipt.
            removed_vectors = self.index.delete([record_id])
            if self.shadow is not None:
                self.shadow.forget(record_id)
            removed_blobs = self.blobs.delete_prefix(record_prefix(self.tenant, record_id))
            erased_at = utc_now()
            backups = self._backups_holding(erased_at)
            receipt = self._event(
                "record.erased",
                actor,
                erased_at,
                record_id=record_id,
                application_id=record.application_id,
                reason=reason,
                removed={"vectors": removed_vectors, "blobs": removed_blobs},
                backups=backups,
            )
            counts = self.store.erase_record(record_id, receipt)
        result = {"record_id": record_id, "vectors": removed_vectors, "blobs": removed_blobs, **counts}
        result["backups"] = backups
        if copies:
            # The same photo imported under other applications: their copies are theirs.
            result["identical_copies_in_other_records"] = copies
        if self.erasure_check is not None:
            left = self.erasure_check(record_id, needles)
            if left:
                raise ErasureIncomplete(
                    f"record {record_id} was erased, but {'; '.join(left)}: stop the other processes "
                    "that have this registry open, then run `face-dedup doctor` (it flushes the logs)"
                )
            result["verified"] = sorted(needles)
        return result

    def _backups_holding(self, erased_at: str) -> list[dict[str, str]]:
        """What still holds the erased data, and until when: each configured backup (cloud) ages
        out `days` after the erasure. None configured: face-dedup made no copy (copies of the
        data directory made by other means are the operator's to erase)."""
        at = datetime.fromisoformat(erased_at)
        backups = self.settings.backups()
        if not backups:
            return [{"backup": "none kept by face-dedup", "until": erased_at}]
        return [
            {"backup": name, "until": (at + timedelta(days=days)).isoformat(timespec="seconds")}
            for name, days in sorted(backups.items())
        ]

    def _erased_bytes(self, record: Record) -> tuple[dict[str, bytes], int]:
        """What must be gone from every file after the erasure: the template, the photo and the
        crop, except bytes that other records hold too (an identical photo under another
        application keeps its own copy until it is erased)."""
        template = np.asarray(record.embedding, dtype=np.float32).tobytes()
        needles = {"template": template}
        for name, key in (
            ("photo", photo_key(self.tenant, record.record_id)),
            ("crop", crop_key(self.tenant, record.record_id)),
        ):
            with suppress(NotFound):  # not kept (keep_photos off) or already gone
                needles[name] = self.blobs.get(key)
        hits = self.index.search(
            record.embedding, tenant=self.tenant, model_pack=record.model_pack, k=50, min_score=0.9999
        )
        others = self.store.describe_records(h.record_id for h in hits if h.record_id != record.record_id)
        same_photo = [o for o in others.values() if o.content_sha256 == record.content_sha256]
        if same_photo:
            needles.pop("photo", None)
            needles.pop("crop", None)
        if any(np.asarray(o.embedding, dtype=np.float32).tobytes() == template for o in others.values()):
            needles.pop("template", None)
        if record.template_count > 1:
            needles |= self._erased_template_bytes(record)
        return needles, len(same_photo)

    def _erased_template_bytes(self, record: Record) -> dict[str, bytes]:
        """A record of several templates (record_templates.py): each template's vector (its
        `embedding` is their centroid) and each added photo and crop (under the record's prefix,
        deleted with it). The enrollment template is left out when another record holds the
        same vector (the same photo enrolled twice), as above."""
        needles: dict[str, bytes] = {}
        for t in self.store.record_templates(record.record_id):
            vector = np.asarray(t.embedding, dtype=np.float32)
            if t.number == 1:
                twins = self.index.search(
                    vector, tenant=self.tenant, model_pack=record.model_pack, k=2, min_score=0.9999
                )
                if any(h.record_id != record.record_id for h in twins):
                    continue
            needles[f"template {t.number}"] = vector.tobytes()
            for name, key in (
                ("photo", template_photo_key(self.tenant, record.record_id, t.number)),
                ("crop", template_crop_key(self.tenant, record.record_id, t.number)),
            ):
                if t.number > 1:
                    with suppress(NotFound):
                        needles[f"{name} of template {t.number}"] = self.blobs.get(key)
        return needles

    # -- consistency ----------------------------------------------------------------------

    def reconcile(self) -> dict[str, int]:
        """Make the index hold exactly the store's templates of this tenant and pack. Cheap when
        they agree (a count each); a full comparison only after an interrupted write."""
        with self.registry_lock():
            return self._reconcile()

    def _reconcile(self) -> dict[str, int]:
        stored_count = self.store.count_templates(tenant=self.tenant, model_pack=self.model_pack)
        if stored_count == self.index.count(tenant=self.tenant, model_pack=self.model_pack):
            return {"added": 0, "removed": 0}
        stored = {
            r.record_id: r
            for r in self.store.iter_templates(tenant=self.tenant)
            if r.model_pack == self.model_pack
        }
        indexed = self.index.record_ids(tenant=self.tenant, model_pack=self.model_pack)
        missing = [r for rid, r in stored.items() if rid not in indexed]
        damaged = {r.record_id: problem for r in missing if (problem := template_problem(r.embedding))}
        if damaged:  # rotted bytes in the store: never indexed, never fatal (`doctor` reports them)
            log.error("stored templates damaged, not searchable: %s; run `face-dedup doctor`", damaged)
            missing = [r for r in missing if r.record_id not in damaged]
        orphans = [rid for rid in indexed if rid not in stored]
        if missing:
            self.index.add([IndexEntry(r.record_id, r.tenant, r.model_pack, r.embedding) for r in missing])
        if orphans:
            self.index.delete(orphans)
        if missing or orphans:
            log.warning("index reconciled: %d added, %d orphans removed", len(missing), len(orphans))
        return {"added": len(missing), "removed": len(orphans)}

    def _event(self, action: str, actor: str, at: str, **details: Any) -> AuditEvent:
        return AuditEvent(action=action, actor=actor, tenant=self.tenant, at=at, details=details)


def _require_role(actor: Actor, *roles: Role) -> None:
    if actor.role not in roles:
        allowed = " or ".join(r.value for r in roles)
        raise PermissionDenied(f"{actor.name} is {actor.role.value}: only {allowed} may do this")


def _rounded(measures: dict[str, float]) -> dict[str, float]:
    return {k: round(float(v), 4) for k, v in measures.items()}

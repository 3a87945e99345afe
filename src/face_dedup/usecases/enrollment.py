"""Enrollment: one input -> analysed -> decided (DecisionPolicy) -> written. In one call
(`enroll`, `register`: the CLI, the importer, the API) or as the serverless workflow's steps
(`stage`, `search_staged`, `complete_staged`, `fail_staged`), with the same writes and the same
idempotency: re-running an input finds its import item and returns the stored outcome."""

from __future__ import annotations

import numpy as np

from face_dedup.analysis import FaceTemplate, Rejection
from face_dedup.blob_keys import record_prefix
from face_dedup.domain import Candidate, Case, ImportItem, Outcome, StagedInput, stable_id, utc_now
from face_dedup.errors import NotFound, Reason
from face_dedup.outcomes import case_to_notify
from face_dedup.ports import EnrollmentCommit, IndexEntry
from face_dedup.record_templates import calibrated_score
from face_dedup.usecases.enrollment_writes import EnrollmentWriter
from face_dedup.usecases.inputs import InputRef, StagedDecision, StageResult, content_digest
from face_dedup.usecases.registry import SYSTEM_ACTOR, Registry

# Outcomes that put the input's template in the index.
_INDEXED = (Outcome.ENROLLED, Outcome.REVIEW, Outcome.DUPLICATE)


class Enrollment:
    def __init__(self, registry: Registry) -> None:
        self.r = registry
        self.writes = EnrollmentWriter(registry)

    def idempotency_key(self, ref: InputRef, digest: str) -> str:
        return stable_id("imp", self.r.tenant, self.r.model_pack, ref.submission_identity, digest)

    def analyze(self, data: bytes) -> FaceTemplate | Rejection:
        """Pure and thread-safe: decode, detect, quality, align, embed."""
        return self.r.analyzer().process(data)

    def enroll(self, data: bytes, ref: InputRef, actor: str = SYSTEM_ACTOR) -> ImportItem:
        digest = content_digest(data)
        done = self.r.store.get_import_item(self.idempotency_key(ref, digest))
        if done is not None:
            return done
        return self.register(ref, digest, self.analyze(data), data, actor)

    def enroll_without_search(self, data: bytes, ref: InputRef, actor: str = SYSTEM_ACTOR) -> ImportItem:
        """Enroll one photo as it is, searching nothing: for callers that ask for de-duplication
        separately (MOSIP's ABIS insert; its identify comes later). Same writes, same audit and
        same idempotency as `enroll`; rejections are kept as for any input."""
        digest = content_digest(data)
        key = self.idempotency_key(ref, digest)
        done = self.r.store.get_import_item(key)
        if done is not None:
            return done
        analysis = self.analyze(data)
        if isinstance(analysis, Rejection):
            return self.writes.rejection(key, ref, digest, analysis, actor)
        staged = self.writes.staged(key, ref, digest, analysis)
        self.r.still_this_pack()
        self.writes.keep_photos(staged.record_id, data, analysis)
        info = {"model_pack": self.r.model_pack, "calibration": self.r.policy.tail.source, "searched": False}
        item, _ = self.writes.commit(staged, StagedDecision(key, Outcome.ENROLLED, (), info), actor)
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
        r = self.r
        key = self.idempotency_key(ref, digest)
        done = r.store.get_import_item(key)
        if done is not None:
            return done
        if isinstance(analysis, Rejection):
            return self.writes.rejection(key, ref, digest, analysis, actor)
        staged = self.writes.staged(key, ref, digest, analysis)
        if data is not None:
            self.writes.keep_photos(staged.record_id, data, analysis)
        with r.registry_lock():  # nothing enrolls between this search and this commit
            done = r.store.get_import_item(key)
            if done is not None:  # another process imported the same input meanwhile
                return done
            r.still_this_pack()
            decision = self.decide_staged(staged)
            item, _ = self.writes.commit(staged, decision, actor)
            if r.shadow is not None:  # in the lock: its index sees every earlier input too
                r.shadow.observe(
                    r.analyzer().pack,
                    staged,
                    analysis,
                    data,
                    item,
                    lambda a, **d: r.record_event(a, actor, **d),
                )
        if (case_id := case_to_notify(item.outcome, item.case_id)) is not None:
            r.notify_case(case_id)
        return item

    def recheck_registered(
        self, ref: InputRef, digest: str, analysis: FaceTemplate, actor: str = SYSTEM_ACTOR
    ) -> Case | None:
        """complete_staged's concurrency re-check for an input `register` enrolled where no
        registry lock keeps other enrollers out (the cloud bulk job's decide step): a face
        enrolled meanwhile, found now that this one is in the index, opens the pair's case."""
        staged = self.writes.staged(self.idempotency_key(ref, digest), ref, digest, analysis)
        return self.writes.recheck_concurrent(staged, actor)

    def decide_staged(self, staged: StagedInput) -> StagedDecision:
        """The policy's decision for a staged input: 1:1 first when the application already has
        an enrolled face, then 1:N (the search is the only I/O; the rules are DecisionPolicy's)."""
        r = self.r
        thresholds = r.thresholds()
        own = self._application_candidates(staged)
        decision = r.policy.verified_by(own)
        if decision is None:
            found, capped = r.search_above(staged, thresholds.review)
            decision = r.policy.decide(found, thresholds, capped=capped, own=own)
        info = r.policy.describe(thresholds) | decision.notes
        return StagedDecision(staged.key, decision.outcome, decision.candidates, info)

    def _application_candidates(self, staged: StagedInput) -> list[Candidate]:
        """The application's own enrolled faces, scored against this one (for verify-first)."""
        if not staged.application_id:
            return []
        r = self.r
        records = r.store.find_application_records(
            tenant=r.tenant, application_id=staged.application_id, model_pack=r.model_pack
        )
        own = [
            Candidate(
                x.record_id,
                calibrated_score(float(np.dot(x.embedding, staged.embedding)), x.template_count),
                x.source,
                x.application_id,
            )
            for x in records
            if x.record_id != staged.record_id
        ]
        return sorted(own, key=lambda c: -c.score)

    # -- the same steps, one at a time (the serverless workflow runs each as a task) ---------

    def stage(self, data: bytes, ref: InputRef, actor: str = SYSTEM_ACTOR) -> StageResult:
        """Analyse an upload and park its template for the workflow. Rejections, and inputs
        already decided, are final here (`item` is set); otherwise the workflow continues
        with the key. Only ids travel through the workflow: the template stays in the store,
        so no biometric data lands in execution histories."""
        digest = content_digest(data)
        key = self.idempotency_key(ref, digest)
        done = self.r.store.get_import_item(key)
        if done is not None:
            return StageResult(key, done)
        analysis = self.analyze(data)
        if isinstance(analysis, Rejection):
            return StageResult(key, self.writes.rejection(key, ref, digest, analysis, actor))
        staged = self.writes.staged(key, ref, digest, analysis)
        self.writes.keep_photos(staged.record_id, data, analysis)
        self.r.store.stage(staged)
        return StageResult(key, None)

    def search_staged(self, key: str) -> StagedDecision:
        staged = self.r.store.get_staged(key)
        if staged is None:
            done = self.r.store.get_import_item(key)
            if done is None:
                raise NotFound(f"nothing staged or imported under {key}")
            return StagedDecision.of_item(done)
        return self.decide_staged(staged)

    def complete_staged(self, key: str, decision: StagedDecision, actor: str = SYSTEM_ACTOR) -> ImportItem:
        """Enroll or open a case as decided. Idempotent, and a retry finishes what an earlier
        attempt started: the parked template is dropped only after the commit, the index write
        and the concurrency re-check, so while it is there those steps are (re)done."""
        r = self.r
        staged = r.store.get_staged(key)
        done = r.store.get_import_item(key)
        if done is None:
            if staged is None:
                raise NotFound(f"nothing staged under {key}")
            done, _ = self.writes.commit(staged, decision, actor)
        elif staged is None:
            return done  # completed before: nothing left to do
        elif done.record_id and done.outcome in _INDEXED:
            # committed by an attempt that stopped before the index write (e.g. index unavailable)
            r.index.add([IndexEntry(done.record_id, r.tenant, r.model_pack, staged.embedding)])
        if done.outcome is Outcome.ENROLLED:
            self.writes.recheck_concurrent(staged, actor)
        r.store.drop_staged(key)
        return r.store.get_import_item(key) or done

    def fail_staged(self, key: str, error: str, actor: str = SYSTEM_ACTOR) -> ImportItem:
        """The workflow's failure path: the input becomes a rejected item with the reason, and
        its parked template is dropped. Nothing is lost silently; nothing biometric lingers."""
        r = self.r
        done = r.store.get_import_item(key)
        if done is not None:
            return done
        staged = r.store.get_staged(key)
        now = utc_now()
        item = ImportItem(
            key=key,
            tenant=r.tenant,
            source=staged.source if staged else "",
            application_id=staged.application_id if staged else None,
            content_sha256=staged.content_sha256 if staged else "",
            outcome=Outcome.REJECTED,
            created_at=now,
            reason=Reason.INTERNAL_ERROR.value,
            message=f"the de-duplication workflow failed: {error}"[:500],
        )
        event = r.event("import.failed", actor, now, key=key, error=error[:200])
        r.store.commit(EnrollmentCommit(item=item, audit=(event,)))
        r.observe(item, actor)
        if staged is not None:
            r.blobs.delete_prefix(record_prefix(r.tenant, staged.record_id))
            r.store.drop_staged(key)
        return r.store.get_import_item(key) or item

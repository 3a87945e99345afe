"""Enrollment's writes, in the order that makes a crash harmless: photos to the blob store
(deterministic keys), then one atomic store commit (record, case, import item, audit), then the
index; and the re-check that catches two enrollments of one person decided at the same moment."""

from __future__ import annotations

from typing import Any

from face_dedup.analysis import FaceTemplate, Rejection
from face_dedup.blob_keys import crop_key, photo_key, record_prefix
from face_dedup.domain import (
    Candidate,
    Case,
    CaseStatus,
    ImportItem,
    Outcome,
    Record,
    RecordStatus,
    StagedInput,
    stable_id,
    utc_now,
)
from face_dedup.outcomes import case_to_notify
from face_dedup.ports import EnrollmentCommit, IndexEntry
from face_dedup.usecases.inputs import InputRef, StagedDecision, rounded
from face_dedup.usecases.registry import Registry

_RECORD_STATUS = {
    Outcome.ENROLLED: RecordStatus.ENROLLED,
    Outcome.REVIEW: RecordStatus.PENDING_REVIEW,
    Outcome.DUPLICATE: RecordStatus.LINKED_DUPLICATE,
}


class EnrollmentWriter:
    def __init__(self, registry: Registry) -> None:
        self.r = registry

    def staged(self, key: str, ref: InputRef, digest: str, analysis: FaceTemplate) -> StagedInput:
        r = self.r
        return StagedInput(
            key=key,
            record_id=stable_id("rec", key),
            tenant=r.tenant,
            model_pack=r.model_pack,
            source=ref.source,
            application_id=ref.application_id,
            content_sha256=digest,
            embedding=analysis.embedding,
            measures=rounded(analysis.measures),
            quality={
                **rounded(analysis.measures),
                "notes": list(analysis.notes),
                "format": analysis.image_format,
                "rotation_degrees": analysis.rotation_degrees,
            },
            created_at=utc_now(),
        )

    def keep_photos(self, record_id: str, data: bytes, analysis: FaceTemplate) -> None:
        r = self.r
        if r.config.keep_photos:
            r.blobs.put(photo_key(r.tenant, record_id), data, "application/octet-stream")
            r.blobs.put(crop_key(r.tenant, record_id), r.encode_crop(analysis.aligned_crop), "image/png")

    def rejection(self, key: str, ref: InputRef, digest: str, analysis: Rejection, actor: str) -> ImportItem:
        r = self.r
        now = utc_now()
        item = ImportItem(
            key=key,
            tenant=r.tenant,
            source=ref.source,
            application_id=ref.application_id,
            content_sha256=digest,
            outcome=Outcome.REJECTED,
            created_at=now,
            reason=analysis.reason.value,
            message=analysis.message,
            measures=rounded(analysis.measures),
        )
        event = r.event(
            "import.rejected",
            actor,
            now,
            application_id=ref.application_id,
            reason=analysis.reason.value,
            model_pack=r.model_pack,
        )
        r.store.commit(EnrollmentCommit(item=item, audit=(event,)))
        r.observe(item, actor)
        return r.store.get_import_item(key) or item

    def commit(
        self, staged: StagedInput, decision: StagedDecision, actor: str
    ) -> tuple[ImportItem, Case | None]:
        """The decided input, in one store transaction, then in the index."""
        if decision.outcome is Outcome.VERIFIED:
            return self._verification(staged, decision, actor), None
        r = self.r
        now = utc_now()
        linked_to = decision.candidates[0].record_id if decision.outcome is Outcome.DUPLICATE else None
        record = Record(
            record_id=staged.record_id,
            tenant=r.tenant,
            model_pack=r.model_pack,
            application_id=staged.application_id,
            source=staged.source,
            content_sha256=staged.content_sha256,
            status=_RECORD_STATUS[decision.outcome],
            created_at=now,
            embedding=staged.embedding,
            linked_to=linked_to,
            quality=staged.quality,
        )
        case = None
        if decision.candidates:
            case = Case(
                case_id=stable_id("case", staged.key),
                tenant=r.tenant,
                probe_record_id=staged.record_id,
                kind=decision.outcome,
                candidates=decision.candidates,
                status=CaseStatus.OPEN,
                created_at=now,
                thresholds=decision.thresholds,
            )
        item = self._item(staged, decision, now, staged.record_id, case.case_id if case else None)
        scored = [{"record_id": c.record_id, "score": round(c.score, 4)} for c in decision.candidates]
        audit = [
            r.event(
                "import." + decision.outcome.value,
                actor,
                now,
                record_id=staged.record_id,
                application_id=staged.application_id,
                thresholds=decision.thresholds,
                candidates=scored,
            )
        ]
        if case is not None:
            audit.append(
                r.event(
                    "case.opened",
                    actor,
                    now,
                    case_id=case.case_id,
                    kind=case.kind.value,
                    probe_record_id=staged.record_id,
                )
            )
        r.store.commit(EnrollmentCommit(item=item, record=record, case=case, audit=tuple(audit)))
        r.observe(item, actor)
        r.index.add([IndexEntry(staged.record_id, r.tenant, r.model_pack, staged.embedding)])
        return item, case

    def _item(
        self, staged: StagedInput, decision: StagedDecision, now: str, record_id: str, case_id: str | None
    ) -> ImportItem:
        return ImportItem(
            key=staged.key,
            tenant=self.r.tenant,
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

    def _verification(self, staged: StagedInput, decision: StagedDecision, actor: str) -> ImportItem:
        """Nothing new is enrolled, and the photo is not kept: only the outcome and its audit."""
        r = self.r
        now = utc_now()
        matched = decision.candidates[0]
        item = self._item(staged, decision, now, matched.record_id, None)
        event = r.event(
            "import.verified",
            actor,
            now,
            record_id=matched.record_id,
            application_id=staged.application_id,
            score=round(matched.score, 4),
            thresholds=decision.thresholds,
        )
        r.store.commit(EnrollmentCommit(item=item, audit=(event,)))
        r.observe(item, actor)
        r.blobs.delete_prefix(record_prefix(r.tenant, staged.record_id))
        return item

    def recheck_concurrent(self, staged: StagedInput, actor: str) -> Case | None:
        """Race-free enrollment. Two uploads of one new person, decided at the same moment,
        both find nothing and both enroll. After its own index write each enrollment searches
        again: anything above the review threshold now was enrolled concurrently. At least one
        of the two sees the other (each searches after its own write), and both open the same
        case (its id derives from the pair, written only if absent), with the later record
        of the pair as the probe. So the pair is always reviewed, and only once."""
        r = self.r
        thresholds = r.thresholds()
        candidates = [
            c
            for c in r.search_above(staged, thresholds.review)[0]
            # a pair officers already found to be different people is not raised again
            if not r.store.are_distinct(tenant=r.tenant, record_a=staged.record_id, record_b=c.record_id)
        ]
        if not candidates:
            return None
        best = max(candidates, key=lambda c: c.score)
        records = r.store.describe_records([best.record_id, staged.record_id])
        mine, theirs = records.get(staged.record_id), records.get(best.record_id)
        if mine is None or theirs is None:
            return None
        probe, other = sorted((mine, theirs), key=lambda x: (x.created_at, x.record_id))[::-1]
        reason: dict[str, Any] = {"reason": "enrolled concurrently"}
        pair_case = Case(
            case_id=stable_id("case", "concurrent", *sorted((mine.record_id, theirs.record_id))),
            tenant=r.tenant,
            probe_record_id=probe.record_id,
            kind=Outcome.REVIEW,
            candidates=(Candidate(other.record_id, best.score, other.source, other.application_id),),
            status=CaseStatus.OPEN,
            created_at=utc_now(),
            thresholds={**r.policy.describe(thresholds), **reason},
        )
        event = r.event(
            "case.opened",
            actor,
            pair_case.created_at,
            case_id=pair_case.case_id,
            kind="review",
            probe_record_id=probe.record_id,
            **reason,
        )
        if not r.store.open_case(pair_case, RecordStatus.PENDING_REVIEW, (event,)):
            return None
        if (case_id := case_to_notify(pair_case.kind, pair_case.case_id)) is not None:
            r.notify_case(case_id)
        return pair_case

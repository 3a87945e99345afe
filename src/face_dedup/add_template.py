"""Use case: add a later photo of an enrolled person to their record (several templates per
record, issue 11). The rules are record_templates.plan_addition's; this module reads what they
need, keeps the photo and crop, and writes the record's new templates, centroid and audit entry
(one store transaction), then the index vector.

Only an officer or supervisor adds a photo, and only one that matches the record 1:1 at the
verify threshold, reaches the quality floor, and matches no other record at the review
threshold. The audit entry names the record, the template number, its source and the scores
against the thresholds: no template, no photo, no file name."""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from face_dedup.analysis import Rejection
from face_dedup.blob_keys import record_prefix, template_crop_key, template_photo_key, template_prefix
from face_dedup.domain import Actor, AuditEvent, Record, RecordStatus, Role, utc_now
from face_dedup.errors import InvalidState, NotFound, PermissionDenied
from face_dedup.ports import IndexEntry
from face_dedup.record_templates import (
    Template,
    TemplatePolicy,
    TemplateRefused,
    TemplateSource,
    calibrated_score,
    plan_addition,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

    from face_dedup.service import DedupService

# Only a duplicate confirmed by the two-person review is the same person; one linked on its
# score alone (`linked_duplicate`) still waits for that review, and stays a rival.
_DUPLICATE = (RecordStatus.CONFIRMED_DUPLICATE,)


@dataclass(frozen=True)
class TemplateAdded:
    record_id: str
    number: int
    source: str
    template_count: int
    replaced: int | None
    verify_score: float  # calibrated (record_templates.calibrated_score)
    verify_threshold: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "record_id": self.record_id,
            "template": self.number,
            "source": self.source,
            "templates": self.template_count,
            "replaced": self.replaced,
            "verify_score": round(self.verify_score, 4),
            "verify_threshold": round(self.verify_threshold, 4),
        }


def enrollment_template(record: Record) -> Template:
    """Template 1 of a record that has never had a photo added: its own `embedding`."""
    return Template(
        record_id=record.record_id,
        number=1,
        model_pack=record.model_pack,
        source=TemplateSource.ENROLLMENT,
        captured_at=record.created_at,
        added_at=record.created_at,
        quality=dict(record.quality),
        embedding=np.asarray(record.embedding, dtype=np.float32),
    )


def current_templates(service: DedupService, record: Record) -> list[Template]:
    stored = service.store.record_templates(record.record_id)
    if stored:
        return stored
    if record.template_count != 1:
        raise InvalidState(
            f"record {record.record_id} counts {record.template_count} templates but none is stored in "
            f"pack {record.model_pack}: run `face-dedup doctor`"
        )
    return [enrollment_template(record)]


def _linked_to(record_id: str, records: Iterable[Record]) -> set[str]:
    """The records confirmed to be this person's duplicates (linked to the record, directly or
    through another of them): the same person, so never a rival for their photo. Any other
    record (a pending or unconfirmed case, a 'different people' decision) stays a rival."""
    linked = {record_id}
    pending = [r for r in records if r.status in _DUPLICATE and r.linked_to is not None]
    grew = True
    while grew:
        grew = False
        for r in pending:
            if r.record_id not in linked and r.linked_to in linked:
                linked.add(r.record_id)
                grew = True
    return linked - {record_id}


def _index(service: DedupService, record_id: str, pack: str, vector: NDArray[np.float32]) -> None:
    """Write the record's centroid `vector` (as read or just stored) to the index. Without a
    registry lock (the cloud) the record may have changed or been erased since: read it again
    after the write. Unchanged, any later writer indexes after us; a newer centroid is written
    instead; an erased record's vector and files are deleted again (the erasure may have
    deleted them before ours were written)."""
    tenant = service.tenant
    service.index.add([IndexEntry(record_id, tenant, pack, vector)])
    now = service.store.get_record(record_id)
    if now is None:  # erased: our vector, and the files we put, were not there to erase
        service.index.delete([record_id])
        with suppress(NotFound):
            service.blobs.delete_prefix(record_prefix(tenant, record_id))
    elif now.tenant != tenant:
        service.index.delete([record_id])
    elif now.model_pack == pack and not np.array_equal(now.embedding, vector):
        service.index.add([IndexEntry(record_id, tenant, pack, now.embedding)])


def add_photo(
    service: DedupService,
    record_id: str,
    data: bytes,
    actor: Actor,
    *,
    source: TemplateSource = TemplateSource.VERIFIED,
    captured_at: str | None = None,
    policy: TemplatePolicy | None = None,
) -> TemplateAdded:
    """Add the photo `data` to the record as a new template, or raise TemplateRefused (the
    photo is rejected or fails the policy), NotFound, PermissionDenied or InvalidState (the
    record changed meanwhile). Nothing is kept of a refused photo."""
    if actor.role not in (Role.OFFICER, Role.SUPERVISOR):
        raise PermissionDenied(
            f"{actor.name} is {actor.role.value}: only an officer or supervisor adds photos"
        )
    policy = policy or service.config.templates
    analysis = service.analyze(data)  # outside the lock: the slow part
    if isinstance(analysis, Rejection):
        raise TemplateRefused(
            f"rejected:{analysis.reason.value}", f"the photo was rejected: {analysis.message}"
        )
    tenant, pack = service.tenant, service.model_pack
    probe = np.asarray(analysis.embedding, dtype=np.float32)
    with service.registry_lock():
        record = service.store.get_record(record_id)
        if record is None or record.tenant != tenant:
            raise NotFound(f"no record {record_id}")
        if record.model_pack != pack:
            raise InvalidState(
                f"record {record_id} is in model pack {record.model_pack}, this process runs {pack}"
            )
        existing = current_templates(service, record)
        if record.template_count > 1:  # heals an index write an earlier addition did not make
            _index(service, record_id, pack, record.embedding)
        verify_threshold = service.policy.verify_threshold  # the decision policy's 1:1 rule
        verify_score = calibrated_score(float(np.dot(record.embedding, probe)), record.template_count)
        review = service.thresholds().review
        found = service.index.search_above(
            probe, tenant=tenant, model_pack=pack, min_score=review, limit=service.policy.max_candidates
        )
        others = service.store.describe_records(h.record_id for h in found.hits if h.record_id != record_id)
        same_person = _linked_to(record_id, others.values())
        rivals = [
            o.record_id
            for o in others.values()
            if o.record_id not in same_person
            and calibrated_score(float(np.dot(o.embedding, probe)), o.template_count) >= review
        ]
        if found.capped and not rivals:  # more faces above the threshold than listed: not clear
            rivals = ["(more than the listed candidates)"]
        now = utc_now()
        new = Template(
            record_id=record_id,
            number=max(t.number for t in existing) + 1,
            model_pack=pack,
            source=source,
            captured_at=captured_at or now,
            added_at=now,
            quality={k: round(float(v), 4) for k, v in analysis.measures.items()},
            embedding=probe,
        )
        plan = plan_addition(
            policy,
            record_status=record.status.value,
            existing=existing,
            new=new,
            verify_score=verify_score,
            verify_threshold=verify_threshold,
            rival_record_ids=rivals,
        )
        if service.config.keep_photos:  # for officers, and for a migration to re-embed from
            service.blobs.put(
                template_photo_key(tenant, record_id, new.number), data, "application/octet-stream"
            )
            service.blobs.put(
                template_crop_key(tenant, record_id, new.number),
                service.engine.crop_png(analysis.aligned_crop),
                "image/png",
            )
        audit = AuditEvent(
            "record.template_added",
            actor.name,
            tenant,
            now,
            {
                "record_id": record_id,
                "template": new.number,
                "source": source.value,
                "role": actor.role.value,
                "templates": len(plan.templates),
                "replaced": plan.replaced.number if plan.replaced else None,
                "verify_score": round(verify_score, 4),
                "verify_threshold": round(verify_threshold, 4),
                "detector_score": new.quality.get("detector_score"),
                "model_pack": pack,
            },
        )
        if not service.store.replace_templates(record, plan.templates, plan.centroid, audit):
            # Without a registry lock (the cloud) another addition may have won with the same
            # number: N's files are then its template's, not ours to delete. (Had our files
            # landed after its, N keeps our photo, of the same person by the same checks:
            # rare, and unlike a deletion it leaves the template re-embeddable.)
            if all(t.number != new.number for t in service.store.record_templates(record_id)):
                with suppress(NotFound):
                    service.blobs.delete_prefix(template_prefix(tenant, record_id, new.number))
            raise InvalidState(f"record {record_id} changed while the photo was added: try again")
        # The index after the store. A crash or an index error here leaves the previous
        # centroid indexed: the record is still found, and every decision recomputes its score
        # from the store's centroid; the next attempt on this record (even one refused, such
        # as a retry of this photo) writes the index vector again (above). The replaced
        # photo goes whatever happens to the index.
        try:
            _index(service, record_id, pack, plan.centroid)
        finally:
            if plan.replaced is not None:
                service.blobs.delete_prefix(template_prefix(tenant, record_id, plan.replaced.number))
            if service.shadow is not None:  # a migration re-embeds this record on its next run
                service.shadow.forget(record_id)
    return TemplateAdded(
        record_id,
        new.number,
        source.value,
        len(plan.templates),
        plan.replaced.number if plan.replaced else None,
        verify_score,
        verify_threshold,
    )

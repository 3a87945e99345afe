"""Shadow mode in the cloud (migration between packs): while a migration is declared (the
deployment's `shadow_pack` setting, FACE_DEDUP_SHADOW_PACK), each new search of the workflow is
also run in the shadow pack, deciding nothing, and whether the two packs agree is audited.

The shadow step (functions/migrate `shadow`) is a search step built for the SHADOW pack: its
engine, calibration, decision policy and index (the pack's own, `cloud_migration.
pack_index_name`) are that pack's. Given the active pack's decision (the search step's output,
record ids and scores only) it

- reads the staged input (its record id: the workflow has not completed it yet);
- makes the shadow pack's probe from the same aligned crop the ingest kept (embedded as it is
  when both packs align alike, else the photo is analysed again: `template_migration.template_for`);
- searches the shadow pack's index above that pack's review threshold and decides with that
  pack's policy; a record of several templates is scored with its template count's offset;
- appends `shadow.compared` to the audit log: agree or not, both outcomes, both candidate
  lists as record ids, the shadow gallery's size. No template, score or photo is recorded.

The shadow pack's own index is filled by `fill_index` (functions/migrate `shadow_fill`, after
each run of the migration job) from the templates the job kept on the records.

`report` reads those events back beside the migration's progress, as `face-dedup migrate
status` does locally (it is `migration.status`). Embeddings of different packs are never
compared: the probe is the shadow pack's, searched only among that pack's templates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from face_dedup.blob_keys import crop_key, photo_key
from face_dedup.domain import Candidate, Outcome
from face_dedup.errors import ConfigError, FaceDedupError, NotFound
from face_dedup.migration import status
from face_dedup.ports import IndexEntry
from face_dedup.record_templates import calibrated_score
from face_dedup.template_migration import template_for
from face_dedup.usecases.inputs import StagedDecision

if TYPE_CHECKING:
    from face_dedup.models.registry import ModelPack
    from face_dedup.service import DedupService

ACTION = "shadow.compared"


class NotShadowed(FaceDedupError):
    """The input could not be compared in the shadow pack (a reason code, no biometric data)."""


def _blob(service: Any, key: str) -> bytes | None:
    try:
        data: bytes = service.blobs.get(key)
    except NotFound:
        return None
    return data


def compare(
    shadow: DedupService, active_pack: ModelPack, decision: StagedDecision, *, actor: str
) -> dict[str, Any]:
    """Search the staged input of `decision` in the shadow pack (`shadow`: a service for the
    shadow pack and the input's tenant) and audit whether it agrees with the active pack's
    decision. Returns the audited details. Raises NotShadowed when there is nothing to compare."""
    pack = shadow.model_pack
    if pack == active_pack.id:
        raise ConfigError(f"{pack} is the active pack: nothing to shadow")
    if decision.outcome is Outcome.VERIFIED:
        raise NotShadowed("VERIFIED_ONE_TO_ONE")  # 1:1 against the application's own: not searched
    staged = shadow.store.get_staged(decision.key)
    if staged is None:
        raise NotShadowed("NOT_STAGED")  # completed or expired: its crop may be gone too
    tenant, record_id = shadow.tenant, staged.record_id
    vector = template_for(shadow.engine, active_pack, _blob(shadow, crop_key(tenant, record_id)), None)
    if isinstance(vector, str):
        vector = template_for(shadow.engine, active_pack, None, _blob(shadow, photo_key(tenant, record_id)))
    if isinstance(vector, str):
        raise NotShadowed(vector)
    policy = shadow.policy
    size = shadow.index.count(tenant=tenant, model_pack=pack)
    thresholds = policy.thresholds(size)
    found = shadow.index.search_above(
        vector, tenant=tenant, model_pack=pack, min_score=thresholds.review, limit=policy.max_candidates + 1
    )
    hits = [h for h in found.hits if h.record_id != record_id]
    capped = found.capped or len(hits) > policy.max_candidates
    hits = hits[: policy.max_candidates]
    # the index's score is the shadow template's (a centroid for a record of several photos):
    # held to the one-template calibration as the active search does; only the count is read
    counts = {
        rid: r.template_count for rid, r in shadow.store.describe_records(h.record_id for h in hits).items()
    }
    candidates = [
        Candidate(h.record_id, calibrated_score(h.score, counts[h.record_id]))
        for h in hits
        if h.record_id in counts
    ]
    outcome = policy.decide(candidates, thresholds, capped=capped)
    active_ids = [c.record_id for c in decision.candidates]
    shadow_ids = [c.record_id for c in outcome.candidates]
    details = {
        "record_id": record_id,
        "model_pack": pack,
        "agree": outcome.outcome is decision.outcome and set(shadow_ids) == set(active_ids),
        "active_outcome": decision.outcome.value,
        "shadow_outcome": outcome.outcome.value,
        "active_candidates": active_ids,
        "shadow_candidates": shadow_ids,
        "shadow_gallery_size": size,
    }
    shadow.record_event(ACTION, actor, **details)
    return details


def fill_index(shadow: DedupService, *, batch: int = 5000) -> dict[str, int]:
    """Make the shadow pack's own index hold exactly the templates the migration job kept in
    that pack for the tenant (`pack:<id>` on the records): run after each run of the job. The
    same index serves the pack after the cut-over, whose reconcile then finds it full.
    A record whose kept template was dropped (erased, or a photo added) leaves the index; its
    re-made template comes back with the job's next run and the next fill."""
    tenant, pack = shadow.tenant, shadow.model_pack
    kept = shadow.store.pack_templates(tenant=tenant, model_pack=pack)
    indexed = shadow.index.record_ids(tenant=tenant, model_pack=pack)
    missing = [IndexEntry(rid, tenant, pack, v) for rid, v in kept.items() if rid not in indexed]
    orphans = [rid for rid in indexed if rid not in kept]
    for start in range(0, len(missing), batch):
        shadow.index.add(missing[start : start + batch])
    if orphans:
        shadow.index.delete(orphans)
    return {"added": len(missing), "removed": len(orphans), "kept": len(kept)}


def report(service: DedupService, shadow_pack: str) -> dict[str, Any]:
    """The migration's progress and what the shadow has seen, for the service's tenant: the
    local `face-dedup migrate status`, on the cloud's store."""
    if not shadow_pack:
        raise ConfigError("no shadow pack: name the migration's target pack")
    return status(service, shadow_pack)

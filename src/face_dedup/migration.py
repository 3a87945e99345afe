"""Moving a registry from one model pack to another without stopping it.

1. `start`: the new pack becomes the registry's *shadow* pack (packs.json in the data dir).
   From then on every new input is embedded and searched in both packs; decisions still come
   from the active pack; each comparison is audited (`shadow.compared`), and its template in
   the shadow pack is kept beside the record.
2. `run`: every existing record is re-embedded into the shadow pack from its stored aligned
   crop (when both packs align alike) or its stored photo. One record per transaction, so it
   can be killed at any point and run again: done records are skipped (idempotent), progress
   is reported, and `rate` bounds records per second so a live registry keeps its CPU.
3. `cutover`: one transaction makes every record's shadow template its own (the old one is
   kept beside it), the index is refilled, and packs.json swaps active and shadow. The old pack
   is now the shadow: new inputs still get templates in it, so `rollback` (the same swap back)
   stays possible until `finish` erases the old pack's templates.

Embeddings of different packs are never compared: each pack is searched only among its own
templates, with its own calibration.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from face_dedup.analysis import FaceTemplate
from face_dedup.calibration import ImpostorTail
from face_dedup.decision import DecisionPolicy
from face_dedup.deployment import PACKS_FILE
from face_dedup.domain import Candidate, ImportItem, Outcome, StagedInput, utc_now
from face_dedup.errors import ConfigError, InvalidState
from face_dedup.ports import FaceAnalyzer, IndexEntry, RecordStore, VectorIndex
from face_dedup.template_migration import (
    compatible_crops,
    migrate_record_templates,
    stored_blob,
    template_for,
)

if TYPE_CHECKING:
    from face_dedup.models.registry import ModelPack
    from face_dedup.settings import Settings
    from face_dedup.vision.pipeline import FaceEngine  # the shadow pack: bootstrap builds the real engine

log = logging.getLogger(__name__)

ACTOR = "migration"
_ENROLLED = (Outcome.ENROLLED, Outcome.REVIEW, Outcome.DUPLICATE)


# -- packs.json: which pack is active and which is the shadow, per tenant -----------------------


def read_packs(data_dir: Path) -> dict[str, dict[str, str]]:
    path = data_dir / PACKS_FILE
    if not path.is_file():
        return {}
    tenants = json.loads(path.read_text(encoding="utf-8")).get("tenants", {})
    return {str(k): dict(v) for k, v in tenants.items()}


def recorded_active(data_dir: Path, tenant: str) -> str | None:
    """The tenant's active pack as packs.json records it; None when nothing is recorded."""
    try:
        entry = read_packs(data_dir).get(tenant)
    except (OSError, ValueError, AttributeError):
        return None  # Settings.load reports a damaged file; an absent data dir records nothing
    return str(entry["active"]) if entry and entry.get("active") else None


def write_packs(data_dir: Path, tenant: str, active: str, shadow: str) -> None:
    """Written whole to a temporary name, then renamed: a reader sees the old or the new."""
    tenants = read_packs(data_dir)
    tenants[tenant] = {"active": active, "shadow": shadow, "at": utc_now()}
    path = data_dir / PACKS_FILE
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps({"tenants": tenants}, indent=2) + "\n", encoding="utf-8")
    partial.chmod(0o600)
    partial.replace(path)


# -- shadow mode --------------------------------------------------------------------------------


class ShadowPack:
    """The registry's second pack during a migration: searched on every new input, deciding
    nothing. Its index is in memory, filled from the store's kept templates at start."""

    def __init__(
        self,
        engine: FaceEngine,
        tail: ImpostorTail,
        store: RecordStore,
        settings: Settings,
        index: VectorIndex,
    ) -> None:
        """`index`: an empty one, kept in memory (the composition root gives the embedded one)."""
        if tail.model_pack != engine.pack.id:
            raise ConfigError(f"calibration is for {tail.model_pack}, the shadow pack is {engine.pack.id}")
        self.engine = engine
        self.tail = tail
        self.settings = settings
        self.store = store
        self.index = index
        kept = store.pack_templates(tenant=settings.tenant, model_pack=self.pack_id)
        self.index.add([IndexEntry(rid, settings.tenant, self.pack_id, v) for rid, v in kept.items()])

    @property
    def pack_id(self) -> str:
        return self.engine.pack.id

    def observe(
        self,
        active_pack: ModelPack,
        staged: StagedInput,
        analysis: FaceTemplate,
        data: bytes | None,
        item: ImportItem,
        audit: Callable[..., None],
    ) -> None:
        """Search the shadow pack as the active one did, audit whether they agree, and keep the
        new record's shadow template. A failure here never touches the decision made."""
        try:
            self._observe(active_pack, staged, analysis, data, item, audit)
        except Exception as exc:  # the shadow must never fail an enrollment
            log.warning("shadow pack %s: comparison failed: %s", self.pack_id, type(exc).__name__)

    def _observe(
        self,
        active_pack: ModelPack,
        staged: StagedInput,
        analysis: FaceTemplate,
        data: bytes | None,
        item: ImportItem,
        audit: Callable[..., None],
    ) -> None:
        vector: NDArray[np.float32] | str
        if compatible_crops(active_pack, self.engine.pack):  # the crop as aligned, no re-detection
            vector = self.engine.embed(analysis.aligned_crop)
        else:
            vector = template_for(self.engine, active_pack, None, data)
        if isinstance(vector, str):
            audit("shadow.failed", record_id=staged.record_id, model_pack=self.pack_id, reason=vector)
            return
        s, tenant = self.settings, self.settings.tenant
        size = self.index.count(tenant=tenant, model_pack=self.pack_id)
        policy = DecisionPolicy.from_settings(s, self.tail)
        thresholds = policy.thresholds(size)
        found = self.index.search_above(
            vector,
            tenant=tenant,
            model_pack=self.pack_id,
            min_score=thresholds.review,
            limit=s.max_candidates + 1,
        )
        hits = [h for h in found.hits if h.record_id != staged.record_id]
        capped = found.capped or len(hits) > s.max_candidates
        candidates = [Candidate(h.record_id, h.score) for h in hits[: s.max_candidates]]
        decision = policy.decide(candidates, thresholds, capped=capped)
        if item.outcome is not Outcome.VERIFIED:  # 1:1 against the own application: not searched
            agree = decision.outcome is item.outcome and {c.record_id for c in decision.candidates} == {
                c.record_id for c in item.candidates
            }
            audit(
                "shadow.compared",
                record_id=staged.record_id,
                model_pack=self.pack_id,
                agree=agree,
                active_outcome=item.outcome.value,
                shadow_outcome=decision.outcome.value,
                active_candidates=[c.record_id for c in item.candidates],
                shadow_candidates=[
                    {"record_id": c.record_id, "score": round(c.score, 4)} for c in decision.candidates
                ],
                shadow_review_threshold=round(thresholds.review, 4),
                shadow_gallery_size=size,
            )
        if item.record_id == staged.record_id and item.outcome in _ENROLLED:
            kept = self.store.put_pack_template(
                record_id=staged.record_id, tenant=tenant, model_pack=self.pack_id, embedding=vector
            )
            if kept:
                self.index.add([IndexEntry(staged.record_id, tenant, self.pack_id, vector)])

    def forget(self, record_id: str) -> None:
        """An erased record leaves the shadow index too (the store's copy goes with the record)."""
        self.index.delete([record_id])


# -- the commands -------------------------------------------------------------------------------


@dataclass
class RunResult:
    target: str
    records: int
    already: int
    migrated: int
    failed: dict[str, str]  # record id -> reason (no photo kept, no face found by the new pack)

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "records": self.records,
            "already_migrated": self.already,
            "migrated": self.migrated,
            "failed": self.failed,
        }


def run(
    service: Any,
    engine: FaceAnalyzer,
    active_pack: ModelPack,
    *,
    rate: float = 0.0,
    limit: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> RunResult:
    """Re-embed every record of the active pack that has no template in `engine`'s pack yet."""
    from face_dedup.blob_keys import crop_key, photo_key

    tenant, target = service.tenant, engine.pack.id
    if target == service.model_pack or active_pack.id != service.model_pack:
        raise ConfigError(f"{target} is already the active pack")
    store: RecordStore = service.store
    done = set(store.pack_templates(tenant=tenant, model_pack=target))
    records: list[str] = []
    several: set[str] = set()  # records of several templates: each one re-embedded
    for r in store.iter_templates(tenant=tenant):
        if r.model_pack == service.model_pack:
            records.append(r.record_id)
            if r.template_count > 1:
                several.add(r.record_id)
    todo = [rid for rid in records if rid not in done]
    if limit is not None:
        todo = todo[:limit]
    result = RunResult(target, len(records), sum(1 for r in records if r in done), 0, {})
    interval = 1.0 / rate if rate > 0 else 0.0
    next_at = time.monotonic()
    for number, record_id in enumerate(todo, start=1):
        if interval:  # rate limit: a live registry keeps its CPU for new inputs
            time.sleep(max(0.0, next_at - time.monotonic()))
            next_at = max(next_at, time.monotonic()) + interval
        if record_id in several:
            kept = migrate_record_templates(service, engine, active_pack, record_id)
            if isinstance(kept, str):
                result.failed[record_id] = kept
            elif kept:
                result.migrated += 1
            if progress is not None:
                progress(number, len(todo))
            continue
        # The stored crop when both packs align alike (no re-detection), else the photo.
        vector = template_for(engine, active_pack, stored_blob(service, crop_key(tenant, record_id)), None)
        if isinstance(vector, str):
            vector = template_for(
                engine, active_pack, None, stored_blob(service, photo_key(tenant, record_id))
            )
        if isinstance(vector, str):
            result.failed[record_id] = vector
        elif store.put_pack_template(record_id=record_id, tenant=tenant, model_pack=target, embedding=vector):
            result.migrated += 1
        if progress is not None:
            progress(number, len(todo))
    service.record_event("migration.run", ACTOR, **result.as_dict() | {"failed": len(result.failed)})
    return result


def status(service: Any, shadow_pack: str) -> dict[str, Any]:
    """How far the migration is, and what shadow mode has seen (from the audit log)."""
    tenant = service.tenant
    records = service.store.count_templates(tenant=tenant, model_pack=service.model_pack)
    kept = len(service.store.pack_templates(tenant=tenant, model_pack=shadow_pack)) if shadow_pack else 0
    compared = [
        e.details
        for e in service.store.audit_events(tenant=tenant)
        if e.action == "shadow.compared" and e.details.get("model_pack") == shadow_pack
    ]
    disagreements = [d for d in compared if not d.get("agree")]
    return {
        "active": service.model_pack,
        "shadow": shadow_pack or None,
        "records": records,
        "shadow_templates": kept,
        "missing": max(0, records - kept),
        "ready_to_cut_over": bool(shadow_pack) and kept >= records,
        "shadow_compared": len(compared),
        "shadow_disagreements": len(disagreements),
        "disagreements": disagreements[-50:],
    }


def switch(service: Any, settings: Settings, *, action: str) -> dict[str, Any]:
    """Cut over (or roll back): the shadow pack becomes the active one and the active one the
    shadow. Safe to run again after an interruption: the store's switch is one transaction,
    the index refill replaces by record id, and packs.json is written last."""
    tenant, source, target = service.tenant, service.model_pack, settings.shadow_pack
    if not target:
        raise ConfigError("no shadow pack: start a migration first (`face-dedup migrate start --to PACK`)")
    store: RecordStore = service.store
    with service.registry_lock():
        switched = 0
        if store.count_templates(tenant=tenant, model_pack=source) or not store.count_templates(
            tenant=tenant, model_pack=target
        ):
            event = service._event(f"migration.{action}", ACTOR, utc_now(), source=source, target=target)
            try:
                switched = store.switch_pack(tenant=tenant, source=source, target=target, audit=event)
            except InvalidState as exc:
                raise InvalidState(f"{exc}: run `face-dedup migrate run` first") from None
        entries = [
            IndexEntry(r.record_id, r.tenant, r.model_pack, r.embedding)
            for r in store.iter_templates(tenant=tenant)
            if r.model_pack == target
        ]
        for start in range(0, len(entries), 5000):  # replaces each record's vector (same id)
            service.index.add(entries[start : start + 5000])
        write_packs(settings.data_dir, tenant, active=target, shadow=source)
    return {"action": action, "active": target, "shadow": source, "records": switched or len(entries)}


def finish(service: Any, settings: Settings, actor: str) -> dict[str, Any]:
    """End the migration: every template of the shadow pack is erased (no rollback after
    this) and packs.json names no shadow; audited with the count."""
    shadow = settings.shadow_pack
    if not shadow:
        raise ConfigError("no migration under way")
    store: RecordStore = service.store
    with service.registry_lock():
        dropped = store.drop_pack_templates(tenant=settings.tenant, model_pack=shadow)
        write_packs(settings.data_dir, settings.tenant, settings.model_pack, "")
    service.record_event("migration.finished", actor, erased_pack=shadow, templates=dropped)
    return {"active": settings.model_pack, "erased_pack": shadow, "templates_erased": dropped}


def interrupted(store: RecordStore, settings: Settings) -> bool:
    """The registry's records are in the shadow pack: a cut-over or rollback stopped between
    its store transaction and packs.json. Serving now would search an empty partition."""
    shadow = settings.shadow_pack
    return bool(shadow) and store.count_templates(tenant=settings.tenant, model_pack=shadow) > 0

"""Migration between model packs in the cloud: the item processor of the Step Functions job.

The job (infra/face_dedup_infra/constructs/migration.py) is a Distributed Map over an S3
listing of the tenant's prefix in the faces bucket: each record keeps its photo and aligned crop
under `<s3_prefix><tenant>/<record id>/`, so the listing names every record that has something
to re-embed from, without a scan of the table. The map hands batches of object keys to
`functions/migrate`, which calls `migrate_batch` here:

- keys -> record ids (each key is validated; a key outside the tenant's prefix is refused);
- records that already hold a template in the target pack, or no longer exist, are skipped: a
  batch, or the whole job, can run again at any time (idempotent);
- each remaining record is re-embedded by the target pack from its stored aligned crop (when both
  packs align alike: no re-detection) or else its stored photo, and the template is kept beside
  the record's own (`RecordStore.put_pack_template`, conditional: an erasure that got there first
  wins);
- a record of several photos (record_templates.py) has every one of them re-embedded from its
  own stored crop (else photo) by `template_migration.migrate_record_templates`, the local
  migration's own code: the target pack's templates and their centroid are kept on the record's
  item (`put_pack_record_templates`), so the cut-over gives it the right template count;
- a record that cannot be re-embedded (no photo kept, no face found by the new pack) is reported
  with its reason; the handler fails the item with those reasons (record ids and reason codes
  only), which the map counts against its tolerated-failure threshold and writes to its results.

Embeddings of different packs are never compared here: nothing is searched, and each template is
stored under its own pack's name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from face_dedup.analysis import FaceTemplate
from face_dedup.blob_keys import crop_key, photo_key
from face_dedup.deployment import DEFAULT_PACK_ID
from face_dedup.domain import AuditEvent, utc_now
from face_dedup.errors import ConfigError, FaceDedupError, InvalidState, NotFound
from face_dedup.identifiers import tenant as valid_tenant
from face_dedup.ports import BlobStore, FaceAnalyzer, RecordStore
from face_dedup.template_migration import compatible_crops, migrate_record_templates

if TYPE_CHECKING:
    from face_dedup.models.registry import ModelPack

# Record ids are the service's own (`stable_id`): a letter or digit, then letters, digits, _ and -.
_RECORD_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
_FILES = ("photo", "aligned.png")  # blob_keys: what a record's prefix holds
_TEMPLATE_NUMBER = re.compile(r"^[1-9][0-9]{0,3}$")  # blob_keys.template_prefix: templates/<n>/
MAX_BATCH = 1000  # records per item: one invocation's work stays well inside its timeout


@dataclass(frozen=True)
class _Scope:
    """What template_migration.migrate_record_templates reads of a service: one tenant's
    records and blobs (the job's item names its tenant; the function's service is not per
    tenant)."""

    store: RecordStore
    blobs: BlobStore
    tenant: str


class BadItem(FaceDedupError, ValueError):
    """An item of the job's input that is not a key of this tenant's records (hostile or
    misconfigured input); the message quotes it escaped and truncated."""


@dataclass
class BatchResult:
    records: int = 0  # distinct records named by the batch
    already: int = 0  # held a template in the target pack already (or were never the source's)
    migrated: int = 0
    gone: int = 0  # erased between the listing and now
    failed: dict[str, str] = field(default_factory=dict)  # record id -> reason code

    def as_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "already_migrated": self.already,
            "migrated": self.migrated,
            "erased_meanwhile": self.gone,
            "failed": dict(self.failed),
        }


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def record_ids_from_keys(keys: Iterable[object], *, s3_prefix: str, tenant: str) -> list[str]:
    """The distinct record ids named by object keys of the faces bucket, in order. A key that is
    not `<s3_prefix><tenant>/<record id>/[templates/<n>/]<photo|aligned.png>` is refused
    (BadItem)."""
    valid_tenant(tenant)
    base = f"{s3_prefix}{tenant}/"
    ids: dict[str, None] = {}
    for key in keys:
        if not isinstance(key, str) or not key.startswith(base):
            raise BadItem(f"key {_shown(key)} is not under the tenant's prefix")
        parts = key[len(base) :].split("/")
        added = len(parts) == 4 and parts[1] == "templates" and _TEMPLATE_NUMBER.fullmatch(parts[2])
        if (
            len(parts) not in (2, 4)
            or (len(parts) == 4 and not added)
            or not _RECORD_ID.fullmatch(parts[0])
            or parts[-1] not in _FILES
        ):
            raise BadItem(f"key {_shown(key)} does not name a record's photo or crop")
        ids[parts[0]] = None
    return list(ids)


def _get(blobs: BlobStore, key: str) -> bytes | None:
    try:
        return blobs.get(key)
    except NotFound:
        return None


def reembed(
    analyzer: FaceAnalyzer,
    active_pack: ModelPack,
    target_pack: ModelPack,
    blobs: BlobStore,
    tenant: str,
    record_id: str,
) -> NDArray[np.float32] | str:
    """The record's template in the target pack, from its crop when the packs align alike (a
    real engine only: it embeds the crop without detecting again), else from its photo; or the
    reason code why there is none."""
    if compatible_crops(active_pack, target_pack):
        crop = _get(blobs, crop_key(tenant, record_id))
        if crop is not None:
            vector = analyzer.embed_crop(crop)  # None from an analyzer that cannot: the photo
            if vector is not None:
                return vector
    photo = _get(blobs, photo_key(tenant, record_id))
    if photo is None:
        return "NO_PHOTO_KEPT"
    result = analyzer.process(photo)
    if isinstance(result, FaceTemplate):
        return result.embedding
    return result.reason.value


def missing_templates(
    store: RecordStore, *, tenant: str, model_pack: str, record_ids: list[str]
) -> dict[str, int]:
    """Those of `record_ids` that exist in the tenant, in another pack, without a `model_pack`
    template, each with how many templates the record holds. The DynamoDB store answers with one
    batched read per 100 ids; other stores from their whole list of the pack's templates."""
    direct = getattr(store, "missing_pack_templates", None)
    if direct is not None:
        found: dict[str, int] = direct(tenant=tenant, model_pack=model_pack, record_ids=record_ids)
        return found
    done = store.pack_templates(tenant=tenant, model_pack=model_pack)
    records = store.describe_records(record_ids)
    return {
        rid: records[rid].template_count
        for rid in record_ids
        if rid in records
        and records[rid].tenant == tenant
        and records[rid].model_pack != model_pack
        and rid not in done
    }


def migrate_batch(
    *,
    store: RecordStore,
    blobs: BlobStore,
    analyzer: FaceAnalyzer,
    active_pack: ModelPack,
    target_pack: ModelPack,
    tenant: str,
    record_ids: list[str],
) -> BatchResult:
    """Re-embed the batch's records into `target_pack` (see the module's docstring)."""
    if target_pack.id == active_pack.id:
        raise ConfigError(f"{target_pack.id} is already the active pack")
    if len(record_ids) > MAX_BATCH:
        raise BadItem(f"{len(record_ids)} records in one item; at most {MAX_BATCH}")
    result = BatchResult(records=len(record_ids))
    todo = missing_templates(store, tenant=tenant, model_pack=target_pack.id, record_ids=record_ids)
    result.already = len(record_ids) - len(todo)
    scope = _Scope(store=store, blobs=blobs, tenant=tenant)
    for record_id, templates in todo.items():
        if templates > 1:
            # every photo re-embedded from its own crop (else photo), their centroid the
            # record's template in the target pack: what the local migration does
            kept = migrate_record_templates(scope, analyzer, active_pack, record_id)
            if isinstance(kept, str):
                result.failed[record_id] = kept
            elif kept:
                result.migrated += 1
            else:
                result.gone += 1  # erased, or a photo added meanwhile (the next run re-makes it)
            continue
        vector = reembed(analyzer, active_pack, target_pack, blobs, tenant, record_id)
        if isinstance(vector, str):
            result.failed[record_id] = vector
        elif store.put_pack_template(
            record_id=record_id, tenant=tenant, model_pack=target_pack.id, embedding=vector
        ):
            result.migrated += 1
        else:
            result.gone += 1
    # Records that were erased before the read above count as already done: nothing to do.
    return result


def switch_packs(store: RecordStore, *, tenant: str, source: str, target: str) -> int:
    """The cut-over (or rollback) step: every record of the tenant takes its `target` template
    as its own, in one audited store operation. Returns how many records switched."""
    if source == target:
        raise ConfigError("source_pack and target_pack are the same pack")
    audit = AuditEvent(
        at=utc_now(),
        actor="migration",
        action="migration.switch",
        tenant=tenant,
        details={"source": source, "target": target},
    )
    return store.switch_pack(tenant=tenant, source=source, target=target, audit=audit)


def finish_pack(store: RecordStore, *, tenant: str, pack: str, active_pack: str) -> int:
    """The finish step: erase every template of `pack` kept beside the records (no rollback
    after this); refused while the deployment runs that pack or a record still has it as its
    own. Audited; returns how many templates were erased."""
    if pack == active_pack:
        raise ConfigError(f"{pack} is the deployment's active pack: its templates are the records' own")
    if store.count_templates(tenant=tenant, model_pack=pack):
        raise InvalidState(f"records of {tenant} are still in {pack}: cut over first")
    erased = store.drop_pack_templates(tenant=tenant, model_pack=pack)
    store.append_audit(
        AuditEvent(
            at=utc_now(),
            actor="migration",
            action="migration.finished",
            tenant=tenant,
            details={"erased_pack": pack, "templates": erased},
        )
    )
    return erased


def pack_index_name(base: str, model_pack: str) -> str:
    """The OpenSearch index holding `model_pack`'s vectors (the bootstrap names the functions'
    index with it, and the deploy-time index setup creates that one): one index per pack,
    because packs may differ in embedding size (an index has one vector dimension), so that a
    probe of one pack can never be scored against another's vectors even by a missing filter,
    and so that the old pack's index stays whole for a rollback after a cut-over. The default
    pack keeps the base name: deployments that ran it before indexes were per pack keep theirs."""
    if model_pack == DEFAULT_PACK_ID:
        return base
    slug = re.sub(r"[^a-z0-9_-]", "-", model_pack.lower()).strip("-_")
    if not slug:
        raise ConfigError(f"model pack id {_shown(model_pack)} gives no index name")
    return f"{base}-{slug}"[:255]

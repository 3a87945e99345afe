"""Erasure that really erases (index, photos, store row; then a check that no file still holds
the bytes), with a receipt saying which backups keep the data and until when; and reconcile,
which makes the index hold exactly the store's templates after an interrupted write."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from contextlib import suppress
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from face_dedup.blob_keys import crop_key, photo_key, record_prefix, template_crop_key, template_photo_key
from face_dedup.domain import Record, template_problem, utc_now
from face_dedup.errors import ErasureIncomplete, NotFound
from face_dedup.ports import IndexEntry
from face_dedup.usecases.registry import Registry

log = logging.getLogger(__name__)

# Other records that may hold the same photo: one photo's templates score >= 0.998 between the
# embedder runtimes (onnxruntime fp32, OpenVINO bf16), but a record of several templates is
# indexed by their centroid, which scores well below each of them (0.89 with its enrollment
# template for two templates at 0.6; review R12k: at 0.98 such a record was missed, and its
# template 1 made an erasure of the same photo's second record fail as incomplete). Loose, as
# the photo's SHA-256 and the template's bytes decide: the score only keeps the candidates to
# the person's own records (impostors score about 0.05 +- 0.07).
SAME_PHOTO_CANDIDATE_SCORE = 0.5


class Erasure:
    def __init__(self, registry: Registry) -> None:
        self.r = registry

    def erase(self, record_id: str, actor: str, reason: str) -> dict[str, Any]:
        r = self.r
        with r.registry_lock():
            record = r.store.get_record(record_id)
            if record is None or record.tenant != r.tenant:
                raise NotFound(f"no record {record_id} (never enrolled, or already erased)")
            needles, copies = self._erased_bytes(record)
            # Index and photos first: if this stops midway the record still exists and erase can
            # be run again; the store's row goes last, with the receipt.
            removed_vectors = r.index.delete([record_id])
            if r.shadow is not None:
                r.shadow.forget(record_id)
            removed_blobs = r.blobs.delete_prefix(record_prefix(r.tenant, record_id))
            erased_at = utc_now()
            backups = self._backups_holding(erased_at)
            receipt = r.event(
                "record.erased",
                actor,
                erased_at,
                record_id=record_id,
                application_id=record.application_id,
                reason=reason,
                removed={"vectors": removed_vectors, "blobs": removed_blobs},
                backups=backups,
            )
            counts = r.store.erase_record(record_id, receipt)
        result = {"record_id": record_id, "vectors": removed_vectors, "blobs": removed_blobs, **counts}
        result["backups"] = backups
        if copies:
            # The same photo imported under other applications: their copies are theirs.
            result["identical_copies_in_other_records"] = copies
        if r.erasure_check is not None:
            left = r.erasure_check(record_id, needles)
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
        if not self.r.config.backups:
            return [{"backup": "none kept by face-dedup", "until": erased_at}]
        return [
            {"backup": name, "until": (at + timedelta(days=days)).isoformat(timespec="seconds")}
            for name, days in sorted(self.r.config.backups)
        ]

    def _erased_bytes(self, record: Record) -> tuple[dict[str, bytes], int]:
        """What must be gone from every file after the erasure: the template, the photo and the
        crop, except bytes that other records hold too (an identical photo under another
        application keeps its own copy until it is erased)."""
        r = self.r
        template = np.asarray(record.embedding, dtype=np.float32).tobytes()
        needles = {"template": template}
        for name, key in (
            ("photo", photo_key(r.tenant, record.record_id)),
            ("crop", crop_key(r.tenant, record.record_id)),
        ):
            with suppress(NotFound):  # not kept (keep_photos off) or already gone
                needles[name] = r.blobs.get(key)
        # Candidates by score, then the photo's hash decides, so the score may be loose: the
        # other record's template may come from another embedder runtime (bf16 vs fp32).
        hits = r.index.search(
            record.embedding,
            tenant=r.tenant,
            model_pack=record.model_pack,
            k=50,
            min_score=SAME_PHOTO_CANDIDATE_SCORE,
        )
        others = r.store.describe_records(h.record_id for h in hits if h.record_id != record.record_id)
        same_photo = [o for o in others.values() if o.content_sha256 == record.content_sha256]
        if same_photo:
            needles.pop("photo", None)
            needles.pop("crop", None)
        if self._held_by_another(record, template, others.values()):
            needles.pop("template", None)
        if record.template_count > 1:
            needles |= self._erased_template_bytes(record)
        return needles, len(same_photo)

    def _erased_template_bytes(self, record: Record) -> dict[str, bytes]:
        """A record of several templates (record_templates.py): each template's vector (its
        `embedding` is their centroid) and each added photo and crop (under the record's prefix,
        deleted with it). The enrollment template is left out when another record holds the
        same vector (the same photo enrolled twice), as above."""
        r = self.r
        needles: dict[str, bytes] = {}
        for t in r.store.record_templates(record.record_id):
            vector = np.asarray(t.embedding, dtype=np.float32)
            if t.number == 1:
                # Left out only where another record holds these very bytes: a twin that merely
                # scores 0.9999 (a re-encoded copy, another runtime) leaves these unchecked else.
                hits = r.index.search(
                    vector,
                    tenant=r.tenant,
                    model_pack=record.model_pack,
                    k=50,
                    min_score=SAME_PHOTO_CANDIDATE_SCORE,
                )
                twins = r.store.describe_records(h.record_id for h in hits if h.record_id != record.record_id)
                if self._held_by_another(record, vector.tobytes(), twins.values()):
                    continue
            needles[f"template {t.number}"] = vector.tobytes()
            for name, key in (
                ("photo", template_photo_key(r.tenant, record.record_id, t.number)),
                ("crop", template_crop_key(r.tenant, record.record_id, t.number)),
            ):
                if t.number > 1:
                    with suppress(NotFound):
                        needles[f"{name} of template {t.number}"] = r.blobs.get(key)
        return needles

    def _held_by_another(self, record: Record, vector: bytes, others: Iterable[Record]) -> bool:
        """Whether one of `others` holds these exact template bytes: as its indexed vector, or
        as one of its templates (a record of several templates indexes their centroid)."""
        for other in others:
            if other.record_id == record.record_id:
                continue
            if np.asarray(other.embedding, dtype=np.float32).tobytes() == vector:
                return True
            if other.template_count > 1 and any(
                np.asarray(t.embedding, dtype=np.float32).tobytes() == vector
                for t in self.r.store.record_templates(other.record_id)
            ):
                return True
        return False

    # -- consistency ----------------------------------------------------------------------

    def reconcile(self) -> dict[str, int]:
        """Make the index hold exactly the store's templates of this tenant and pack. Cheap when
        they agree (a count each); a full comparison only after an interrupted write."""
        with self.r.registry_lock():
            return self._reconcile()

    def _reconcile(self) -> dict[str, int]:
        r = self.r
        stored_count = r.store.count_templates(tenant=r.tenant, model_pack=r.model_pack)
        if stored_count == r.index.count(tenant=r.tenant, model_pack=r.model_pack):
            return {"added": 0, "removed": 0}
        stored = {
            x.record_id: x for x in r.store.iter_templates(tenant=r.tenant) if x.model_pack == r.model_pack
        }
        indexed = r.index.record_ids(tenant=r.tenant, model_pack=r.model_pack)
        missing = [x for rid, x in stored.items() if rid not in indexed]
        damaged = {x.record_id: problem for x in missing if (problem := template_problem(x.embedding))}
        if damaged:  # rotted bytes in the store: never indexed, never fatal (`doctor` reports them)
            log.error("stored templates damaged, not searchable: %s; run `face-dedup doctor`", damaged)
            missing = [x for x in missing if x.record_id not in damaged]
        orphans = [rid for rid in indexed if rid not in stored]
        if missing:
            r.index.add([IndexEntry(x.record_id, x.tenant, x.model_pack, x.embedding) for x in missing])
        if orphans:
            r.index.delete(orphans)
        if missing or orphans:
            log.warning("index reconciled: %d added, %d orphans removed", len(missing), len(orphans))
        return {"added": len(missing), "removed": len(orphans)}

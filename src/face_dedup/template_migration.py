"""Migration between model packs (migration.py) for records that hold several templates
(record_templates.py): every template is re-embedded into the new pack from its own stored crop
(or photo), and the record's template in that pack is the new pack's centroid of all of them,
never the old pack's centroid carried over. Stores that cannot keep a record's templates per
pack report the record as failed (it is then not cut over: the switch refuses)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from face_dedup.analysis import FaceTemplate
from face_dedup.blob_keys import crop_key, photo_key, template_crop_key, template_photo_key
from face_dedup.errors import NotFound
from face_dedup.record_templates import Template, centroid

if TYPE_CHECKING:
    from face_dedup.models.registry import ModelPack
    from face_dedup.ports import FaceAnalyzer


def compatible_crops(a: ModelPack, b: ModelPack) -> bool:
    """A crop aligned for one pack can be embedded by the other as it is."""
    return a.contract.input_size == b.contract.input_size and a.contract.template == b.contract.template


def template_for(
    engine: FaceAnalyzer, crop_pack: ModelPack, crop: bytes | None, photo: bytes | None
) -> NDArray[np.float32] | str:
    """The target pack's template from a stored crop or photo, or why there is none. A crop is
    embedded as it is by a real engine only (another analyzer re-detects from the photo)."""
    if crop is not None and compatible_crops(crop_pack, engine.pack):
        vector = engine.embed_crop(crop)
        if vector is not None:
            return vector
    if photo is None:
        return "NO_PHOTO_KEPT"
    result = engine.process(photo)
    if isinstance(result, FaceTemplate):
        return result.embedding
    return result.reason.value


def stored_blob(service: Any, key: str) -> bytes | None:
    """The blob, or None when it was never kept or is gone."""
    try:
        data: bytes = service.blobs.get(key)
        return data
    except NotFound:
        return None


def migrate_record_templates(
    service: Any, engine: FaceAnalyzer, active_pack: ModelPack, record_id: str
) -> bool | str:
    """Re-embed the record's templates into `engine`'s pack: True when kept, False when the
    record is gone (erased meanwhile), or a reason code when a template could not be re-made.
    `service` needs `store`, `blobs` and `tenant` only (the cloud job passes just those)."""
    store, tenant, target = service.store, service.tenant, engine.pack.id
    put = getattr(store, "put_pack_record_templates", None)
    if put is None:
        return "STORE_CANNOT_MIGRATE_SEVERAL_TEMPLATES"
    templates: list[Template] = store.record_templates(record_id)
    if not templates:
        return "NO_TEMPLATES_STORED"
    remade = []
    for t in templates:
        if t.number == 1:
            keys = crop_key(tenant, record_id), photo_key(tenant, record_id)
        else:
            keys = (
                template_crop_key(tenant, record_id, t.number),
                template_photo_key(tenant, record_id, t.number),
            )
        # The stored crop when both packs align alike (no re-detection), else the photo.
        vector = template_for(engine, active_pack, stored_blob(service, keys[0]), None)
        if isinstance(vector, str):
            vector = template_for(engine, active_pack, None, stored_blob(service, keys[1]))
        if isinstance(vector, str):
            return f"TEMPLATE_{t.number}_{vector}"
        remade.append(replace(t, model_pack=target, embedding=vector))
    kept: bool = put(
        record_id=record_id, tenant=tenant, templates=remade, centroid=centroid([t.embedding for t in remade])
    )
    return kept

"""Bulk de-duplication in the cloud, first half: the Step Functions Distributed Map's item
processor (infra: constructs/bulk_import.py; context `face-dedup:bulk-import=true`). The second
half (gallery snapshot, join, ordered decide) is cloud_bulk_decide.py.

A registry's batch for a bulk job is uploaded as `bulk/<tenant>/<batch>/<file>` with
`bulk/<tenant>/<batch>/manifest.csv` (`file,application_id[,...]`, the import manifest's
format; README "On AWS"). The ingest function ignores that prefix (ingest.route), so nothing
is decided one photo at a time. The map reads the manifest's rows (ItemReader, CSV, header
row), batches them and hands each batch to `functions/bulk` (`analyse_rows` here), at most
`max_concurrency` batches at a time:

- each row is validated (file name, application id: hostile until checked), its photo read from
  the uploads bucket (at most the photo size limit: a larger object is refused, TOO_LARGE,
  without being read whole), analysed by the service's own engine (decode, detect, quality, align,
  embed; nothing is searched), and its idempotency key computed as a plain import would;
- the batch's analysed templates (embedding, aligned crop, measures) and rejections (reason
  code, message) are written as ONE object, `_bulk/<tenant>/<job>/part-<first row>.json`, in
  the faces bucket (KMS, like the records' crops); `_` cannot start a tenant name, so the
  migration job's listing of a tenant's prefix never sees these; beside it, the same rows'
  idempotency keys and templates alone (`vectors-<first row>-<last row>.npz`), what the join
  reads;
- a row that fails (bad name, no such object, no face) is kept in the part with its reason, in
  its manifest position: the ordered decide step rejects it there with that reason, as
  `import` does. The item's result (written by the map's result writer) holds
  row numbers, counts and reason codes only: no names, ids or biometric data.

`load_parts` reads a job's parts back in manifest order and names the rows no part holds (an
item that failed past its retries), so the ordered step can refuse to decide with a gap.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from face_dedup.analysis import FaceTemplate
from face_dedup.bulk_keys import MANIFEST_MAX_BYTES, MANIFEST_NAME, MAX_ROWS, PARTS_PREFIX, UPLOAD_PREFIX
from face_dedup.errors import BlobTooLarge, FaceDedupError, NotFound, Reason
from face_dedup.identifiers import InvalidIdentifier
from face_dedup.identifiers import application_id as valid_application_id
from face_dedup.identifiers import tenant as valid_tenant
from face_dedup.ports import BlobStore
from face_dedup.service import DedupService, InputRef
from face_dedup.usecases.inputs import content_digest, rounded

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,79}$")  # a batch or job name (Step Functions' own)
_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")  # one file name, no folders, no '..' start


class BadItem(FaceDedupError, ValueError):
    """The item is not what the map builds (hostile or misconfigured input); the message
    quotes the value escaped and truncated."""


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _name(value: object, what: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise BadItem(f"{what} {_shown(value)} is not a valid name")
    return value


def part_key(tenant: str, job: str, first_row: int) -> str:
    return f"{PARTS_PREFIX}/{tenant}/{job}/part-{first_row:09d}.json"


def vectors_key(tenant: str, job: str, first_row: int, last_row: int) -> str:
    """The part's rows, idempotency keys and templates alone (npz): what the join stage reads
    of every earlier part, without the crops. Its name gives its lowest and highest row, so the
    join knows from the listing which parts can hold a chunk's rows."""
    return f"{PARTS_PREFIX}/{tenant}/{job}/vectors-{first_row:09d}-{last_row:09d}.npz"


_VECTORS = re.compile(r"vectors-(\d{9})-(\d{9})\.npz")


def vectors_span(key: str) -> tuple[int, int] | None:
    """(lowest row, highest row) of a vectors object's key; None for any other key."""
    found = _VECTORS.fullmatch(key.rpartition("/")[2])
    return (int(found.group(1)), int(found.group(2))) if found else None


def vectors_body(entries: list[dict[str, Any]]) -> bytes:
    """Every row of a part (rejected ones too: the join tells a gap from them), whether it was
    analysed, its idempotency key ("" when none) and its template (zeros when none)."""
    import io

    templates = [e for e in entries if e.get("outcome") == "analysed"]
    dim = len(base64.b64decode(templates[0]["embedding"])) // 4 if templates else 0
    matrix = np.zeros((len(entries), dim), dtype=np.float32)
    for n, entry in enumerate(entries):
        if entry.get("outcome") == "analysed":
            matrix[n] = np.frombuffer(base64.b64decode(entry["embedding"]), dtype="<f4")
    out = io.BytesIO()
    np.savez(
        out,
        rows=np.array([int(e["row"]) for e in entries], dtype=np.int64),
        analysed=np.array([e.get("outcome") == "analysed" for e in entries], dtype=np.bool_),
        keys=np.array([str(e.get("key") or "") for e in entries], dtype=np.str_),
        vectors=matrix,
    )
    return out.getvalue()


@dataclass
class RowsResult:
    rows: int = 0
    analysed: int = 0
    rejected: dict[int, str] = field(default_factory=dict)  # manifest row -> reason code
    part: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "analysed": self.analysed,
            "rejected": {str(row): reason for row, reason in sorted(self.rejected.items())},
            "part": self.part,
        }


def _row(item: object) -> tuple[int, object, object]:
    """(manifest row, file, application id) of one map item, the row number validated."""
    if not isinstance(item, dict):
        raise BadItem(f"item {_shown(item)} is not an object")
    row = item.get("row")
    if not isinstance(row, int) or isinstance(row, bool) or not 0 <= row < 10**9:
        raise BadItem(f"row {_shown(row)} is not a manifest row number")
    return row, item.get("file"), item.get("application_id")


def _rejected(row: int, reason: Reason, message: str) -> dict[str, Any]:
    return {"row": row, "outcome": "rejected", "reason": reason.value, "message": message}


def _template(template: FaceTemplate, crop_png: Callable[[NDArray[np.uint8]], bytes]) -> dict[str, Any]:
    vector = np.ascontiguousarray(template.embedding, dtype="<f4")
    return {
        "outcome": "analysed",
        "model_pack": template.model_pack,
        "embedding": base64.b64encode(vector.tobytes()).decode("ascii"),
        "aligned_png": base64.b64encode(crop_png(template.aligned_crop)).decode("ascii"),
        "box": [float(v) for v in template.box],
        "measures": rounded(template.measures),
        "notes": list(template.notes),
        "image_format": template.image_format,
        "faces_found": template.faces_found,
        "rotation_degrees": template.rotation_degrees,
    }


def analyse_rows(
    *,
    service: DedupService,
    uploads: BlobStore,
    parts: BlobStore,
    tenant: object,
    batch: object,
    job: object,
    items: list[object],
) -> RowsResult:
    """Analyse one item's manifest rows and write them as one part (module docstring)."""
    tenant_name = valid_tenant(tenant)
    batch_name, job_name = _name(batch, "batch"), _name(job, "job")
    if not items or len(items) > MAX_ROWS:
        raise BadItem(f"{len(items)} rows in one item; 1..{MAX_ROWS}")
    rows = [_row(item) for item in items]
    if len({row for row, _, _ in rows}) != len(rows):
        raise BadItem("a manifest row appears twice in one item")
    _manifest_within_limit(uploads, tenant_name, batch_name)
    service = service.for_tenant(tenant_name)
    result = RowsResult(rows=len(rows))
    written: list[dict[str, Any]] = []
    for row, file, app in rows:
        entry = _analyse(service, uploads, tenant_name, batch_name, row, file, app)
        if entry["outcome"] == "rejected":
            result.rejected[row] = entry["reason"]
        else:
            result.analysed += 1
        written.append(entry)
    written.sort(key=lambda entry: int(entry["row"]))
    body = {"tenant": tenant_name, "batch": batch_name, "job": job_name, "rows": written}
    result.part = part_key(tenant_name, job_name, int(written[0]["row"]))
    # the same keys on a retry: the part is replaced whole, never duplicated
    first, last = int(written[0]["row"]), int(written[-1]["row"])
    parts.put(
        vectors_key(tenant_name, job_name, first, last), vectors_body(written), "application/octet-stream"
    )
    parts.put(result.part, json.dumps(body, separators=(",", ":")).encode("utf-8"), "application/json")
    return result


def _manifest_within_limit(uploads: BlobStore, tenant: str, batch: str) -> None:
    """A manifest over MANIFEST_MAX_BYTES fails every item at once (its size from a one-byte
    ranged read): the job stops in the map's first items instead of analysing every row and
    failing only at prepare, which refuses to count it."""
    try:
        uploads.get_limited(f"{UPLOAD_PREFIX}/{tenant}/{batch}/{MANIFEST_NAME}", 0)
    except NotFound:
        return  # the map read it; prepare names it if it went missing since
    except BlobTooLarge as exc:
        if exc.measured is not None and exc.measured > MANIFEST_MAX_BYTES:
            raise BadItem(
                f"the manifest is {int(exc.measured)} bytes; a bulk job takes at most {MANIFEST_MAX_BYTES}"
            ) from None


def _analyse(
    service: DedupService, uploads: BlobStore, tenant: str, batch: str, row: int, file: object, app: object
) -> dict[str, Any]:
    name = file.strip() if isinstance(file, str) else file
    if not isinstance(name, str) or not _FILE.fullmatch(name) or name == MANIFEST_NAME:
        return _rejected(
            row, Reason.NOT_A_FILE, f"manifest row {row}: file {_shown(file)} is not a file name"
        )
    application: str | None = None
    if isinstance(app, str) and app.strip():
        try:
            application = valid_application_id(app.strip())
        except InvalidIdentifier:
            return _rejected(
                row, Reason.INVALID_APPLICATION_ID, f"manifest row {row}: the application id is not valid"
            )
    source = f"{UPLOAD_PREFIX}/{tenant}/{batch}/{name}"
    try:  # the photo size limit before its bytes are held (a ranged read on S3)
        data = uploads.get_limited(source, service.config.max_input_bytes)
    except NotFound:
        return _rejected(row, Reason.UNREADABLE, f"manifest row {row}: no object {name!r} in the batch")
    except BlobTooLarge as exc:
        return _rejected(row, Reason.TOO_LARGE, f"manifest row {row}: {exc.message}")
    digest = content_digest(data)
    ref = InputRef(source, application)
    entry: dict[str, Any] = {
        "row": row,
        "source": source,
        "application_id": application,
        "sha256": digest,
        "key": service.idempotency_key(ref, digest),
    }
    analysis = service.analyze(data)
    if isinstance(analysis, FaceTemplate):
        # encoded by the engine that made it (the port's crop_png): no image library here
        return entry | _template(analysis, service.engine.crop_png)
    return entry | {
        "outcome": "rejected",
        "reason": analysis.reason.value,
        "message": analysis.message,
        "measures": rounded(analysis.measures),
    }


def template_of(entry: dict[str, Any]) -> FaceTemplate | None:
    """The analysis a part keeps for an "analysed" row, as the engine returned it (what the
    ordered step registers); None for a rejected row."""
    if entry.get("outcome") != "analysed":
        return None
    import cv2

    crop = cv2.imdecode(np.frombuffer(base64.b64decode(entry["aligned_png"]), np.uint8), cv2.IMREAD_COLOR)
    if crop is None:
        raise BadItem(f"row {_shown(entry.get('row'))}: its aligned crop is not a PNG")
    box = tuple(float(v) for v in entry["box"])
    return FaceTemplate(
        embedding=np.frombuffer(base64.b64decode(entry["embedding"]), dtype="<f4").astype(np.float32),
        model_pack=str(entry["model_pack"]),
        aligned_crop=np.ascontiguousarray(cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)),
        box=(box[0], box[1], box[2], box[3]),
        measures={str(k): float(v) for k, v in entry["measures"].items()},
        notes=tuple(str(n) for n in entry["notes"]),
        image_format=str(entry["image_format"]),
        faces_found=int(entry["faces_found"]),
        rotation_degrees=int(entry["rotation_degrees"]),
    )


@dataclass
class Parts:
    """A job's analysed rows in manifest order, and the rows no part holds."""

    rows: list[dict[str, Any]]
    missing: list[int]


def load_parts(parts: BlobStore, *, tenant: str, job: str, total_rows: int) -> Parts:
    """Every part of the job, merged in manifest order (rows 0 .. total_rows - 1)."""
    tenant, job = valid_tenant(tenant), _name(job, "job")
    keys = getattr(parts, "keys", None)
    if keys is None:
        raise BadItem("this blob store cannot list a job's parts")
    found: dict[int, dict[str, Any]] = {}
    for key in sorted(k for k in keys(f"{PARTS_PREFIX}/{tenant}/{job}/") if _is_part(k)):
        body = json.loads(parts.get(key))
        if body.get("tenant") != tenant or body.get("job") != job:
            raise BadItem(f"part {_shown(key)} belongs to another job")
        for entry in body["rows"]:
            found[int(entry["row"])] = entry
    return Parts(
        rows=[found[row] for row in range(total_rows) if row in found],
        missing=[row for row in range(total_rows) if row not in found],
    )


def _is_part(key: str) -> bool:
    """A part (JSON), not the job's other objects (vectors, gallery, candidates) beside it."""
    name = key.rpartition("/")[2]
    return name.startswith("part-") and name.endswith(".json")

"""Bulk de-duplication in the cloud, second half: the join and the ordered decide steps that
make a bulk job ENROL and open cases exactly as importing its manifest's rows one by one in
order would (the local bulk import, bulk.py, is the reference; infra: constructs/bulk_import.py).

After the analysis map (cloud_bulk.py) has written every part:

1. `prepare` (one Lambda): counts the manifest's rows, snapshots the tenant's gallery (the
   records the index holds, from the record store) as shards of ids + templates in the faces
   bucket (KMS), sets the join's threshold (the review threshold at that gallery size: the
   lowest any row can be searched with, as it only grows) and plans the chunks.
2. `join_chunk` (a Distributed Map over the chunks, in any order, bounded concurrency): one
   chunk's templates against the gallery snapshot, every earlier chunk's templates and each
   other, with the local bulk's blocked join (adapters/self_join.py: int8 tiles, float32
   rescoring), streamed one block at a time (memory: the chunk, one block of at most
   `BLOCK` templates and one tile of scores). It writes only the pairs at or above the
   threshold (row, earlier row or existing record id, score) and stops on a gap (a row no
   part holds): `BulkGap`, so nothing is decided.
3. `decide` (a Step Functions loop): the rows in manifest order, registered by the service's own
   `register` (the ingest's and import's use case: same outcomes, cases, notifications,
   idempotency keys) with the index's searches answered from the chunk's pairs
   (self_join.CandidateAnswers behind self_join.AnsweredIndex, in front of the real index:
   anything they cannot be sure of is the real index's own search). It returns where it
   stopped (it stops early when its Lambda's time runs short): the loop's checkpoint. A retry
   or a resumed run re-registers nothing: `register` finds each decided row's import item.
4. `finish` (once the loop is done): the job's objects in the faces bucket are deleted (copies
   of templates and crops that erasure would not reach; a lifecycle rule expires what a job
   that never finished left).

Rows are numbered as the map numbered them (`$$.Map.Item.Index`, manifest order). A row that
failed analysis is registered as that rejection in its place (persisted like `import`'s); a
row rejected before its photo was read (bad name, no such object) is reported with its reason
and not persisted, as `import` reports a file it could not read. Results and logs hold row
numbers, counts and reason codes only.
"""

from __future__ import annotations

import base64
import csv
import io
import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from face_dedup.adapters.self_join import AnsweredIndex, CandidateAnswers, join_across, join_within
from face_dedup.analysis import Rejection
from face_dedup.bulk_keys import MANIFEST_MAX_BYTES, MANIFEST_NAME, PARTS_PREFIX, UPLOAD_PREFIX
from face_dedup.cloud_bulk import BadItem, _name, part_key, template_of, vectors_span
from face_dedup.errors import BlobTooLarge, FaceDedupError, NotFound, Reason
from face_dedup.identifiers import tenant as valid_tenant
from face_dedup.outcomes import Outcome
from face_dedup.ports import BlobStore, IndexEntry
from face_dedup.service import SYSTEM_ACTOR, DedupService, InputRef
from face_dedup.usecases.inputs import content_digest

CHUNK = 4096  # manifest rows joined, then decided, together (bulk.CHUNK)
BLOCK = 65_536  # earlier templates held at once while joining (64k x 128-d float32: 32 MB)
SHARD = 65_536  # gallery templates per snapshot object
STOP_MARGIN_MS = 60_000  # decide stops when less Lambda time than this is left (a row < 1 s)
READERS = 8  # parallel GETs of the earlier parts' templates (I/O bound)
_INDEXED = {Outcome.ENROLLED, Outcome.REVIEW, Outcome.DUPLICATE}  # commit adds these to the index


class BulkGap(FaceDedupError):
    """A manifest row no part holds (an item of the analysis map failed past its retries):
    nothing at or past it is decided."""

    def __init__(self, row: int) -> None:
        super().__init__(f"manifest row {row} was not analysed (no part holds it): the job stops before it")
        self.row = row


def _job_prefix(tenant: str, job: str) -> str:
    return f"{PARTS_PREFIX}/{tenant}/{job}/"


def gallery_key(tenant: str, job: str, shard: int | None = None) -> str:
    name = "gallery.json" if shard is None else f"gallery-{shard:06d}.npz"
    return _job_prefix(tenant, job) + name


def candidates_key(tenant: str, job: str, first: int) -> str:
    return _job_prefix(tenant, job) + f"candidates-{first:09d}.npz"


def _npz(**arrays: NDArray[Any]) -> bytes:
    out = io.BytesIO()
    np.savez(out, **arrays)  # type: ignore[arg-type]
    return out.getvalue()


def _load(data: bytes) -> dict[str, NDArray[Any]]:
    with np.load(io.BytesIO(data), allow_pickle=False) as found:  # no pickles from storage
        return {name: found[name] for name in found.files}


def chunks(total: int, size: int | None = None) -> list[dict[str, int]]:
    size = size or CHUNK
    return [{"first": first, "last": min(first + size, total)} for first in range(0, total, size)]


def chunk_of(row: int, total: int, size: int | None = None) -> tuple[int, int]:
    size = size or CHUNK
    first = (row // size) * size
    return first, min(first + size, total)


# -- 1. prepare ------------------------------------------------------------------------------


def manifest_rows(uploads: BlobStore, tenant: str, batch: str) -> int:
    """Data rows of the batch's manifest (header excluded, blank lines skipped), as the
    Distributed Map's CSV reader numbers them."""
    data = uploads.get_limited(f"{UPLOAD_PREFIX}/{tenant}/{batch}/{MANIFEST_NAME}", MANIFEST_MAX_BYTES)
    # counted as it is parsed: a list of every row would take ~50x the manifest's size (a
    # 256 MB manifest of short rows: many GB, past the function's memory)
    text = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig", newline="")
    return max(0, sum(1 for row in csv.reader(text) if row) - 1)


def prepare(
    *, service: DedupService, uploads: BlobStore, parts: BlobStore, tenant: object, batch: object, job: object
) -> dict[str, Any]:
    """Step 1 (module docstring). Returns the plan the state machine carries (no personal data)."""
    tenant_name = valid_tenant(tenant)
    batch_name, job_name = _name(batch, "batch"), _name(job, "job")
    service = service.for_tenant(tenant_name)
    # the rows the map numbered: the manifest's count, or more if the map counted a line this
    # count skips (a row no part holds is then a gap, refused; none is silently left out)
    spans = [vectors_span(k) for k in parts.keys(_job_prefix(tenant_name, job_name))]
    highest = max((span[1] for span in spans if span is not None), default=-1)
    total = max(manifest_rows(uploads, tenant_name, batch_name), highest + 1)
    size, shards = 0, 0
    ids: list[str] = []
    vectors: list[NDArray[np.float32]] = []

    def flush() -> None:
        nonlocal shards
        if ids:
            body = _npz(ids=np.array(ids, dtype=np.str_), vectors=np.stack(vectors).astype(np.float32))
            parts.put(gallery_key(tenant_name, job_name, shards), body, "application/octet-stream")
            shards += 1
            ids.clear()
            vectors.clear()

    for record in service.store.iter_templates(tenant=tenant_name):
        if record.model_pack != service.model_pack:
            continue
        ids.append(record.record_id)
        vectors.append(np.asarray(record.embedding, dtype=np.float32))
        size += 1
        if len(ids) == SHARD:
            flush()
    flush()
    threshold = float(service.thresholds(size).review)
    snapshot = {"size": size, "shards": shards, "threshold": threshold, "model_pack": service.model_pack}
    parts.put(gallery_key(tenant_name, job_name), json.dumps(snapshot).encode(), "application/json")
    return {
        "tenant": tenant_name,
        "batch": batch_name,
        "job": job_name,
        "total": total,
        "gallery": size,
        "chunks": chunks(total),
        "next": 0,
        "indexed": 0,
    }


# -- 2. join ---------------------------------------------------------------------------------


@dataclass
class _Rows:
    rows: NDArray[np.int64]
    analysed: NDArray[np.bool_]
    keys: NDArray[np.str_]
    vectors: NDArray[np.float32]
    part: str  # the part (JSON) that holds these rows


def _listing(parts: BlobStore, tenant: str, job: str, last: int) -> list[tuple[str, int, int]]:
    """The job's vectors objects that hold a row before `last`: (key, lowest row, highest row),
    read from their names (cloud_bulk.vectors_key), in row order."""
    found = []
    for key in parts.keys(_job_prefix(tenant, job)):
        span = vectors_span(key)
        if span is not None and span[0] < last:
            found.append((key, *span))
    return sorted(found, key=lambda entry: entry[1])


def _read_parts(parts: BlobStore, tenant: str, job: str, keys: list[str]) -> Iterator[_Rows]:
    """The parts' rows and templates, in the order given, read READERS at a time (a window
    ahead at most: bounded memory)."""

    def read(key: str) -> _Rows:
        found = _load(parts.get(key))
        span = vectors_span(key)
        assert span is not None
        first = span[0]
        return _Rows(
            found["rows"], found["analysed"], found["keys"], found["vectors"], part_key(tenant, job, first)
        )

    with ThreadPoolExecutor(max_workers=READERS, thread_name_prefix="parts") as pool:
        for start in range(0, len(keys), 4 * READERS):
            yield from pool.map(read, keys[start : start + 4 * READERS])


def _snapshot(parts: BlobStore, tenant: str, job: str) -> dict[str, Any]:
    try:
        found: dict[str, Any] = json.loads(parts.get(gallery_key(tenant, job)))
    except NotFound:
        raise BadItem("the job has no gallery snapshot: run its prepare step first") from None
    return found


def join_chunk(
    *, parts: BlobStore, tenant: object, job: object, first: object, last: object
) -> dict[str, Any]:
    """Step 2 for rows [first, last) (module docstring). Returns counts only."""
    tenant_name, job_name = valid_tenant(tenant), _name(job, "job")
    if not (isinstance(first, int) and isinstance(last, int) and 0 <= first < last):
        raise BadItem(f"chunk {_short(first)}..{_short(last)} is not a row range")
    snapshot = _snapshot(parts, tenant_name, job_name)
    threshold = float(snapshot["threshold"])
    seen = np.zeros(last, dtype=np.bool_)
    listing = _listing(parts, tenant_name, job_name, last)
    # 1. the parts that can hold the chunk's rows (their row range meets it): the queries
    mine: list[_Rows] = []
    pending: list[_Rows] = []  # their earlier rows, joined with the first block
    for found in _read_parts(parts, tenant_name, job_name, [k for k, _, hi in listing if hi >= first]):
        inside = found.rows < last
        seen[found.rows[inside]] = True
        here = (found.rows >= first) & inside
        if here.any():
            mine.append(_subset(found, here))
        before = (found.rows < first) & found.analysed
        if before.any():
            pending.append(_subset(found, before))
    chunk = _merge(mine)
    analysed = chunk.analysed
    q_rows, q_vectors = chunk.rows[analysed], chunk.vectors[analysed]
    pairs_earlier: list[
        tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.str_], NDArray[np.float32]]
    ] = []

    def join_block_of(block: list[_Rows]) -> None:
        merged = _merge(block)
        qi, ej, scores = join_across(merged.vectors, q_vectors, threshold)
        pairs_earlier.append((q_rows[qi], merged.rows[ej], merged.keys[ej], scores))

    # 2. every part wholly before the chunk, streamed: one block of templates held at a time
    block, held = pending, sum(len(b.rows) for b in pending)
    for found in _read_parts(parts, tenant_name, job_name, [k for k, _, hi in listing if hi < first]):
        seen[found.rows] = True
        if found.analysed.any():
            block.append(_subset(found, found.analysed))
            held += int(found.analysed.sum())
        if held >= BLOCK:
            join_block_of(block)
            block, held = [], 0
    if block:
        join_block_of(block)
    if not seen.all():  # a gap: nothing at or past it may be decided
        raise BulkGap(int(np.flatnonzero(~seen)[0]))
    # inside the chunk (j <= i: a row and the ones before it, as the local join)
    qi, qj, scores = join_within(q_vectors, threshold)
    pairs_earlier.append((q_rows[qi], q_rows[qj], chunk.keys[analysed][qj], scores))
    # against the gallery snapshot, one shard at a time
    g_rows, g_pos, g_ids, g_scores = [], [], [], []
    base = 0
    for shard in range(int(snapshot["shards"])):
        found_g = _load(parts.get(gallery_key(tenant_name, job_name, shard)))
        qi, gj, scores = join_across(found_g["vectors"], q_vectors, threshold)
        g_rows.append(q_rows[qi])
        g_pos.append(gj + base)
        g_ids.append(found_g["ids"][gj])
        g_scores.append(scores)
        base += len(found_g["ids"])
    e_rows = _cat([p[0] for p in pairs_earlier], np.int64)
    g_row_all = _cat(g_rows, np.int64)
    count = len(e_rows) + len(g_row_all)
    body = _npz(
        job_row=e_rows,
        job_earlier=_cat([p[1] for p in pairs_earlier], np.int64),
        job_key=np.concatenate([p[2] for p in pairs_earlier]).astype(np.str_)
        if pairs_earlier
        else np.empty(0, np.str_),
        job_score=_cat([p[3] for p in pairs_earlier], np.float32),
        gallery_row=g_row_all,
        gallery_pos=_cat(g_pos, np.int64),
        gallery_id=np.concatenate(g_ids).astype(np.str_) if g_ids else np.empty(0, np.str_),
        gallery_score=_cat(g_scores, np.float32),
        parts=np.array(sorted({r.part for r in mine}), dtype=np.str_),
        threshold=np.array([threshold], dtype=np.float64),
    )
    parts.put(candidates_key(tenant_name, job_name, first), body, "application/octet-stream")
    return {"first": first, "last": last, "rows": len(chunk.rows), "pairs": count}


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _subset(found: _Rows, mask: NDArray[np.bool_]) -> _Rows:
    return _Rows(found.rows[mask], found.analysed[mask], found.keys[mask], found.vectors[mask], found.part)


def _merge(found: list[_Rows]) -> _Rows:
    """Rows of several parts as one block, in row order."""
    if not found:
        return _Rows(
            np.empty(0, np.int64),
            np.empty(0, np.bool_),
            np.empty(0, np.str_),
            np.empty((0, 0), np.float32),
            "",
        )
    dim = max(f.vectors.shape[1] for f in found)
    rows = np.concatenate([f.rows for f in found])
    order = np.argsort(rows, kind="stable")
    vectors = np.concatenate(
        [f.vectors if f.vectors.shape[1] == dim else np.zeros((len(f.rows), dim), np.float32) for f in found]
    )
    return _Rows(
        rows[order],
        np.concatenate([f.analysed for f in found])[order],
        np.concatenate([f.keys for f in found]).astype(np.str_)[order],
        vectors[order],
        "",
    )


def _cat(arrays: list[NDArray[Any]], dtype: Any) -> NDArray[Any]:
    return np.concatenate(arrays).astype(dtype) if arrays else np.empty(0, dtype)


# -- 3. decide -------------------------------------------------------------------------------


def decide(
    *,
    service: DedupService,
    uploads: BlobStore,
    parts: BlobStore,
    plan: dict[str, Any],
    remaining_ms: Callable[[], int],
    crop_png: Callable[[NDArray[np.uint8]], bytes] | None = None,
    actor: str = SYSTEM_ACTOR,
) -> dict[str, Any]:
    """Step 3 from row `plan["next"]` to the end of its chunk, or until the Lambda's time runs
    short (module docstring). Returns the plan with `next` and `indexed` moved on, and this
    call's counts (outcomes and reason codes only)."""
    tenant_name, job_name = valid_tenant(plan.get("tenant")), _name(plan.get("job"), "job")
    total, start, indexed, gallery = (plan.get(k) for k in ("total", "next", "indexed", "gallery"))
    for name, value in (("total", total), ("next", start), ("indexed", indexed), ("gallery", gallery)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise BadItem(f"plan field {name} {_short(value)} is not a count")
    assert isinstance(total, int) and isinstance(start, int) and isinstance(indexed, int)
    assert isinstance(gallery, int)
    if start >= total:
        return plan | {"done": True}
    service = service.for_tenant(tenant_name)
    first, last = chunk_of(start, total)
    try:
        found = _load(parts.get(candidates_key(tenant_name, job_name, first)))
    except NotFound:
        raise BadItem(f"rows {first}..{last - 1} were not joined: no candidates for that chunk") from None
    entries: dict[int, dict[str, Any]] = {}
    for key in found["parts"]:
        body = json.loads(parts.get(str(key)))
        for entry in body["rows"]:
            if first <= int(entry["row"]) < last:
                entries[int(entry["row"])] = entry
    answers = _answers(service, found, entries, float(found["threshold"][0]))
    # rows decided before (a retry, a resumed run) are in the index already: the answers and
    # the expected partition size know them
    ids_before = answers.existing
    known = _already_indexed(service, found, entries, start)
    for row, record_id in known.items():
        answers.in_index(ids_before + row, record_id)
    # one record per idempotency key: a file named twice in the manifest is one record, counted once
    counted = {rid for row, rid in known.items() if row < start}
    ahead = {rid for row, rid in known.items() if row >= start} - counted  # an attempt that died
    _index_again(service, ahead)
    index = AnsweredIndex(service.index, answers, expected=gallery + indexed + len(ahead))
    registering = service.with_index(index, crop_png=crop_png)
    counts: dict[str, int] = {}
    reasons: dict[str, int] = {}
    row = start
    while row < last:
        if row > start and remaining_ms() < STOP_MARGIN_MS:
            break  # the loop calls again from here: nothing is half done
        entry = entries.get(row)
        if entry is None:
            raise BulkGap(row)
        outcome, reason, record = _decide_row(
            registering, uploads, index, ids_before, entry, actor, decided=(counted, ahead)
        )
        counts[outcome] = counts.get(outcome, 0) + 1
        if reason:
            reasons[reason] = reasons.get(reason, 0) + 1
        if record is not None and record not in counted:
            counted.add(record)
            indexed += 1
        row += 1
    return plan | {
        "next": row,
        "indexed": indexed,
        "done": row >= total,
        "last_call": {
            "rows": row - start,
            "outcomes": counts,
            "reasons": reasons,
            "answered": answers.answered,
            "fallbacks": answers.fallbacks,
        },
    }


def finish(*, parts: BlobStore, plan: dict[str, Any]) -> dict[str, Any]:
    """Step 4, once every row is decided: the job's own objects are deleted (every row's
    template and aligned crop in the parts, the gallery snapshot's templates, the pairs).
    They are copies of biometric data that erasure does not reach (it deletes a record's own
    prefix), so they must not outlive the job; what was registered is in the registry. A plan
    not yet decided to its end is refused: its parts are still needed."""
    tenant_name, job_name = valid_tenant(plan.get("tenant")), _name(plan.get("job"), "job")
    total, reached = plan.get("total"), plan.get("next")
    if not (isinstance(total, int) and isinstance(reached, int) and plan.get("done") is True):
        raise BadItem("the plan has no decided end: the job's parts are kept")
    if reached < total:
        raise BadItem(f"rows {reached}..{total - 1} are not decided: the job's parts are kept")
    return {"removed": parts.delete_prefix(_job_prefix(tenant_name, job_name))}


def _answers(
    service: DedupService,
    found: dict[str, NDArray[Any]],
    entries: dict[int, dict[str, Any]],
    threshold: float,
) -> CandidateAnswers:
    """The chunk's pairs as CandidateAnswers: the existing records it names first (in the
    snapshot's order), then the job's rows (row r at len(ids) + r)."""
    order = np.argsort(found["gallery_pos"], kind="stable")
    ids: list[str] = []
    local: dict[str, int] = {}
    for n in order:
        record_id = str(found["gallery_id"][n])
        if record_id not in local:
            local[record_id] = len(ids)
            ids.append(record_id)
    offset = len(ids)
    by_row: dict[int, tuple[list[int], list[float]]] = {}
    for row, record_id, score in zip(
        found["gallery_row"], found["gallery_id"], found["gallery_score"], strict=True
    ):
        js, scores = by_row.setdefault(offset + int(row), ([], []))
        js.append(local[str(record_id)])
        scores.append(float(score))
    for row, earlier, score in zip(found["job_row"], found["job_earlier"], found["job_score"], strict=True):
        js, scores = by_row.setdefault(offset + int(row), ([], []))
        js.append(offset + int(earlier))
        scores.append(float(score))
    vectors: dict[int, NDArray[np.float32]] = {}
    for row, entry in entries.items():
        if entry.get("outcome") == "analysed":
            vectors[offset + row] = np.frombuffer(base64.b64decode(entry["embedding"]), dtype="<f4").astype(
                np.float32
            )
    pairs = {
        row: (np.array(js, dtype=np.int64), np.array(scores, dtype=np.float32))
        for row, (js, scores) in by_row.items()
    }
    for row in vectors:  # a row with no pair at all: an empty answer, not a scan
        pairs.setdefault(row, (np.empty(0, np.int64), np.empty(0, np.float32)))
    return CandidateAnswers(
        tenant=service.tenant,
        model_pack=service.model_pack,
        threshold=threshold,
        ids=ids,
        pairs=pairs,
        vectors=vectors,
    )


def _already_indexed(
    service: DedupService, found: dict[str, NDArray[Any]], entries: dict[int, dict[str, Any]], start: int
) -> dict[int, str]:
    """Job rows already registered into the index (row -> record id): the earlier rows the
    chunk's pairs name, and this chunk's rows an earlier attempt decided."""
    keys: dict[int, str] = {
        int(r): str(k) for r, k in zip(found["job_earlier"], found["job_key"], strict=True) if k
    }
    for row, entry in entries.items():
        if entry.get("key"):
            keys[row] = str(entry["key"])
    known: dict[int, str] = {}
    for row, key in sorted(keys.items()):
        item = service.store.get_import_item(key)
        if item is not None and item.record_id and Outcome(item.outcome) in _INDEXED:
            known[row] = item.record_id
    return known


def _index_again(service: DedupService, record_ids: set[str]) -> None:
    """Records an attempt of this call that died registered: each is written to the index again
    (the same id overwrites it), as the workflow's complete_staged does. register commits the
    store before the index, and finds a committed row done: a retry after a failed index write
    (a throttle is retried from the same checkpoint) would otherwise leave that face out of
    every later search. The store's template is written; an erased record is not restored."""
    if not record_ids:
        return
    found = service.store.describe_records(sorted(record_ids))
    entries = [
        IndexEntry(record.record_id, record.tenant, record.model_pack, record.embedding)
        for record in found.values()
        if (record.tenant, record.model_pack) == (service.tenant, service.model_pack)
    ]
    if entries:
        service.index.add(entries)


def _decide_row(
    service: DedupService,
    uploads: BlobStore,
    index: AnsweredIndex,
    offset: int,
    entry: dict[str, Any],
    actor: str,
    *,
    decided: tuple[set[str], ...],
) -> tuple[str, str | None, str | None]:
    """(outcome, reason, the row's record id if it is in the index: decided now or before).
    `decided`: the records registered before this row (by earlier calls or rows), in sets."""
    row = int(entry["row"])
    if not entry.get("sha256"):  # nothing was read (bad name, no such object): reported only
        return Outcome.REJECTED.value, str(entry.get("reason") or Reason.INTERNAL_ERROR.value), None
    ref = InputRef(str(entry["source"]), entry.get("application_id"))
    digest = str(entry["sha256"])
    if entry.get("outcome") != "analysed":
        rejection = Rejection(
            Reason(str(entry["reason"])),
            str(entry.get("message") or ""),
            {str(k): float(v) for k, v in (entry.get("measures") or {}).items()},
        )
        item = service.register(ref, digest, rejection, None, actor)
        return item.outcome.value, item.reason, None
    template = template_of(entry)
    assert template is not None
    if template.model_pack != service.model_pack:  # the deployment changed pack mid-job
        raise BadItem(
            f"manifest row {row} was analysed with model pack {_short(template.model_pack)}; this "
            f"deployment registers with {service.model_pack}: it and the rows after it are not decided"
        )
    data: bytes | None
    try:  # the photo kept for officers, as import keeps it; the bytes analysed, or none
        data = uploads.get_limited(ref.source, service.config.max_input_bytes)
    except (NotFound, BlobTooLarge):
        data = None
    if data is not None and content_digest(data) != digest:
        data = None  # replaced since it was analysed: the template decides, no other photo is kept
    answers = index.answers
    answers.expect(offset + row)
    try:
        item = service.register(ref, digest, template, data, actor)
    finally:
        answers.expect(None)
    # not a row found done (a retry, a file named twice)
    fresh = not any(item.record_id in records for records in decided)
    if item.outcome is Outcome.ENROLLED and fresh and index.changed_since_counted():
        # no registry lock in the cloud: a face enrolled since this row's search may be the
        # same person; the live enrollment's own re-check ran before this row was indexed.
        # Checked as the workflow's complete does (a real search); needed only then.
        service.recheck_registered(ref, digest, template, actor)
    indexed = item.record_id if item.record_id and Outcome(item.outcome) in _INDEXED else None
    return item.outcome.value, item.reason, indexed

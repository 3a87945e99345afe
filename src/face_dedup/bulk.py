"""Bulk import: the same outcomes as importing the photos one by one in input order, with the
de-duplication searches done as a blocked self-join (tiles of matrix products, BLAS) instead
of one scan of the whole gallery per photo.

What "one by one in order" means, and how it is kept:
- Photo i is compared with the photos before it that were enrolled or held (a case), and with
  the registry as it was when the run started; a rejected photo is never in the gallery. Which
  of the earlier photos are in the gallery is only known after they are decided, so the join
  computes every pair (j <= i) scoring at or above the lowest review threshold the chunk can
  use (the one at the gallery size before it: it only grows as photos are added), and the
  answer to photo i's search keeps the pairs whose photo j is in the index at that moment (the
  index tells: `added` / `removed`, as the service writes enrolled and held photos).
- The decision itself is the service's own: `register` runs for each photo in order, exactly as
  `run_import` calls it; only the index's scan is replaced by the precomputed answer
  (embedded_index.PrecomputedAnswers). The thresholds still come from the gallery size at
  each photo (they grow with it); a search with a lower threshold than the join's, another
  vector than the photo being registered, or another process writing to the index meanwhile
  falls back to the index's own scan: slower, never different.
- Scores are rescored per pair (one float32 dot product each), so the decisions see the
  index's numbers to float32 rounding (~1e-7; the index's own two scans differ by as much).

Photos are analysed in parallel (as `run_import` does), a window ahead; each chunk (4,096
photos, fewer when their files exceed 256 MB together) is joined against every earlier
template in tiles (memory: the templates, 512 bytes each, plus one tile
of scores), then registered. An interrupted run resumes like an import: photos already
registered are recognised by their idempotency key and are in the registry the join starts from.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import IO

from face_dedup.analysis import FaceTemplate
from face_dedup.importer import ImportSummary, InputSpec, ReportLine, _Pending, _prepare, _register
from face_dedup.ports import BulkAnswering, BulkAnswers
from face_dedup.service import SYSTEM_ACTOR, DedupService

CHUNK = 4096  # photos analysed, joined and registered together, at most
HELD_BYTES = 256 << 20  # ... and fewer when their files hold more than this (phone photos: ~60)


class BulkNotSupported(ValueError):
    """Bulk import answers searches from the embedded index; this registry uses another."""


def run_bulk_import(
    service: DedupService,
    inputs: list[InputSpec],
    *,
    report: Callable[[], IO[str]] | None = None,
    workers: int = 1,
    on_progress: Callable[[ReportLine], None] | None = None,
    chunk: int = CHUNK,
    held_bytes: int = HELD_BYTES,
    actor: str = SYSTEM_ACTOR,
) -> tuple[ImportSummary, BulkAnswers]:
    """As importer.run_import (same report lines, same outcomes), with the searches answered by
    the blocked self-join, on the service's embedded index."""
    index = service.index
    if not isinstance(index, BulkAnswering):
        raise BulkNotSupported(f"bulk import needs the embedded index, not {type(index).__name__}")
    tenant, pack = service.tenant, service.model_pack
    threshold = service.thresholds().review  # set again for each chunk
    summary = ImportSummary()
    started = time.perf_counter()
    answers = index.bulk_answers(tenant, pack, threshold)  # the embedded index's self-join
    handle = None
    try:
        handle = report() if report else None  # the entry point's opener (as run_import)
        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="analyse") as pool:
            batch: list[_Pending] = []
            held = 0  # bytes of the photos in `batch` (kept until registered: the photo store)
            # A window of photos is read and analysed ahead, as in run_import (bounded memory).
            for pending in _prepare(service, inputs, pool, max(64, 8 * max(1, workers))):
                batch.append(pending)
                held += len(pending.data or b"")
                if len(batch) == chunk or held >= held_bytes:
                    _register_chunk(service, answers, batch, summary, handle, on_progress, actor)
                    batch, held = [], 0
            _register_chunk(service, answers, batch, summary, handle, on_progress, actor)
    finally:
        index.stop_answering()
        if handle:
            handle.close()
    summary.seconds = time.perf_counter() - started
    return summary, answers


def _register_chunk(
    service: DedupService,
    answers: BulkAnswers,
    batch: list[_Pending],
    summary: ImportSummary,
    handle: IO[str] | None,
    on_progress: Callable[[ReportLine], None] | None,
    actor: str,
) -> None:
    first = answers.size
    rows: list[int | None] = []
    for pending in batch:
        row = None
        if pending.done is None and pending.analysis is not None:
            try:
                analysis = pending.analysis.result()
            except Exception:  # _register reports it, as run_import does
                analysis = None
            if isinstance(analysis, FaceTemplate):
                row = answers.append(analysis.embedding)
        rows.append(row)
    if answers.size > first:
        answers.join(first, service.thresholds().review)
    for pending, row in zip(batch, rows, strict=True):
        answers.expect(row)
        line = _register(service, pending, actor)
        answers.expect(None)
        summary.total += 1
        summary.outcomes[line.item.outcome.value] += 1
        if line.item.reason:
            summary.reasons[line.item.reason] += 1
        summary.resumed += int(line.resumed)
        if handle is not None:
            handle.write(json.dumps(line.as_dict(), ensure_ascii=False) + "\n")
            handle.flush()
        if on_progress:
            on_progress(line)

"""Embedded exact k-NN index: an in-memory float32 matrix per (tenant, model pack), persisted
in SQLite.

Why exact: de-duplication needs every true duplicate above the threshold, and graph indexes
lose some as the gallery grows (../shared/notes/vector-search.md). One exact query over N
128-d vectors reads N x 512 bytes: about 20-30 ms at 1M faces on this machine (see
BENCHMARKS.md). Memory: 512 MB per million faces.

Threshold searches on a large partition scan a compact int8 copy first (`compact_scan.py`: a
quarter of the bytes; sealed blocks of 64k rows through onnxruntime's MatMulNBits GEMV kernel,
the rest through its integer GEMM) and rescore in float32 every vector whose compact score lies
within the proven quantisation-error margin of the threshold: the same answer as the float32
scan, nothing above the threshold lost. Memory: about +290 MB per million (the int8 codes and
the kernel's prepacked copy of them; BENCHMARKS.md).

Persistence: every add/delete is a SQLite transaction (WAL, secure_delete so an erased
template is overwritten on disk), and the matrix is rebuilt from it on open.

Several processes on one data dir (imports, `serve`): each add/delete also appends the record id
to a change log, and every search/count first applies the other processes' changes since the
last one it saw (`PRAGMA data_version` tells, for the price of one call, whether there are any).
Searching under the registry lock (`registry_lock.py`) therefore sees every face committed
before it.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np
from numpy.typing import NDArray

from face_dedup.adapters import compact_scan
from face_dedup.adapters.self_join import JoinAnswers
from face_dedup.adapters.sqlite_files import (
    checkpoint_truncate,
    connect,
    integrity_problems,
    storage_error,
)
from face_dedup.domain import template_problem
from face_dedup.errors import StorageError
from face_dedup.ports import BulkAnswering, Hit, IndexEntry, RecordStore, VectorIndex

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS vectors (
    record_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    model_pack TEXT NOT NULL,
    dim INTEGER NOT NULL,
    vector BLOB NOT NULL
);
-- Which record ids changed, in order (ids only, never a vector): how other processes catch up.
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    record_id TEXT NOT NULL
);
-- 'rebuilding': this file replaced a damaged one and is still being refilled from the store.
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

_KEEP_CHANGES = 100_000  # older entries are pruned; a process further behind reloads everything


class PrecomputedAnswers(Protocol):
    """Search answers worked out in advance for a batch (bulk import's blocked self-join,
    bulk.py). The index asks it first and scans only when it cannot answer (None)."""

    def answer(
        self, query: NDArray[np.float32], *, tenant: str, model_pack: str, k: int, min_score: float | None
    ) -> list[Hit] | None: ...

    def added(self, record_id: str, tenant: str, model_pack: str, vector: NDArray[np.float32]) -> None: ...

    def removed(self, record_id: str) -> None: ...

    def changed_elsewhere(self) -> None:
        """Another process changed the index: the advance answers no longer hold."""


_Answers = TypeVar("_Answers", bound=PrecomputedAnswers)


class _Partition:
    def __init__(self, dim: int, block_rows: int) -> None:
        self.dim = dim
        self.matrix: NDArray[np.float32] = np.empty((0, dim), dtype=np.float32)
        self.compact = compact_scan.CompactCopy(dim, block_rows)  # row for row with `matrix`
        self.size = 0
        self.ids: list[str] = []
        self.rows: dict[str, int] = {}

    def bulk_load(self, ids: list[str], matrix: NDArray[np.float32]) -> None:
        if self.size:
            raise RuntimeError("bulk_load is for an empty partition")
        self.matrix = np.array(matrix, dtype=np.float32, copy=True)  # writable, owned
        self.compact.load(self.matrix)
        self.ids = list(ids)
        self.rows = {record_id: row for row, record_id in enumerate(ids)}
        self.size = len(ids)

    def upsert(self, record_id: str, vector: NDArray[np.float32]) -> None:
        row = self.rows.get(record_id)
        if row is not None:
            self.matrix[row] = vector
            self.compact.set_row(row, vector)
            return
        if self.size == len(self.matrix):
            grown = np.empty((max(1024, 2 * len(self.matrix)), self.dim), dtype=np.float32)
            grown[: self.size] = self.matrix[: self.size]
            self.matrix = grown
            self.compact.grow(len(grown), self.size)
        self.matrix[self.size] = vector
        self.compact.set_row(self.size, vector)
        self.rows[record_id] = self.size
        self.ids.append(record_id)
        self.size += 1

    def remove(self, record_id: str) -> bool:
        row = self.rows.pop(record_id, None)
        if row is None:
            return False
        last = self.size - 1
        self.compact.remove_row(row, last)  # the same move in the codes
        if row != last:  # move the last vector into the hole
            self.matrix[row] = self.matrix[last]
            moved = self.ids[last]
            self.ids[row] = moved
            self.rows[moved] = row
        self.ids.pop()
        self.matrix[last] = 0.0
        self.size -= 1
        return True


class ExactVectorIndex(VectorIndex, BulkAnswering):
    def __init__(
        self,
        path: Path | None,
        *,
        compact_from: int = compact_scan.COMPACT_FROM,
        block_rows: int = compact_scan.BLOCK_ROWS,
    ) -> None:
        """`path=None` keeps everything in memory (tests, one-off searches). Threshold searches
        on partitions of at least `compact_from` vectors scan the compact copy first (0: always,
        which the contract tests use to check it loses nothing), in sealed blocks of
        `block_rows` rows (tests lower it so that blocks seal at their sizes)."""
        self._compact_from = compact_from
        self._block_rows = block_rows
        self._answers: PrecomputedAnswers | None = None
        self._lock = threading.RLock()
        self._path = path
        self._db = connect(path)
        self._partitions: dict[tuple[str, str], _Partition] = {}
        self._where: dict[str, tuple[str, str]] = {}
        self.needs_rebuild = False  # set by open_index when it had to start from nothing
        self._seen = 0  # the last change-log entry applied
        self._version = -1  # PRAGMA data_version when the last refresh ran
        self._identity = _identity(path)
        try:
            self._db.executescript(_SCHEMA)
            self._load()
        except sqlite3.Error as exc:
            self._db.close()
            raise storage_error(path or Path(":memory:"), exc) from None

    def _reopen_if_replaced(self) -> None:
        """`doctor` (or another process finding the file damaged) replaces index.sqlite with a
        rebuilt one. A connection opened before keeps reading and writing the deleted file, and
        this process would never see another's enrollment again: open the new file instead."""
        if self._path is None:
            return
        now = _identity(self._path)
        if now is None or now == self._identity:  # missing: being rebuilt under the lock
            return
        fresh = connect(self._path)
        try:
            fresh.executescript(_SCHEMA)
            if fresh.execute("SELECT 1 FROM meta WHERE key = 'rebuilding'").fetchone():
                fresh.close()  # still being refilled: its searches would miss faces; look again later
                return
        except sqlite3.Error as exc:
            fresh.close()
            raise storage_error(self._path, exc) from None
        log.warning("%s was replaced (rebuilt by another process): reopening it", self._path)
        self._db.close()
        self._db = fresh
        self._identity = now
        try:
            self._load()
        except sqlite3.Error as exc:
            raise storage_error(self._path, exc) from None

    def set_rebuilding(self, rebuilding: bool) -> None:
        """Mark this file as still being refilled (other processes keep their old one meanwhile)."""
        with self._lock, self._db:
            if rebuilding:
                self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('rebuilding', '1')")
            else:
                self._db.execute("DELETE FROM meta WHERE key = 'rebuilding'")

    def _load(self) -> None:
        """Rebuild the matrices from SQLite in one pass per partition (1M rows in seconds), in
        one read transaction, so the change-log position matches the rows read."""
        groups: dict[tuple[str, str, int], tuple[list[str], list[bytes]]] = defaultdict(lambda: ([], []))
        for old in self._partitions.values():  # replaced below: their blocks would be built for nothing
            old.compact.stop()
        self._partitions.clear()
        self._where.clear()
        self._version = self._data_version()
        self._db.execute("BEGIN")
        try:
            for record_id, tenant, model_pack, dim, blob in self._db.execute(
                "SELECT record_id, tenant, model_pack, dim, vector FROM vectors ORDER BY rowid"
            ):
                ids, blobs = groups[(tenant, model_pack, dim)]
                ids.append(record_id)
                blobs.append(blob)
            self._seen = int(self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()[0])
        finally:
            self._db.execute("COMMIT")
        for (tenant, model_pack, dim), (ids, blobs) in groups.items():
            matrix = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(ids), dim)
            norms = np.linalg.norm(matrix, axis=1)
            if not np.all(np.abs(norms - 1.0) <= 1e-3):  # SQLite has no checksums: bytes can rot
                raise sqlite3.DatabaseError("database disk image is malformed (a vector is not unit length)")
            self._partition(tenant, model_pack, dim).bulk_load(ids, matrix)
            self._where.update(dict.fromkeys(ids, (tenant, model_pack)))

    def _data_version(self) -> int:
        return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    def refresh(self) -> None:
        """Apply what other processes added or deleted since the last refresh (nothing to read
        when no other connection committed: `data_version` is unchanged)."""
        with self._lock:
            self._reopen_if_replaced()
            version = self._data_version()
            if version == self._version:
                return
            self._version = version
            self._db.execute("BEGIN")
            try:
                oldest = self._db.execute("SELECT MIN(seq) FROM changes").fetchone()[0]
                if oldest is not None and oldest > self._seen + 1:
                    behind = True  # the entries we missed were pruned
                else:
                    behind = False
                    changed = self._db.execute(
                        "SELECT seq, record_id FROM changes WHERE seq > ? ORDER BY seq", (self._seen,)
                    ).fetchall()
                    ids = list(dict.fromkeys(record_id for _, record_id in changed))
                    rows = {}
                    for start in range(0, len(ids), 500):
                        chunk = ids[start : start + 500]
                        marks = ",".join("?" for _ in chunk)
                        for row in self._db.execute(
                            "SELECT record_id, tenant, model_pack, dim, vector FROM vectors "  # noqa: S608
                            f"WHERE record_id IN ({marks})",
                            chunk,
                        ):
                            rows[row[0]] = row
            finally:
                self._db.execute("COMMIT")
            if self._answers is not None and (behind or ids):
                self._answers.changed_elsewhere()
            if behind:
                self._load()
                return
            for record_id in ids:
                row = rows.get(record_id)
                if row is None:
                    self._forget(record_id)
                else:
                    _, tenant, model_pack, dim, blob = row
                    self._place(
                        record_id, tenant, model_pack, np.frombuffer(blob, dtype=np.float32, count=dim)
                    )
            if changed:
                self._seen = max(self._seen, int(changed[-1][0]))

    def _forget(self, record_id: str) -> bool:
        where = self._where.pop(record_id, None)
        return where is not None and self._partitions[where].remove(record_id)

    def _place(self, record_id: str, tenant: str, model_pack: str, vector: NDArray[np.float32]) -> None:
        previous = self._where.get(record_id)
        if previous is not None and previous != (tenant, model_pack):
            self._partitions[previous].remove(record_id)
        self._partition(tenant, model_pack, len(vector)).upsert(record_id, vector)
        self._where[record_id] = (tenant, model_pack)

    def _partition(self, tenant: str, model_pack: str, dim: int) -> _Partition:
        key = (tenant, model_pack)
        partition = self._partitions.get(key)
        if partition is None:
            partition = self._partitions[key] = _Partition(dim, self._block_rows)
        elif partition.dim != dim:
            raise ValueError(f"model pack {model_pack} has {partition.dim}-d vectors, got {dim}-d")
        return partition

    def add(self, entries: Sequence[IndexEntry]) -> None:
        prepared = []
        for entry in entries:
            vector = np.asarray(entry.vector, dtype=np.float32).reshape(-1)
            norm = float(np.linalg.norm(vector))
            if not np.isfinite(norm) or abs(norm - 1.0) > 1e-3:
                raise ValueError(f"vector for {entry.record_id} is not L2-normalised (norm {norm})")
            prepared.append((entry, vector))
        with self._lock:
            for entry, vector in prepared:  # refuse before writing anything
                existing = self._partitions.get((entry.tenant, entry.model_pack))
                if existing is not None and existing.dim != len(vector):
                    raise ValueError(
                        f"model pack {entry.model_pack} has {existing.dim}-d vectors, got {len(vector)}-d"
                    )
            self.refresh()  # others' changes first, so the log position stays exact
            try:
                with self._db:
                    self._db.executemany(
                        "INSERT OR REPLACE INTO vectors(record_id, tenant, model_pack, dim, vector) "
                        "VALUES (?, ?, ?, ?, ?)",
                        [(e.record_id, e.tenant, e.model_pack, len(v), v.tobytes()) for e, v in prepared],
                    )
                    self._log([e.record_id for e, _ in prepared])
            except sqlite3.Error as exc:  # one line naming the file and the fix (disk full, ...)
                raise storage_error(self._path or Path(":memory:"), exc) from None
            for entry, vector in prepared:
                self._place(entry.record_id, entry.tenant, entry.model_pack, vector)
                if self._answers is not None:
                    self._answers.added(entry.record_id, entry.tenant, entry.model_pack, vector)

    def _log(self, record_ids: list[str]) -> None:
        """Append to the change log (inside the caller's transaction) and prune its old end."""
        self._db.executemany("INSERT INTO changes(record_id) VALUES (?)", [(i,) for i in record_ids])
        last = self._db.execute("SELECT last_insert_rowid()").fetchone()[0]
        if last % 1000 == 0 or len(record_ids) >= 1000:
            self._db.execute("DELETE FROM changes WHERE seq <= ?", (last - _KEEP_CHANGES,))

    def search(
        self,
        vector: NDArray[np.float32],
        *,
        tenant: str,
        model_pack: str,
        k: int,
        min_score: float | None = None,
    ) -> list[Hit]:
        if k <= 0:
            return []
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        if not np.isfinite(query).all():
            # A NaN scores below every threshold (the float32 scan said "no duplicate"), while
            # the compact scan failed on it: refuse it the same way on both, as add() does.
            raise ValueError("the query vector has non-finite components")
        if min_score is not None and np.isnan(min_score):
            raise ValueError("min_score is NaN")  # the float32 scan read it as "nothing"
        with self._lock:
            self.refresh()
            if self._answers is not None:
                answered = self._answers.answer(
                    query, tenant=tenant, model_pack=model_pack, k=k, min_score=min_score
                )
                if answered is not None:
                    return answered
            partition = self._partitions.get((tenant, model_pack))
            if partition is None or partition.size == 0:
                return []
            if partition.dim != len(query):
                raise ValueError(f"query is {len(query)}-d, the index holds {partition.dim}-d vectors")
            # an infinite min_score (nothing, or everything) needs no margin: the float32 scan
            if min_score is not None and np.isfinite(min_score) and partition.size >= self._compact_from:
                near = partition.compact.rows_near(query, min_score, partition.size)
                if near is not None:  # every row that can score min_score, rescored in float32
                    exact = partition.matrix[near] @ query
                    keep = exact >= min_score
                    return _ordered(partition.ids, near[keep], exact[keep], k)
            scores = partition.matrix[: partition.size] @ query
            if min_score is not None:
                rows = np.flatnonzero(scores >= min_score)
            elif k < partition.size:
                rows = np.argpartition(-scores, k - 1)[:k]
            else:
                rows = np.arange(partition.size)
            return _ordered(partition.ids, rows, scores[rows], k)

    def delete(self, record_ids: Iterable[str]) -> int:
        removed = 0
        with self._lock:
            self.refresh()
            ids = list(record_ids)
            with self._db:
                self._db.executemany("DELETE FROM vectors WHERE record_id = ?", [(i,) for i in ids])
                self._log(ids)
            for record_id in ids:
                removed += int(self._forget(record_id))
                if self._answers is not None:
                    self._answers.removed(record_id)
            # The erased vectors' old pages are in the main file until the log is copied over them.
            checkpoint_truncate(self._db)
        return removed

    def flush(self) -> bool:
        """Checkpoint the write-ahead log into the main file (erasure, `doctor`)."""
        with self._lock:
            self._reopen_if_replaced()
            return checkpoint_truncate(self._db)

    def answering(
        self,
        tenant: str,
        model_pack: str,
        build: Callable[[list[str], NDArray[np.float32]], _Answers],
    ) -> _Answers:
        """Build answers from the partition as it is now (its record ids and a copy of their
        vectors, row for row) and ask them first on every search from now on, in one step under
        the lock: no change can fall between what they start from and what they are told of
        (another process's change makes them step aside). Bulk import only."""
        with self._lock:
            self.refresh()
            partition = self._partitions.get((tenant, model_pack))
            if partition is None:
                answers = build([], np.empty((0, 0), dtype=np.float32))
            else:
                answers = build(list(partition.ids), partition.matrix[: partition.size].copy())
            self._answers = answers
            return answers

    def bulk_answers(self, tenant: str, model_pack: str, threshold: float) -> JoinAnswers:
        """Bulk import's self-join (self_join.py) on the partition as it is now (`answering`)."""
        return self.answering(
            tenant,
            model_pack,
            lambda ids, vectors: JoinAnswers(
                tenant=tenant, model_pack=model_pack, threshold=threshold, ids=ids, vectors=vectors
            ),
        )

    def settle(self) -> None:
        """Wait until every partition's compact blocks are built (tests, benchmarks: searches
        are exact either way, a block not yet built is scanned with the tail)."""
        with self._lock:
            partitions = list(self._partitions.values())
        for partition in partitions:
            partition.compact.settle()

    def stop_answering(self) -> None:
        with self._lock:
            self._answers = None

    def count(self, *, tenant: str, model_pack: str) -> int:
        with self._lock:
            self.refresh()
            partition = self._partitions.get((tenant, model_pack))
            return 0 if partition is None else partition.size

    def record_ids(self, *, tenant: str, model_pack: str) -> set[str]:
        with self._lock:
            self.refresh()
            partition = self._partitions.get((tenant, model_pack))
            return set() if partition is None else set(partition.ids)

    def partitions(self) -> list[tuple[str, str]]:
        """Every (tenant, model pack) the index holds vectors of."""
        with self._lock:
            self.refresh()
            return [key for key, partition in self._partitions.items() if partition.size]

    def close(self) -> None:
        with self._lock:
            for partition in self._partitions.values():  # no more blocks built for a closed index
                partition.compact.stop()
            self._db.close()


def _ordered(ids: list[str], rows: NDArray[np.intp], scores: NDArray[np.float32], k: int) -> list[Hit]:
    """The best `k` of `rows` (ascending), by score; ties in row order, as a full scan gives."""
    if len(rows) > k:
        best = np.sort(np.argpartition(-scores, k - 1)[:k])
        rows, scores = rows[best], scores[best]
    order = np.argsort(-scores, kind="stable")
    return [Hit(ids[row], float(scores[i])) for i, row in zip(order, rows[order], strict=True)]


def _identity(path: Path | None) -> tuple[int, int] | None:
    if path is None:
        return None
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_dev, info.st_ino


def open_index(path: Path) -> ExactVectorIndex:
    """Open the index file; if it is damaged (truncated, corrupt pages, rotten vectors), delete
    it and start an empty one with `needs_rebuild` set: the index is derived data, and the
    caller refills it from the store (`rebuild_from`)."""
    try:
        return ExactVectorIndex(path)
    except StorageError as exc:
        if exc.kind != "corrupt":
            raise
    from face_dedup.adapters.registry_lock import RegistryLock

    with RegistryLock(path.with_name("registry.lock"))():
        try:  # another process may have replaced it while this one waited
            return ExactVectorIndex(path)
        except StorageError as exc:
            if exc.kind != "corrupt":
                raise
        log.warning("%s is damaged: rebuilding it from the store", path)
        remove_database(path)
        index = ExactVectorIndex(path)
        index.set_rebuilding(True)  # refilled after the lock is released (rebuild_from)
    index.needs_rebuild = True
    return index


def remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)


def rebuild_from(index: VectorIndex, store: RecordStore, batch: int = 5000) -> int:
    """Add every template the store holds (all tenants and packs). Returns how many. A template
    whose bytes rotted in the store is left out and named in the log (`doctor` reports it): it
    must not stop the rebuild, or the registry could not even be opened to erase that record."""
    entries: list[IndexEntry] = []
    total = 0
    for record in store.iter_templates():
        problem = template_problem(record.embedding)
        if problem:
            log.error(
                "the stored template of %s is damaged (%s); it is not searchable: run `face-dedup doctor`",
                record.record_id,
                problem,
            )
            continue
        entries.append(IndexEntry(record.record_id, record.tenant, record.model_pack, record.embedding))
        if len(entries) >= batch:
            index.add(entries)
            total += len(entries)
            entries = []
    if entries:
        index.add(entries)
        total += len(entries)
    if isinstance(index, ExactVectorIndex):
        index.set_rebuilding(False)
    return total


def check_file(path: Path) -> list[str]:
    """SQLite's full integrity check of an index file (for `doctor`)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return integrity_problems(db, quick=False)
    except sqlite3.DatabaseError as exc:
        return [str(exc)]
    finally:
        db.close()

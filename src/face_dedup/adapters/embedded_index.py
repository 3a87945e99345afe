"""Embedded exact k-NN index: an in-memory float32 matrix per (tenant, model pack), persisted
in SQLite.

Why exact: de-duplication needs every true duplicate above the threshold, and graph indexes
lose some as the gallery grows (../shared/notes/vector-search.md). One exact query over N
128-d vectors reads N x 512 bytes: about 20-30 ms at 1M faces on this machine (see
BENCHMARKS.md), which keeps up with the embedder. Memory: 512 MB per million faces.

Persistence: every add/delete is a SQLite transaction (WAL, secure_delete so an erased
template is overwritten on disk), and the matrix is rebuilt from it on open.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from face_dedup.ports import Hit, IndexEntry, VectorIndex

_SCHEMA = """
CREATE TABLE IF NOT EXISTS vectors (
    record_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    model_pack TEXT NOT NULL,
    dim INTEGER NOT NULL,
    vector BLOB NOT NULL
);
"""


class _Partition:
    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.matrix: NDArray[np.float32] = np.empty((0, dim), dtype=np.float32)
        self.size = 0
        self.ids: list[str] = []
        self.rows: dict[str, int] = {}

    def bulk_load(self, ids: list[str], matrix: NDArray[np.float32]) -> None:
        if self.size:
            raise RuntimeError("bulk_load is for an empty partition")
        self.matrix = np.array(matrix, dtype=np.float32, copy=True)  # writable, owned
        self.ids = list(ids)
        self.rows = {record_id: row for row, record_id in enumerate(ids)}
        self.size = len(ids)

    def upsert(self, record_id: str, vector: NDArray[np.float32]) -> None:
        row = self.rows.get(record_id)
        if row is not None:
            self.matrix[row] = vector
            return
        if self.size == len(self.matrix):
            grown = np.empty((max(1024, 2 * len(self.matrix)), self.dim), dtype=np.float32)
            grown[: self.size] = self.matrix[: self.size]
            self.matrix = grown
        self.matrix[self.size] = vector
        self.rows[record_id] = self.size
        self.ids.append(record_id)
        self.size += 1

    def remove(self, record_id: str) -> bool:
        row = self.rows.pop(record_id, None)
        if row is None:
            return False
        last = self.size - 1
        if row != last:  # move the last vector into the hole
            self.matrix[row] = self.matrix[last]
            moved = self.ids[last]
            self.ids[row] = moved
            self.rows[moved] = row
        self.ids.pop()
        self.matrix[last] = 0.0
        self.size -= 1
        return True


class ExactVectorIndex(VectorIndex):
    def __init__(self, path: Path | None) -> None:
        """`path=None` keeps everything in memory (tests, one-off searches)."""
        self._lock = threading.RLock()
        self._db = sqlite3.connect(":memory:" if path is None else str(path), check_same_thread=False)
        if path is not None:
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.executescript(_SCHEMA)
        self._partitions: dict[tuple[str, str], _Partition] = {}
        self._where: dict[str, tuple[str, str]] = {}
        self._load()

    def _load(self) -> None:
        """Rebuild the matrices from SQLite in one pass per partition (1M rows in seconds)."""
        groups: dict[tuple[str, str, int], tuple[list[str], list[bytes]]] = defaultdict(lambda: ([], []))
        for record_id, tenant, model_pack, dim, blob in self._db.execute(
            "SELECT record_id, tenant, model_pack, dim, vector FROM vectors ORDER BY rowid"
        ):
            ids, blobs = groups[(tenant, model_pack, dim)]
            ids.append(record_id)
            blobs.append(blob)
        for (tenant, model_pack, dim), (ids, blobs) in groups.items():
            matrix = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(ids), dim)
            self._partition(tenant, model_pack, dim).bulk_load(ids, matrix)
            self._where.update(dict.fromkeys(ids, (tenant, model_pack)))

    def _partition(self, tenant: str, model_pack: str, dim: int) -> _Partition:
        key = (tenant, model_pack)
        partition = self._partitions.get(key)
        if partition is None:
            partition = self._partitions[key] = _Partition(dim)
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
            with self._db:
                self._db.executemany(
                    "INSERT OR REPLACE INTO vectors(record_id, tenant, model_pack, dim, vector) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [(e.record_id, e.tenant, e.model_pack, len(v), v.tobytes()) for e, v in prepared],
                )
            for entry, vector in prepared:
                previous = self._where.get(entry.record_id)
                if previous is not None and previous != (entry.tenant, entry.model_pack):
                    self._partitions[previous].remove(entry.record_id)
                self._partition(entry.tenant, entry.model_pack, len(vector)).upsert(entry.record_id, vector)
                self._where[entry.record_id] = (entry.tenant, entry.model_pack)

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
        with self._lock:
            partition = self._partitions.get((tenant, model_pack))
            if partition is None or partition.size == 0:
                return []
            if partition.dim != len(query):
                raise ValueError(f"query is {len(query)}-d, the index holds {partition.dim}-d vectors")
            scores = partition.matrix[: partition.size] @ query
            if min_score is not None:
                rows = np.flatnonzero(scores >= min_score)
            elif k < partition.size:
                rows = np.argpartition(-scores, k - 1)[:k]
            else:
                rows = np.arange(partition.size)
            if len(rows) > k:
                rows = rows[np.argpartition(-scores[rows], k - 1)[:k]]
            ordered = rows[np.argsort(-scores[rows], kind="stable")]
            return [Hit(partition.ids[row], float(scores[row])) for row in ordered]

    def delete(self, record_ids: Iterable[str]) -> int:
        removed = 0
        with self._lock:
            ids = list(record_ids)
            with self._db:
                self._db.executemany("DELETE FROM vectors WHERE record_id = ?", [(i,) for i in ids])
            for record_id in ids:
                where = self._where.pop(record_id, None)
                if where is not None and self._partitions[where].remove(record_id):
                    removed += 1
        return removed

    def count(self, *, tenant: str, model_pack: str) -> int:
        with self._lock:
            partition = self._partitions.get((tenant, model_pack))
            return 0 if partition is None else partition.size

    def record_ids(self, *, tenant: str, model_pack: str) -> set[str]:
        with self._lock:
            partition = self._partitions.get((tenant, model_pack))
            return set() if partition is None else set(partition.ids)

    def close(self) -> None:
        with self._lock:
            self._db.close()

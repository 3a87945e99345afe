"""An approximate VectorIndex on faiss, configured like the deployed OpenSearch method, so the
index contract suite sees approximation (the OpenSearch stand-in answers k-NN exactly).

It behaves as the cloud path does: one HNSW graph (faiss, inner product, the default method's
m / ef_construction / ef_search from face_dedup.capacity) per (tenant, model pack) partition,
as OpenSearch's efficient filter restricts the graph walk to one partition; deletes and
replacements are tombstones the walk skips (OpenSearch marks deleted documents and merges
later; faiss HNSW cannot remove); the engine is asked for k x oversample candidates with
ef = max(ef_search, that) and the client re-scores them with the stored fp32 vectors, as the
adapter does with `_source`. Persistence: the graphs and vectors are written on close.

Not a fake: a real approximate engine. Test support only; the product never runs it.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable, Sequence
from pathlib import Path

import faiss
import numpy as np
from numpy.typing import NDArray

from face_dedup.capacity import DEFAULT_METHOD, IndexMethod
from face_dedup.ports import Hit, IndexEntry, VectorIndex


class _Graph:
    def __init__(self, dim: int, method: IndexMethod) -> None:
        self.dim = dim
        graph = faiss.IndexHNSWFlat(dim, method.m, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = method.ef_construction
        self.index: faiss.Index = graph  # or one read back by deserialize_index
        self.vectors: list[NDArray[np.float32]] = []
        self.ids: list[str] = []
        self.live: dict[str, int] = {}  # record id -> its current row

    def add(self, record_id: str, vector: NDArray[np.float32]) -> None:
        self.live[record_id] = len(self.ids)  # any older row of this id becomes a tombstone
        self.ids.append(record_id)
        self.vectors.append(vector)
        self.index.add(vector[None, :])


class FaissHnswIndex(VectorIndex):
    def __init__(self, path: Path | None, method: IndexMethod = DEFAULT_METHOD) -> None:
        self._path = path
        self._method = method
        self._graphs: dict[tuple[str, str], _Graph] = {}
        if path is not None and path.exists():
            with path.open("rb") as handle:
                saved = pickle.load(handle)  # a file this test wrote itself
            for key, (dim, ids, vectors, live, blob) in saved.items():
                graph = _Graph(dim, method)
                graph.index = faiss.deserialize_index(blob)
                graph.ids, graph.vectors, graph.live = ids, list(vectors), live
                self._graphs[key] = graph

    def add(self, entries: Sequence[IndexEntry]) -> None:
        prepared = []
        for entry in entries:
            vector = np.asarray(entry.vector, dtype=np.float32).reshape(-1)
            norm = float(np.linalg.norm(vector))
            if not np.isfinite(norm) or abs(norm - 1.0) > 1e-3:
                raise ValueError(f"vector for {entry.record_id} is not L2-normalised (norm {norm})")
            graph = self._graphs.get((entry.tenant, entry.model_pack))
            if graph is not None and graph.dim != len(vector):
                raise ValueError(f"the index holds {graph.dim}-d vectors, got {len(vector)}-d")
            prepared.append((entry, vector))
        for entry, vector in prepared:
            self._forget(entry.record_id)  # an id lives in one partition
            key = (entry.tenant, entry.model_pack)
            graph = self._graphs.setdefault(key, _Graph(len(vector), self._method))
            graph.add(entry.record_id, vector)

    def _forget(self, record_id: str) -> bool:
        return any(graph.live.pop(record_id, None) is not None for graph in self._graphs.values())

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
        graph = self._graphs.get((tenant, model_pack))
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        if graph is not None and graph.dim != len(query):
            raise ValueError(f"query is {len(query)}-d, the index holds {graph.dim}-d vectors")
        if graph is None or not graph.live:
            return []
        pool = k * self._method.oversample
        rows = np.fromiter(graph.live.values(), dtype=np.int64)
        # faiss's bundled stubs lack SearchParametersHNSW (in the library since 1.7.3)
        params = faiss.SearchParametersHNSW(  # type: ignore[attr-defined]
            sel=faiss.IDSelectorBatch(rows), efSearch=max(self._method.ef_search, pool)
        )
        _, found = graph.index.search(query[None, :], pool, params=params)
        hits = []
        for row in found[0]:
            if row < 0:
                continue
            score = float(graph.vectors[row] @ query)  # re-scored, as the adapter does
            if min_score is None or score >= min_score:
                hits.append(Hit(graph.ids[row], score))
        hits.sort(key=lambda h: (-h.score, h.record_id))
        return hits[:k]

    def delete(self, record_ids: Iterable[str]) -> int:
        return sum(self._forget(record_id) for record_id in record_ids)

    def count(self, *, tenant: str, model_pack: str) -> int:
        graph = self._graphs.get((tenant, model_pack))
        return 0 if graph is None else len(graph.live)

    def record_ids(self, *, tenant: str, model_pack: str) -> set[str]:
        graph = self._graphs.get((tenant, model_pack))
        return set() if graph is None else set(graph.live)

    def close(self) -> None:
        if self._path is None:
            return
        saved = {
            key: (g.dim, g.ids, np.stack(g.vectors), g.live, faiss.serialize_index(g.index))
            for key, g in self._graphs.items()
        }
        with self._path.open("wb") as handle:
            pickle.dump(saved, handle)

"""Bulk import's blocked self-join (bulk.py's docstring says what it keeps): the pairs of a
batch of templates scoring at or above a threshold, computed in tiles of matrix products (int8
codes, compact_scan.py, then exact float32 rescoring), and answered as the embedded index would
at each photo's turn (embedded_index.PrecomputedAnswers). An adapter beside the embedded index:
the index builds it (ExactVectorIndex.bulk_answers), the use case sees ports.BulkAnswers."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from numpy.typing import NDArray

from face_dedup.adapters import compact_scan
from face_dedup.ports import BulkAnswers, Hit, IndexEntry, RadialResult, VectorIndex

TILE = 2048  # columns per matrix product: CHUNK x TILE float32 scores (32 MB) at a time
_SLACK = 1e-4  # the tiles' float32 products round differently from the rescoring (< 1e-5)
_GROW = 4096  # rows the buffer grows by at least (bulk.CHUNK: one chunk of photos)
Coded = tuple[NDArray[np.uint8], NDArray[np.bool_], float]  # compact_scan.encode's codes, outliers, error


def join_block(
    rows: NDArray[np.float32],
    start: int,
    stop: int,
    threshold: float,
    tile: int = TILE,
    *,
    coded: Coded | None = None,
    transposed: dict[int, NDArray[np.uint8]] | None = None,
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float32]]:
    """Every pair (i, j) with start <= i < stop and j <= i whose float32 score is >= `threshold`
    (less `_SLACK`): query rows i, earlier rows j, sorted by (i, j), with that score.

    With `coded` (the rows' int8 codes, compact_scan.py), the tiles are exact integer products
    of the codes (about 4x less CPU than float32 here) and every pair within the derived
    quantisation margin of the threshold is rescored in float32; pairs with an outlier row
    (which int8 cannot hold) are computed in float32 outright. Without, float32 tiles.
    `transposed` keeps the transposed codes of whole tiles before `start` between calls (rows
    are only ever appended, so they do not change): each is copied once, not once per chunk."""
    queries = rows[start:stop]
    found_i: list[NDArray[np.int64]] = []
    found_j: list[NDArray[np.int64]] = []
    if coded is None:
        buffer = np.empty((len(queries), tile), dtype=np.float32)  # reused: no page faults per tile
        for first in range(0, stop, tile):
            last = min(first + tile, stop)
            width = last - first
            scores = buffer if width == tile else np.empty((len(queries), width), dtype=np.float32)
            np.matmul(queries, rows[first:last].T, out=scores)  # BLAS sgemm: the main cost
            flat = np.flatnonzero(scores >= threshold - _SLACK)  # 1-d: ~10x faster than 2-d nonzero
            found_i.append(flat // width + start)
            found_j.append(flat % width + first)
    else:
        codes, outlier, err_max = coded
        floor = compact_scan.pair_floor(threshold, err_max)
        left = codes[start:stop]
        for first in range(0, stop, tile):
            last = min(first + tile, stop)
            right = None if transposed is None else transposed.get(first)
            if right is None:
                right = np.ascontiguousarray(codes[first:last].T)
                if transposed is not None and last - first == tile and last <= start:
                    transposed[first] = right
            products = compact_scan.code_products(left, right)
            flat = np.flatnonzero(products >= floor)
            found_i.append(flat // (last - first) + start)
            found_j.append(flat % (last - first) + first)
        for q in np.flatnonzero(outlier[start:stop]) + start:  # an outlier asks: float32
            j = np.flatnonzero(rows[: q + 1] @ rows[q] >= threshold - _SLACK)
            found_i.append(np.full(len(j), q, dtype=np.int64))
            found_j.append(j)
        others = np.flatnonzero(outlier[:stop])  # an outlier is asked: float32
        if len(others):
            qi, oj = np.nonzero(queries @ rows[others].T >= threshold - _SLACK)
            found_i.append(qi + start)
            found_j.append(others[oj])
    i = np.concatenate(found_i).astype(np.int64) if found_i else np.empty(0, np.int64)
    j = np.concatenate(found_j).astype(np.int64) if found_j else np.empty(0, np.int64)
    keep = j <= i  # only photos before it (and itself: the index holds it once registered)
    key = np.unique(i[keep] * stop + j[keep])  # sorted by (i, j), each pair once
    i, j = key // stop, key % stop
    exact = np.einsum("ij,ij->i", rows[i], rows[j]).astype(np.float32, copy=False)  # one dot per pair
    near = exact >= threshold - _SLACK
    return i[near], j[near], exact[near]


def join_across(
    earlier: NDArray[np.float32], queries: NDArray[np.float32], threshold: float
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float32]]:
    """Every pair (query q, earlier row e) scoring >= `threshold`: `join_block` (int8 tiles,
    float32 rescoring) on the two blocks stacked, keeping only pairs across them. The cloud
    job streams its earlier templates through this one block at a time (bounded memory)."""
    if not len(earlier) or not len(queries):
        empty = np.empty(0, np.int64)
        return empty, empty, np.empty(0, np.float32)
    rows = np.ascontiguousarray(np.vstack([earlier, queries]), dtype=np.float32)
    base = len(earlier)
    i, j, scores = join_block(rows, base, len(rows), threshold, coded=compact_scan.encode(rows))
    across = j < base
    return i[across] - base, j[across], scores[across]


def join_within(
    queries: NDArray[np.float32], threshold: float
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float32]]:
    """Every pair (i, j), j <= i, inside one block scoring >= `threshold` (`join_block`)."""
    if not len(queries):
        empty = np.empty(0, np.int64)
        return empty, empty, np.empty(0, np.float32)
    rows = np.ascontiguousarray(queries, dtype=np.float32)
    return join_block(rows, 0, len(rows), threshold, coded=compact_scan.encode(rows))


class PairAnswers:
    """Pairs worked out in advance (row -> earlier rows and scores, at or above `threshold`),
    answered as the index would at each photo's turn (embedded_index.PrecomputedAnswers): only
    the earlier rows in the index at that moment count, tracked from what the index is told
    (`added`, `removed`). Rows 0 .. len(ids) - 1 are the index's records when the answers were
    built. Anything it cannot be sure of (another vector, a lower threshold, another partition,
    a change made elsewhere) is left to the index's own scan (None)."""

    def __init__(self, *, tenant: str, model_pack: str, threshold: float, ids: list[str]) -> None:
        self.tenant, self.model_pack, self.threshold = tenant, model_pack, threshold
        self._row_of_id: dict[str, int] = {rid: row for row, rid in enumerate(ids)}  # in the index now
        self._id_of_row: dict[int, str] = dict(enumerate(ids))
        self._pairs: dict[int, tuple[NDArray[np.int64], NDArray[np.float32]]] = {}
        self._current: int | None = None
        self.valid = True
        self.answered = 0
        self.fallbacks = 0

    def _vector(self, row: int) -> NDArray[np.float32] | None:
        """The template at `row` (what a search for it must ask with), None if unknown."""
        raise NotImplementedError

    def expect(self, row: int | None) -> None:
        """The photo about to be registered (None: one without a template)."""
        self._current = row

    def holds(self, record_id: str) -> bool:
        """Whether the answers count `record_id` as in the index."""
        return record_id in self._row_of_id

    def in_index(self, row: int, record_id: str) -> None:
        """Row `row` is in the index as `record_id` (registered before these answers were built:
        a resumed run)."""
        self.removed(record_id)
        self._row_of_id[record_id] = row
        self._id_of_row[row] = record_id

    # -- embedded_index.PrecomputedAnswers --------------------------------------------------

    def answer(
        self, query: NDArray[np.float32], *, tenant: str, model_pack: str, k: int, min_score: float | None
    ) -> list[Hit] | None:
        row = self._current
        vector = None if row is None else self._vector(row)
        if (
            not self.valid
            or row is None
            or vector is None
            or row not in self._pairs
            or (tenant, model_pack) != (self.tenant, self.model_pack)
            or min_score is None
            or min_score < self.threshold
            or not np.array_equal(query, vector)
        ):
            self.fallbacks += 1
            return None
        self.answered += 1
        js, scores = self._pairs[row]
        found = [
            (float(score), int(j))
            for j, score in zip(js, scores, strict=True)
            if score >= min_score and int(j) in self._id_of_row
        ]
        found.sort(key=lambda pair: (-pair[0], pair[1]))  # by score; ties in row order
        return [Hit(self._id_of_row[j], score) for score, j in found[:k]]

    def added(self, record_id: str, tenant: str, model_pack: str, vector: NDArray[np.float32]) -> None:
        if (tenant, model_pack) != (self.tenant, self.model_pack):
            return
        self.removed(record_id)
        row = self._current
        known = None if row is None else self._vector(row)
        if row is not None and known is not None and np.array_equal(vector, known):
            self._row_of_id[record_id] = row
            self._id_of_row[row] = record_id
        else:  # a vector the join has not seen (not this photo's template): scan from now on
            self.valid = False

    def removed(self, record_id: str) -> None:
        row = self._row_of_id.pop(record_id, None)
        if row is not None:
            del self._id_of_row[row]

    def changed_elsewhere(self) -> None:
        self.valid = False


class JoinAnswers(PairAnswers, BulkAnswers):
    """The local bulk import's answers: the index's partition and the batch's templates in one
    buffer, the pairs computed here by `join_block` chunk by chunk."""

    def __init__(
        self, *, tenant: str, model_pack: str, threshold: float, ids: list[str], vectors: NDArray[np.float32]
    ) -> None:
        super().__init__(tenant=tenant, model_pack=model_pack, threshold=threshold, ids=ids)
        dim = vectors.shape[1] if len(vectors) else 0
        self._rows = np.array(vectors, dtype=np.float32).reshape(len(vectors), dim)
        self._size = len(vectors)
        self._coded = 0  # rows [0, _coded) have codes
        self._codes = np.empty((0, dim), dtype=np.uint8)
        self._outlier = np.empty(0, dtype=np.bool_)
        self._err_max = 0.0
        self._transposed: dict[int, NDArray[np.uint8]] = {}  # join_block's cache

    def _vector(self, row: int) -> NDArray[np.float32] | None:
        return self._rows[row] if 0 <= row < self._size else None

    @property
    def size(self) -> int:
        return self._size

    def append(self, vector: NDArray[np.float32]) -> int:
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        if self._size == 0 and self._rows.shape[1] != len(vector):
            self._rows = np.empty((0, len(vector)), dtype=np.float32)
        if self._size == len(self._rows):
            grown = np.empty((max(_GROW, 2 * self._size), self._rows.shape[1]), dtype=np.float32)
            grown[: self._size] = self._rows[: self._size]
            self._rows = grown
        self._rows[self._size] = vector
        self._size += 1
        return self._size - 1

    def join(self, start: int, threshold: float) -> None:
        """Pairs for the rows appended since `start` (the previous chunk's are dropped), at or
        above `threshold`: the review threshold at the gallery size before this chunk, the
        lowest any of its photos can be searched with (it only grows as photos are added)."""
        self.threshold = threshold
        self._encode()
        coded = (self._codes[: self._size], self._outlier[: self._size], self._err_max)
        i, j, scores = join_block(
            self._rows[: self._size], start, self._size, threshold, coded=coded, transposed=self._transposed
        )
        bounds = np.searchsorted(i, np.arange(start, self._size + 1))
        self._pairs = {
            start + n: (j[bounds[n] : bounds[n + 1]], scores[bounds[n] : bounds[n + 1]])
            for n in range(self._size - start)
        }

    def _encode(self) -> None:
        if len(self._codes) < self._size:
            codes = np.empty((len(self._rows), self._rows.shape[1]), dtype=np.uint8)
            outlier = np.zeros(len(self._rows), dtype=np.bool_)
            if self._coded:
                codes[: self._coded] = self._codes[: self._coded]
                outlier[: self._coded] = self._outlier[: self._coded]
            self._codes, self._outlier = codes, outlier
        for first in range(self._coded, self._size, 65_536):
            last = min(first + 65_536, self._size)
            self._codes[first:last], self._outlier[first:last], err = compact_scan.encode(
                self._rows[first:last]
            )
            self._err_max = max(self._err_max, err)
        self._coded = self._size


class CandidateAnswers(PairAnswers):
    """The cloud bulk job's answers (cloud_bulk_decide.py): pairs the job's join stage wrote,
    read back for one chunk. Rows 0 .. len(ids) - 1 are the existing records the join found
    (in the index when the job started), then the job's rows after them; `vectors` holds the
    templates of the rows this chunk registers."""

    def __init__(
        self,
        *,
        tenant: str,
        model_pack: str,
        threshold: float,
        ids: list[str],
        pairs: dict[int, tuple[NDArray[np.int64], NDArray[np.float32]]],
        vectors: dict[int, NDArray[np.float32]],
    ) -> None:
        super().__init__(tenant=tenant, model_pack=model_pack, threshold=threshold, ids=ids)
        self.existing = len(ids)  # the job's row r is answered as row existing + r
        self._pairs = pairs
        self._vectors = vectors

    def _vector(self, row: int) -> NDArray[np.float32] | None:
        return self._vectors.get(row)


class AnsweredIndex(VectorIndex):
    """A VectorIndex (the cloud's OpenSearch one) whose searches are asked of precomputed
    answers first, as ExactVectorIndex.answering does for the local bulk import: writes go to
    the index and are told to the answers. `expected` is the partition's size the answers
    assume; a count that differs (another process enrolled or erased meanwhile) makes them
    step aside, so every later search is the index's own: slower, never different."""

    def __init__(self, inner: VectorIndex, answers: PairAnswers, *, expected: int) -> None:
        self.inner, self.answers, self.expected = inner, answers, expected

    def search(
        self,
        vector: NDArray[np.float32],
        *,
        tenant: str,
        model_pack: str,
        k: int,
        min_score: float | None = None,
    ) -> list[Hit]:
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        found = self.answers.answer(query, tenant=tenant, model_pack=model_pack, k=k, min_score=min_score)
        if found is not None:
            return found
        return self.inner.search(vector, tenant=tenant, model_pack=model_pack, k=k, min_score=min_score)

    def search_above(
        self, vector: NDArray[np.float32], *, tenant: str, model_pack: str, min_score: float, limit: int
    ) -> RadialResult:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        found = self.answers.answer(
            query, tenant=tenant, model_pack=model_pack, k=limit + 1, min_score=min_score
        )
        if found is not None:
            return RadialResult(found[:limit], capped=len(found) > limit)
        return self.inner.search_above(
            vector, tenant=tenant, model_pack=model_pack, min_score=min_score, limit=limit
        )

    def add(self, entries: Sequence[IndexEntry]) -> None:
        entries = list(entries)
        self.inner.add(entries)
        for entry in entries:
            if (entry.tenant, entry.model_pack) == (self.answers.tenant, self.answers.model_pack):
                self.expected += int(not self.answers.holds(entry.record_id))
            self.answers.added(entry.record_id, entry.tenant, entry.model_pack, entry.vector)

    def delete(self, record_ids: Iterable[str]) -> int:
        ids = list(record_ids)
        removed = self.inner.delete(ids)
        for record_id in ids:
            self.answers.removed(record_id)
        self.expected -= removed
        return removed

    def count(self, *, tenant: str, model_pack: str) -> int:
        found = self.inner.count(tenant=tenant, model_pack=model_pack)
        if (tenant, model_pack) == (self.answers.tenant, self.answers.model_pack) and found != self.expected:
            self.answers.changed_elsewhere()
            self.expected = found  # from here, a change is one made after this count
        return found

    def changed_since_counted(self) -> bool:
        """Whether the partition's size differs from what this index counted and wrote since
        (another process enrolled or erased meanwhile: the cloud bulk decide step then re-checks
        its enrollment as the workflow's complete does)."""
        tenant, model_pack = self.answers.tenant, self.answers.model_pack
        return self.inner.count(tenant=tenant, model_pack=model_pack) != self.expected

    def record_ids(self, *, tenant: str, model_pack: str) -> set[str]:
        return self.inner.record_ids(tenant=tenant, model_pack=model_pack)

    def close(self) -> None:
        self.inner.close()

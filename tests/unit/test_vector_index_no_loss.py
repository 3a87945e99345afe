"""Issue 12: nothing above the threshold is lost, on every VectorIndex adapter and on the
embedded index's compact int8 scan (adapters/compact_scan.py), adversarially: vectors placed
just above and just below the threshold, with components on the quantisation grid's half steps
(the largest rounding error), outliers that int8 cannot hold, and after deletes and a reopen.

The expectation is always the float32 brute-force answer computed here, never a stored list."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from face_dedup.adapters import compact_scan
from face_dedup.adapters.embedded_index import ExactVectorIndex
from face_dedup.adapters.opensearch_index import OpenSearchVectorIndex
from face_dedup.ports import IndexEntry, VectorIndex
from tests.support.faiss_index import FaissHnswIndex
from tests.support.fake_knn_opensearch import FakeKnnOpenSearch

DIM = 128  # the default pack's size (at 16-d, a third of random unit vectors are int8 outliers)
THRESHOLD = 0.6
BACKGROUND = 3000


BLOCK = 256  # sealed MatMulNBits blocks at test sizes (the default is 65,536 rows)


@pytest.fixture(params=["embedded", "embedded-compact", "embedded-blocks", "opensearch", "faiss-hnsw"])
def make_index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], VectorIndex]]:
    opened: list[VectorIndex] = []
    build: Callable[[], VectorIndex]
    if request.param == "embedded":
        build = lambda: ExactVectorIndex(tmp_path / "index.sqlite")  # noqa: E731
    elif request.param == "embedded-compact":  # the compact scan on every threshold search
        build = lambda: ExactVectorIndex(tmp_path / "index.sqlite", compact_from=0)  # noqa: E731
    elif request.param == "embedded-blocks":  # ... in sealed blocks, built as rows arrive
        build = lambda: ExactVectorIndex(tmp_path / "index.sqlite", compact_from=0, block_rows=BLOCK)  # noqa: E731
    elif request.param == "faiss-hnsw":
        build = lambda: FaissHnswIndex(tmp_path / "index.faiss")  # noqa: E731
    else:  # as the contract suite: osmem with the k-NN query answered by FakeKnnOpenSearch
        client = FakeKnnOpenSearch(hosts=[request.getfixturevalue("osmem_clone").url])
        name = f"faces-{uuid.uuid4().hex[:12]}"

        def build() -> VectorIndex:
            index = OpenSearchVectorIndex(client, name, DIM, engine="faiss")
            index.ensure_index()
            return index

    def factory() -> VectorIndex:
        index = build()
        opened.append(index)
        return index

    yield factory
    for index in opened:
        index.close()


def unit(v: NDArray[np.floating[Any]]) -> NDArray[np.float32]:
    return (v / np.linalg.norm(v)).astype(np.float32)


def at_score(
    query: NDArray[np.float32], score: float, rng: np.random.Generator, half_steps: bool
) -> NDArray[np.float32]:
    """A unit vector whose cosine with `query` is `score` (to float32 rounding). With
    `half_steps`, its components sit near the middle between two int8 codes (step 1/256), where
    rounding moves them most."""
    other = rng.normal(size=query.shape)
    other -= (other @ query) * query
    vector = score * query + np.sqrt(1 - score**2) * other / np.linalg.norm(other)
    if half_steps:
        vector = (np.floor(vector * 256) + 0.5) / 256  # then re-aimed at the same score
        other = vector - (vector @ query) * query
        vector = score * query + np.sqrt(1 - score**2) * other / np.linalg.norm(other)
    return unit(vector)


def planted(query: NDArray[np.float32], seed: int) -> dict[str, NDArray[np.float32]]:
    rng = np.random.default_rng(seed)
    vectors: dict[str, NDArray[np.float32]] = {}
    for delta in (1e-5, 1e-4, 1e-3, 5e-3, 2e-2):
        for side, sign in (("above", 1), ("below", -1)):
            for copy in range(10):
                name = f"{side}-{delta:g}-{copy}"
                vectors[name] = at_score(query, THRESHOLD + sign * delta, rng, half_steps=copy % 2 == 0)
    # int8 cannot hold a component above 127/256: these are rescored outright
    spike = np.zeros(DIM)
    spike[3] = 1.0
    vectors["outlier-above"] = at_score(unit(query + 0.0), THRESHOLD + 1e-4, rng, False)
    vectors["outlier-above"] = unit(0.8 * spike + 0.2 * vectors["outlier-above"])
    for i in range(BACKGROUND):  # impostor-like scores; enough that the compact path is taken
        vectors[f"bg-{i}"] = unit(rng.normal(size=DIM))
    return vectors


def brute(vectors: dict[str, NDArray[np.float32]], query: NDArray[np.float32], threshold: float) -> set[str]:
    names = list(vectors)
    scores = np.stack([vectors[n] for n in names]) @ query
    return {n for n, s in zip(names, scores, strict=True) if s >= threshold}


def test_nothing_above_the_threshold_is_lost(
    make_index: Callable[[], VectorIndex], monkeypatch: pytest.MonkeyPatch
) -> None:
    compact_answers: list[bool] = []
    rows_near = compact_scan.CompactCopy.rows_near

    def spy(self: compact_scan.CompactCopy, *args: object) -> object:
        found = rows_near(self, *args)  # type: ignore[arg-type]
        compact_answers.append(found is not None)
        return found

    monkeypatch.setattr(compact_scan.CompactCopy, "rows_near", spy)
    index = make_index()
    for seed in range(3):
        query = unit(np.random.default_rng(100 + seed).normal(size=DIM))
        vectors = planted(query, seed)
        tenant = f"t{seed}"
        index.add([IndexEntry(name, tenant, "p1", v) for name, v in vectors.items()])
        if isinstance(index, ExactVectorIndex):
            index.settle()  # embedded-blocks: every full block sealed (the contract suite does not wait)
        # the outlier's real score, whatever it is, and the planted pairs decide the expectation
        for threshold in (THRESHOLD, float(vectors["outlier-above"] @ query) - 1e-5):
            expected = brute(vectors, query, threshold)
            compact_answers.clear()
            hits = index.search(query, tenant=tenant, model_pack="p1", k=len(vectors), min_score=threshold)
            assert {h.record_id for h in hits} == expected
            if threshold == THRESHOLD:
                assert {n for n in vectors if n.startswith("above")} <= expected
                assert not any(name.startswith("below") for name in expected)
                # on the compact variant, the int8 scan answered (not the float32 fallback)
                assert all(compact_answers)


def test_compact_scan_keeps_every_row_after_deletes_updates_and_reopen(tmp_path: Path) -> None:
    """Rows move (a delete fills the hole with the last row), get replaced, and are re-encoded
    on reopen and by another process's refresh: the compact copy must follow every time."""
    path = tmp_path / "index.sqlite"
    writer = ExactVectorIndex(path, compact_from=0)
    reader = ExactVectorIndex(path, compact_from=0)  # another process: catches up by refresh
    query = unit(np.random.default_rng(7).normal(size=DIM))
    vectors = planted(query, 7)
    writer.add([IndexEntry(name, "t", "p", v) for name, v in vectors.items()])
    gone = [name for name in vectors if name.endswith("-1")]
    writer.delete(gone)
    for name in gone:
        del vectors[name]
    rng = np.random.default_rng(8)
    for name in [n for n in vectors if n.startswith("below")][:5]:  # now just above
        vectors[name] = at_score(query, THRESHOLD + 2e-5, rng, half_steps=True)
        writer.add([IndexEntry(name, "t", "p", vectors[name])])
    expected = brute(vectors, query, THRESHOLD)
    for index in (writer, reader, ExactVectorIndex(path, compact_from=0)):
        hits = index.search(query, tenant="t", model_pack="p", k=1000, min_score=THRESHOLD)
        assert {h.record_id for h in hits} == expected
        index.close()


def test_compact_score_is_within_the_derived_margin() -> None:
    """The inequality the search relies on, checked on half-step vectors and random queries."""
    rng = np.random.default_rng(3)
    rows = np.stack([unit((np.floor(rng.normal(size=128) * 20) + 0.5) / 256) for _ in range(2000)])
    copy = compact_scan.CompactCopy(128)
    copy.load(rows)
    assert copy.err_max <= np.sqrt(128) / 512 + 1e-12
    for _ in range(20):
        query = unit(rng.normal(size=128))
        codes, step, bound = copy.margin(query)
        compact = (copy.codes.astype(np.int64) - 128) @ codes.astype(np.int64) * step / 256
        exact = rows.astype(np.float64) @ query.astype(np.float64)
        assert np.all(np.abs(exact - compact) <= bound)
        assert bound < 0.05  # and the margin is useful, not a scan of everything


def test_many_rows_near_the_threshold_fall_back_to_the_full_scan() -> None:
    index = ExactVectorIndex(None, compact_from=0)
    query = unit(np.random.default_rng(1).normal(size=DIM))
    rng = np.random.default_rng(2)
    vectors = {f"r{i}": at_score(query, THRESHOLD + rng.uniform(-0.01, 0.01), rng, True) for i in range(300)}
    index.add([IndexEntry(n, "t", "p", v) for n, v in vectors.items()])
    hits = index.search(query, tenant="t", model_pack="p", k=1000, min_score=THRESHOLD)
    assert {h.record_id for h in hits} == brute(vectors, query, THRESHOLD)
    index.close()


@pytest.mark.parametrize("compact_from", [0, 10**9])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_query_is_refused_by_either_scan(compact_from: int, bad: float) -> None:
    """The float32 scan answered a NaN query with no hits (a NaN template would have passed as
    unique) and an inf one with inf scores; the compact scan raised math.floor's error."""
    index = ExactVectorIndex(None, compact_from=compact_from)
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((50, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index.add([IndexEntry(f"r{i}", "t", "p", vectors[i]) for i in range(len(vectors))])
    query = vectors[0].copy()
    query[3] = bad
    with pytest.raises(ValueError, match="non-finite"):
        index.search(query, tenant="t", model_pack="p", k=5, min_score=0.3)
    with pytest.raises(ValueError, match="non-finite"):
        index.search(query, tenant="t", model_pack="p", k=5)


@pytest.mark.parametrize("compact_from", [0, 10**9])
def test_a_non_finite_min_score_gets_the_same_answer_from_either_scan(compact_from: int) -> None:
    """The int8 pre-scan raised on min_score inf (OverflowError) and NaN (ValueError) where the
    float32 scan answered: now inf is nothing, -inf everything, NaN refused, on both."""
    index = ExactVectorIndex(None, compact_from=compact_from)
    rng = np.random.default_rng(8)
    vectors = rng.standard_normal((40, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index.add([IndexEntry(f"r{i}", "t", "p", vectors[i]) for i in range(len(vectors))])
    assert index.search(vectors[0], tenant="t", model_pack="p", k=5, min_score=np.inf) == []
    assert len(index.search(vectors[0], tenant="t", model_pack="p", k=5, min_score=-np.inf)) == 5
    with pytest.raises(ValueError, match="NaN"):
        index.search(vectors[0], tenant="t", model_pack="p", k=5, min_score=float("nan"))


# --- sealed blocks (compact_scan: MatMulNBits over blocks, MatMulInteger over the tail) -------


@pytest.fixture
def blocks_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh kernel verdict for this test (a fallback test sets it for good otherwise)."""
    monkeypatch.setattr(compact_scan, "_nbits_broken", False)


def blocks_of(index: ExactVectorIndex, tenant: str = "t", pack: str = "p") -> compact_scan.CompactCopy:
    return index._partitions[(tenant, pack)].compact


@pytest.mark.usefixtures("blocks_on")
@pytest.mark.parametrize("rebuild", [True, False])
def test_blocks_seal_mid_run_and_searches_stay_exact(rebuild: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows arrive in batches, blocks seal (in the background) between and during searches, rows
    in sealed blocks are replaced and deleted (the last row moves into the hole). Without
    rebuilds, the changed rows are only found through the blocks' dirty sets."""
    if not rebuild:
        monkeypatch.setattr(compact_scan, "_DIRTY_SHARE", 0)  # a block is never rebuilt
    index = ExactVectorIndex(None, compact_from=0, block_rows=BLOCK)
    query = unit(np.random.default_rng(21).normal(size=DIM))
    vectors = planted(query, 21)
    names = list(vectors)
    rng = np.random.default_rng(22)
    rng.shuffle(names)
    for start in range(0, len(names), 700):
        index.add([IndexEntry(n, "t", "p", vectors[n]) for n in names[start : start + 700]])
        hits = index.search(query, tenant="t", model_pack="p", k=10_000, min_score=THRESHOLD)
        assert {h.record_id for h in hits} == brute(
            {n: vectors[n] for n in names[: start + 700]}, query, THRESHOLD
        )
    index.settle()
    copy = blocks_of(index)
    assert len(copy.blocks) == len(vectors) // BLOCK  # every full block sealed
    # the codes array grew (doubling) while blocks were sealed: none still holds an old one
    assert all(block.base is copy.codes for block in copy.blocks)
    # rows of sealed blocks: background rows now just above, planted ones now just below
    for name in [n for n in names[:BLOCK] if n.startswith("bg")][:6]:
        vectors[name] = at_score(query, THRESHOLD + 2e-5, rng, half_steps=True)
        index.add([IndexEntry(name, "t", "p", vectors[name])])
    for name in [n for n in names[: 4 * BLOCK] if n.startswith("above")][:6]:
        vectors[name] = at_score(query, THRESHOLD - 2e-5, rng, half_steps=True)
        index.add([IndexEntry(name, "t", "p", vectors[name])])
    gone = names[BLOCK : 2 * BLOCK : 3] + names[-40:]  # holes filled with the last rows
    index.delete(gone)
    for name in gone:
        del vectors[name]
    if not rebuild:
        assert sum(len(block.dirty) for block in copy.blocks) > 0
    for _ in range(2):  # before and after any rebuild
        hits = index.search(query, tenant="t", model_pack="p", k=10_000, min_score=THRESHOLD)
        assert {h.record_id for h in hits} == brute(vectors, query, THRESHOLD)
        index.settle()
    assert copy.blocks and not compact_scan._nbits_broken
    index.close()


@pytest.mark.usefixtures("blocks_on")
def test_block_scores_are_the_exact_integer_sums(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel, fed the pre-quantised query, gives s s_q (c_q . c_x) within _KERNEL_TOL on
    random queries (not only the two fixed ones of its build-time check)."""
    rng = np.random.default_rng(5)
    rows = np.stack([unit(rng.normal(size=DIM)) for _ in range(3 * BLOCK)])
    copy = compact_scan.CompactCopy(DIM, BLOCK)
    copy.load(rows)
    copy.settle()
    assert len(copy.blocks) == 3
    signed = copy.codes.astype(np.int64) - 128
    for _ in range(20):
        query = unit(rng.normal(size=DIM))
        codes, step = compact_scan.quantise_query(query)
        fed = (codes.astype(np.float32) * np.float32(step)).reshape(1, -1)
        out = np.concatenate([b.session.run(None, {"query": fed})[0].reshape(-1) for b in copy.blocks])  # type: ignore[attr-defined]
        exact = (signed @ codes.astype(np.int64)) * step / 256
        assert np.abs(out - exact).max() <= compact_scan._KERNEL_TOL


@pytest.mark.usefixtures("blocks_on")
def test_a_kernel_that_disagrees_is_dropped_for_good(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A kernel computing something else (here: built with scale 1/255 instead of 1/256, as a
    different onnxruntime might quantise differently) fails the build-time check: the blocks go,
    MatMulInteger scans everything, the answers stay exact, and the log says so once, without
    any vector or score."""
    monkeypatch.setattr(compact_scan, "_NBITS_SCALE", 1.0 / 255)
    index = ExactVectorIndex(None, compact_from=0, block_rows=BLOCK)
    query = unit(np.random.default_rng(31).normal(size=DIM))
    vectors = planted(query, 31)
    with caplog.at_level("WARNING", logger=compact_scan.__name__):
        index.add([IndexEntry(n, "t", "p", v) for n, v in vectors.items()])
        index.settle()
        index.add([IndexEntry("late", "t", "p", vectors["bg-0"])])  # no further attempt
        index.settle()
    assert compact_scan._nbits_broken
    assert blocks_of(index).blocks == []
    warnings = [r for r in caplog.records if "MatMulNBits" in r.getMessage()]
    assert len(warnings) == 1
    vectors["late"] = vectors["bg-0"]
    hits = index.search(query, tenant="t", model_pack="p", k=10_000, min_score=THRESHOLD)
    assert {h.record_id for h in hits} == brute(vectors, query, THRESHOLD)
    index.close()


@pytest.mark.usefixtures("blocks_on")
def test_the_block_search_loses_faces_without_the_margin(monkeypatch: pytest.MonkeyPatch) -> None:
    """The planted vectors are close enough to the threshold that the margin matters: with it
    set to zero, the block scan misses faces above the threshold (so the tests above can fail)."""
    index = ExactVectorIndex(None, compact_from=0, block_rows=BLOCK)
    query = unit(np.random.default_rng(41).normal(size=DIM))
    vectors = planted(query, 41)
    index.add([IndexEntry(n, "t", "p", v) for n, v in vectors.items()])
    index.settle()
    assert blocks_of(index).blocks
    expected = brute(vectors, query, THRESHOLD)
    hits = index.search(query, tenant="t", model_pack="p", k=10_000, min_score=THRESHOLD)
    assert {h.record_id for h in hits} == expected
    margin = compact_scan.CompactCopy.margin

    def no_margin(self: compact_scan.CompactCopy, q: NDArray[np.float32]) -> tuple[Any, float, float]:
        codes, step, _ = margin(self, q)
        return codes, step, 0.0

    monkeypatch.setattr(compact_scan.CompactCopy, "margin", no_margin)
    monkeypatch.setattr(compact_scan, "_SLACK", 0.0)
    monkeypatch.setattr(compact_scan, "_KERNEL_TOL", 0.0)
    hits = index.search(query, tenant="t", model_pack="p", k=10_000, min_score=THRESHOLD)
    assert {h.record_id for h in hits} < expected
    index.close()

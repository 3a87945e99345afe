"""One threshold search at registry scale, side by side in one run: the embedded index's float32
scan, its compact int8 scan with exact rescoring (adapters/compact_scan.py) as it is (sealed
MatMulNBits blocks + MatMulInteger tail: "compact") and as it was (MatMulInteger over every row:
"compact_integer"), and faiss flat (IndexFlatIP, range search and top-k), all on one thread.

    python bench/search_compact.py [--sizes 100000 1000000] [--queries 200] [--threshold T]

The threshold is the default pack's review threshold for the gallery size unless given.

Templates are synthetic, drawn from the two-covariance model fitted to the real LFW templates
(synthetic.py; .cache/bench/lfw-templates.npz, which bench/index_recall.py writes; random unit
vectors without it). Each query is a new photo of a registered person, so every query has a
genuine duplicate near or above the threshold; the script checks that the compact scan returns
exactly the float32 scan's hits for every query. Wall and CPU (thread) time are both reported,
with the load average: the machine is shared.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from face_dedup.adapters import compact_scan
from face_dedup.adapters.embedded_index import ExactVectorIndex
from face_dedup.ports import IndexEntry
from face_dedup.synthetic import FaceStatistics

CACHE = Path(__file__).resolve().parent.parent / ".cache" / "bench" / "lfw-templates.npz"


def statistics_model() -> FaceStatistics | None:
    if not CACHE.exists():
        return None
    with np.load(CACHE, allow_pickle=False) as saved:
        names = [str(n) for n in saved["names"]]
        vectors = saved["vectors"].astype(np.float32)
    return FaceStatistics.fit(vectors, [n.split("/")[1] if "/" in n else n for n in names])


def templates(stats: FaceStatistics | None, n: int, queries: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(n)
    if stats is None:
        rows = rng.standard_normal((n + queries, dim), dtype=np.float32)
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        return rows[:n], rows[n:]
    centres = stats.centres(rng, n)
    gallery = stats.photos(rng, centres)
    probes = stats.photos(rng, centres[rng.choice(n, queries, replace=False)])  # a second photo
    return gallery, probes


def resident_mb() -> float:
    """This process's resident memory, after handing freed heap pages back (so a delta is what
    an index holds, not the allocator's leftovers)."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


VARIANTS = {  # ExactVectorIndex arguments of each variant whose memory is measured
    "float32": {"compact_from": sys.maxsize},
    "compact_integer": {"block_rows": sys.maxsize},
    "compact": {},
}


def memory_of(path: str, variant: str) -> None:
    """In a fresh process (--memory-of): the resident memory one opened index adds, built."""
    import onnxruntime  # noqa: F401 - its own memory is not the index's

    before = resident_mb()
    if variant != "compact":
        index = ExactVectorIndex(Path(path), **VARIANTS[variant])
        print(json.dumps({"mb": resident_mb() - before}))
        return
    # opened without blocks, then they are sealed: the growth is what the sessions hold
    index = ExactVectorIndex(Path(path), block_rows=sys.maxsize)
    without = resident_mb()
    copy = index._partitions[("t", "p")].compact
    with copy._lock:
        copy.block_rows = compact_scan.BLOCK_ROWS
        copy._kick()
    index.settle()
    print(json.dumps({"mb": resident_mb() - before, "blocks_mb": resident_mb() - without}))


def index_memory(path: Path, variant: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--memory-of", str(path), variant],
        check=True,
        capture_output=True,
        text=True,
    )
    measured: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return measured


def review_threshold(n: int) -> float:
    from face_dedup.bootstrap import build_service
    from face_dedup.settings import Settings

    settings = Settings.load(data_dir=Path(tempfile.mkdtemp(prefix="face-dedup-search-")))
    service, _ = build_service(settings, with_engine=False)
    return float(service.thresholds(n).review)


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    wall, cpu = time.perf_counter(), time.thread_time()
    out = fn()
    return time.perf_counter() - wall, time.thread_time() - cpu, out


def summary(samples: list[tuple[float, float]]) -> dict[str, float]:
    walls = sorted(s[0] * 1000 for s in samples)
    cpus = sorted(s[1] * 1000 for s in samples)
    return {
        "wall_ms_median": round(statistics.median(walls), 2),
        "wall_ms_p95": round(walls[int(0.95 * (len(walls) - 1))], 2),
        "cpu_ms_median": round(statistics.median(cpus), 2),
        "cpu_ms_p95": round(cpus[int(0.95 * (len(cpus) - 1))], 2),
    }


def bench_size(
    stats: FaceStatistics | None, n: int, queries: int, threshold: float, dim: int
) -> dict[str, Any]:
    gallery, probes = templates(stats, n, queries, dim)
    with tempfile.TemporaryDirectory(prefix="face-dedup-search-") as tmp:
        path = Path(tmp) / "index.sqlite"
        writer = ExactVectorIndex(path)
        for start in range(0, n, 50_000):
            chunk = gallery[start : start + 50_000]
            writer.add([IndexEntry(f"r{start + i}", "t", "p", v) for i, v in enumerate(chunk)])
        writer.close()
        memory = {variant: index_memory(path, variant) for variant in VARIANTS}
        full = ExactVectorIndex(path, compact_from=sys.maxsize)  # the float32 scan only
        integer = ExactVectorIndex(path, block_rows=sys.maxsize)  # the compact scan before blocks
        started = time.perf_counter()
        compact = ExactVectorIndex(path)  # compact scan from 20k vectors, 64k-row blocks (defaults)
        compact.settle()  # its blocks are built in the background
        open_and_build_s = time.perf_counter() - started
        flat = faiss.IndexFlatIP(gallery.shape[1])
        flat.add(gallery)
        methods: dict[str, Callable[[np.ndarray], Any]] = {
            "float32": lambda q: full.search(q, tenant="t", model_pack="p", k=10, min_score=threshold),
            "compact": lambda q: compact.search(q, tenant="t", model_pack="p", k=10, min_score=threshold),
            "compact_integer": lambda q: integer.search(
                q, tenant="t", model_pack="p", k=10, min_score=threshold
            ),
            "faiss_range": lambda q: flat.range_search(q[None], threshold),
            "faiss_top10": lambda q: flat.search(q[None], 10),
        }
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in methods}
        order = list(methods)
        mismatches = hits_total = 0
        for i, probe in enumerate(probes):
            results: dict[str, Any] = {}
            turn = i % len(order)
            for name in order[turn:] + order[:turn]:  # rotate: no method always runs first
                wall, cpu, results[name] = timed(lambda m=methods[name], q=probe: m(q))
                runs[name].append((wall, cpu))
            hits_total += len(results["float32"])
            mismatches += [h.record_id for h in results["compact"]] != [
                h.record_id for h in results["float32"]
            ] or [h.record_id for h in results["compact_integer"]] != [
                h.record_id for h in results["float32"]
            ]
        partition = compact._partitions[("t", "p")]  # the bench reports its memory
        row = {
            "vectors": n,
            "data": "synthetic (fitted to LFW templates)" if stats is not None else "random unit vectors",
            "threshold": threshold,
            "queries": queries,
            "hits_returned": hits_total,
            "compact_differs_from_float32": mismatches,
            "compact_err_max": round(partition.compact.err_max, 5),
            "compact_outliers": int(partition.compact.outlier[: partition.size].sum()),
            "compact_blocks": len(partition.compact.blocks),
            "compact_open_and_build_s": round(open_and_build_s, 1),
            # resident memory each opened index adds (a fresh process each), per 1M vectors
            **{f"rss_{name}_index_mb_per_1M": round(m["mb"] * 1e6 / n, 1) for name, m in memory.items()},
            "rss_compact_blocks_mb_per_1M": round(memory["compact"]["blocks_mb"] * 1e6 / n, 1),
            "float32_mb": round(partition.size * partition.dim * 4 / 2**20, 1),
            "int8_copy_mb": round(partition.size * partition.dim / 2**20, 1),
            **{name: summary(samples) for name, samples in runs.items()},
            "load_average": os.getloadavg(),
        }
        for index in (compact, integer, full):
            index.close()
    return row


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--threshold", type=float, default=None, help="default: the review threshold")
    parser.add_argument("--memory-of", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--dim", type=int, default=128, help="random vectors only (without the LFW cache)")
    args = parser.parse_args()
    if args.memory_of:
        memory_of(*args.memory_of)
        return 0
    faiss.omp_set_num_threads(1)
    stats = statistics_model()
    for n in args.sizes:
        threshold = args.threshold if args.threshold is not None else review_threshold(n)
        print(json.dumps(bench_size(stats, n, args.queries, threshold, args.dim)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

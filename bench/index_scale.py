"""The embedded exact index at registry scale: build, reopen, memory and query latency.

    python bench/index_scale.py [--sizes 10000 100000 1000000] [--dim 128]

Vectors are random unit vectors (the cost of an exact scan does not depend on the data);
each size gets a few planted near-duplicates, and every threshold search must return all of
them (exact search: recall is 1 by construction, and this checks it).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from face_dedup.adapters.embedded_index import ExactVectorIndex
from face_dedup.ports import IndexEntry


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    rows = rng.standard_normal((n, dim), dtype=np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows


def bench_size(n: int, dim: int, queries: int) -> dict[str, float]:
    rng = np.random.default_rng(n)
    with tempfile.TemporaryDirectory(prefix="face-dedup-index-") as tmp:
        path = Path(tmp) / "index.sqlite"
        index = ExactVectorIndex(path)
        started = time.perf_counter()
        batch = 20_000
        for start in range(0, n, batch):
            rows = unit_rows(rng, min(batch, n - start), dim)
            index.add([IndexEntry(f"r{start + i}", "t", "p", row) for i, row in enumerate(rows)])
        build_s = time.perf_counter() - started
        index.close()

        started = time.perf_counter()
        index = ExactVectorIndex(path)
        reopen_s = time.perf_counter() - started
        probes = unit_rows(rng, queries, dim)
        # plant one near-duplicate per probe
        planted = []
        for i, probe in enumerate(probes[:20]):
            noisy = probe + 0.3 * unit_rows(rng, 1, dim)[0]
            noisy /= np.linalg.norm(noisy)
            index.add([IndexEntry(f"dup{i}", "t", "p", noisy)])
            planted.append((i, float(noisy @ probe)))
        latencies = []
        for probe in probes:
            t0 = time.perf_counter()
            index.search(probe, tenant="t", model_pack="p", k=10, min_score=0.5)
            latencies.append(time.perf_counter() - t0)
        found = sum(
            any(
                h.record_id == f"dup{i}"
                for h in index.search(probes[i], tenant="t", model_pack="p", k=10, min_score=score - 1e-4)
            )
            for i, score in planted
        )
        index.close()
        size_mb = path.stat().st_size / 2**20
    return {
        "vectors": n,
        "build_s": round(build_s, 1),
        "reopen_s": round(reopen_s, 1),
        "query_median_ms": round(statistics.median(latencies) * 1000, 2),
        "query_p95_ms": round(sorted(latencies)[int(0.95 * (len(latencies) - 1))] * 1000, 2),
        "planted_found": f"{found}/{len(planted)}",
        "sqlite_mb": round(size_mb, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    results = [bench_size(n, args.dim, args.queries) for n in args.sizes]
    for row in results:
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The bulk import's blocked self-join (adapters.self_join.join_block) at registry scale, on synthetic
templates with planted duplicates, timed alone (the photos' analysis and registration are not
in it): what `face-dedup import --bulk` spends instead of one gallery scan per photo.

    python bench/bulk_join.py [--sizes 100000 200000 300000] [--chunk 4096] [--tile 2048]

Templates are drawn from the two-covariance model fitted to the real LFW templates
(synthetic.py; .cache/bench/lfw-templates.npz, random unit vectors without it). 1% of the rows
are a second photo of an earlier row's person, placed at a random later position. Each chunk is
joined (int8 code tiles with float32 rescoring, as bulk.py; `--tiles int8 float32` for both) at
the default pack's review threshold for the gallery size before it (every earlier
row counted as enrolled: the most work), as bulk.py does. Every planted pair whose score is at
or above its threshold must be found (checked). BLAS uses every core (2 here); wall and CPU
(process) time are both printed, with the load average: the machine is shared. The cost grows
with N^2: the script fits t = c N^2 to the sizes run (first kind of tile) and extrapolates to
1M (marked as such).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from face_dedup.adapters import compact_scan
from face_dedup.adapters.self_join import join_block
from face_dedup.bootstrap import build_service
from face_dedup.settings import Settings
from face_dedup.synthetic import FaceStatistics

CACHE = Path(__file__).resolve().parent.parent / ".cache" / "bench" / "lfw-templates.npz"


def review_thresholds() -> object:
    settings = Settings.load(data_dir=Path(tempfile.mkdtemp(prefix="face-dedup-bulk-")))
    service, _ = build_service(settings, with_engine=False)
    return lambda gallery: service.thresholds(gallery).review


def templates(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows, and the planted pairs (earlier row, later row)."""
    rng = np.random.default_rng(seed)
    planted = n // 100
    if CACHE.exists():
        with np.load(CACHE, allow_pickle=False) as saved:
            names = [str(x) for x in saved["names"]]
            stats = FaceStatistics.fit(saved["vectors"].astype(np.float32), [x.split("/")[1] for x in names])
        centres = stats.centres(rng, n - planted)
        firsts = rng.choice(n - planted, planted, replace=False)
        rows = stats.photos(rng, np.concatenate([centres, centres[firsts]]))
    else:
        rows = rng.standard_normal((n, 128), dtype=np.float32)
        firsts = rng.choice(n - planted, planted, replace=False)
        rows[n - planted :] = rows[firsts] + 0.5 * rng.standard_normal((planted, 128), dtype=np.float32)
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    # shuffle positions, keeping each second photo after its first
    order = rng.permutation(n)
    position = np.empty(n, dtype=np.int64)
    position[order] = np.arange(n)
    a, b = position[firsts], position[np.arange(n - planted, n)]
    pairs = np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1)
    return np.ascontiguousarray(rows[order]), pairs, rows


def bench(n: int, chunk: int, tile: int, review: object, coded: bool) -> dict[str, object]:
    rows, pairs, _ = templates(n, seed=n)
    wall, cpu = time.perf_counter(), time.process_time()
    codes = None
    if coded:  # what self_join.JoinAnswers does as photos arrive; timed with the join
        parts = [compact_scan.encode(rows[s : s + 65_536]) for s in range(0, n, 65_536)]
        codes = (
            np.concatenate([p[0] for p in parts]),
            np.concatenate([p[1] for p in parts]),
            max(p[2] for p in parts),
        )
    found: set[tuple[int, int]] = set()
    thresholds = np.empty(n, dtype=np.float32)
    total_pairs = 0
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        threshold = review(start)  # type: ignore[operator]
        thresholds[start:stop] = threshold
        i, j, scores = join_block(rows, start, stop, threshold, tile=tile, coded=codes)
        keep = (scores >= threshold) & (i != j)
        total_pairs += int(keep.sum())
        found.update(zip(j[keep].tolist(), i[keep].tolist(), strict=True))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    planted_scores = np.einsum("ij,ij->i", rows[pairs[:, 0]], rows[pairs[:, 1]])
    due = [(int(a), int(b)) for (a, b), s in zip(pairs, planted_scores, strict=True) if s >= thresholds[b]]
    return {
        "templates": n,
        "tiles": "int8 codes + float32 rescoring" if coded else "float32",
        "chunk": chunk,
        "tile": tile,
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "pairs_above_threshold": total_pairs,
        "planted": len(pairs),
        "planted_above_threshold": len(due),
        "planted_found": sum(1 for pair in due if pair in found),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="*", default=[100_000, 200_000, 300_000])
    parser.add_argument("--chunk", type=int, default=4096)
    parser.add_argument("--tile", type=int, default=2048)
    parser.add_argument(
        "--tiles", nargs="*", default=["int8"], choices=["int8", "float32"], help="int8: as bulk.py"
    )
    args = parser.parse_args()
    review = review_thresholds()
    results = []
    for n in args.sizes:
        for kind in args.tiles:  # each size with each kind of tile, in one run
            row = bench(n, args.chunk, args.tile, review, coded=kind == "int8")
            print(json.dumps(row), flush=True)
            if kind == args.tiles[0]:
                results.append(row)
    sizes = np.array([r["templates"] for r in results], dtype=np.float64)
    walls = np.array([r["wall_s"] for r in results], dtype=np.float64)
    cpus = np.array([r["cpu_s"] for r in results], dtype=np.float64)
    c_wall = float((walls * sizes**2).sum() / (sizes**4).sum())  # least squares for t = c N^2
    c_cpu = float((cpus * sizes**2).sum() / (sizes**4).sum())
    print(
        json.dumps(
            {
                "extrapolated_1M_wall_min": round(c_wall * 1e12 / 60, 1),
                "extrapolated_1M_cpu_min": round(c_cpu * 1e12 / 60, 1),
                "note": "EXTRAPOLATED from the sizes above with t = c N^2 (least squares), not measured",
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

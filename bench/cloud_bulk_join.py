"""One chunk of the cloud bulk job's join step (cloud_bulk_decide.join_chunk) timed on local
blob stores: the chunk's rows against a gallery snapshot and every earlier row of the job, as
the Lambda runs it (npz parts read READERS at a time, earlier rows streamed in BLOCKs, the
gallery shard by shard), without S3's latency.

    python bench/cloud_bulk_join.py [--earlier 100000] [--gallery 100000] [--chunk 4096]

Templates are random unit vectors (128-d) with 1% planted duplicates of earlier rows (score
0.7); the threshold is the default pack's review threshold at the gallery size. Prints wall
and process CPU time, the peak resident memory (ru_maxrss), the pairs found, and how many of
the planted pairs in the chunk were found (all must be), with the load average: the machine
is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from face_dedup import cloud_bulk_decide
from face_dedup.adapters.local_blobs import LocalBlobStore
from face_dedup.bootstrap import build_service
from face_dedup.cloud_bulk import part_key, vectors_key
from face_dedup.settings import Settings

TENANT, JOB, DIM, PART = "default", "bench", 128, 100


def unit_rows(rng: np.random.Generator, n: int) -> NDArray[np.float32]:
    rows = rng.standard_normal((n, DIM)).astype(np.float32)
    normed: NDArray[np.float32] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return normed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--earlier", type=int, default=100_000)
    parser.add_argument("--gallery", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=4096)
    args = parser.parse_args()
    rng = np.random.default_rng(7)
    root = Path(tempfile.mkdtemp(prefix="face-dedup-cloud-join-"))
    settings = Settings.load(data_dir=root / "registry")
    service, _ = build_service(settings, with_engine=False)
    threshold = float(service.thresholds(args.gallery).review)
    parts = LocalBlobStore(root / "parts")
    total = args.earlier + args.chunk
    rows = unit_rows(rng, total)
    planted = rng.choice(args.earlier, args.chunk // 100, replace=False)
    at = rng.choice(args.chunk, len(planted), replace=False) + args.earlier
    for earlier, later in zip(planted, at, strict=True):
        other = unit_rows(rng, 1)[0]
        other -= (other @ rows[earlier]) * rows[earlier]
        rows[later] = 0.7 * rows[earlier] + np.sqrt(1 - 0.7**2) * other / np.linalg.norm(other)
    for first in range(0, total, PART):
        last = min(first + PART, total)
        entries = np.arange(first, last)
        body = cloud_bulk_decide._npz(
            rows=entries.astype(np.int64),
            analysed=np.ones(len(entries), dtype=np.bool_),
            keys=np.array([f"imp_{r:024d}" for r in entries], dtype=np.str_),
            vectors=rows[first:last],
        )
        parts.put(vectors_key(TENANT, JOB, first, last - 1), body, "application/octet-stream")
        parts.put(part_key(TENANT, JOB, first), b"{}", "application/json")
    gallery = unit_rows(rng, args.gallery)
    shards = 0
    for first in range(0, args.gallery, cloud_bulk_decide.SHARD):
        ids = np.array(
            [f"rec_{n:020d}" for n in range(first, min(first + cloud_bulk_decide.SHARD, args.gallery))]
        )
        body = cloud_bulk_decide._npz(ids=ids, vectors=gallery[first : first + len(ids)])
        parts.put(cloud_bulk_decide.gallery_key(TENANT, JOB, shards), body, "application/octet-stream")
        shards += 1
    snapshot = {
        "size": args.gallery,
        "shards": shards,
        "threshold": threshold,
        "model_pack": service.model_pack,
    }
    parts.put(cloud_bulk_decide.gallery_key(TENANT, JOB), json.dumps(snapshot).encode(), "application/json")

    del rows, gallery
    tracemalloc.start()  # numpy's buffers are traced: the join's own peak, not the set-up's
    wall, cpu = time.perf_counter(), time.process_time()
    result = cloud_bulk_decide.join_chunk(parts=parts, tenant=TENANT, job=JOB, first=args.earlier, last=total)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    found = cloud_bulk_decide._load(parts.get(cloud_bulk_decide.candidates_key(TENANT, JOB, args.earlier)))
    pairs = set(zip(found["job_row"].tolist(), found["job_earlier"].tolist(), strict=True))
    hits = sum((int(later), int(earlier)) in pairs for earlier, later in zip(planted, at, strict=True))
    compared = args.chunk * (args.earlier + args.gallery) + args.chunk * (args.chunk + 1) // 2
    print(
        json.dumps(
            {
                "chunk": args.chunk,
                "earlier_rows": args.earlier,
                "gallery": args.gallery,
                "threshold": round(threshold, 4),
                "pairs_written": result["pairs"],
                "planted_found": f"{hits}/{len(planted)}",
                "wall_s": round(wall, 2),
                "cpu_s": round(cpu, 2),
                "ns_per_pair_cpu": round(cpu / compared * 1e9, 2),
                "join_peak_traced_mb": round(peak / 2**20),
                "process_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                "load": os.getloadavg(),
            }
        )
    )
    assert hits == len(planted), "a planted pair above the threshold was not found"


if __name__ == "__main__":
    main()

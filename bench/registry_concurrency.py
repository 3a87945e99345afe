"""The cost of the local registry's write lock: decisions (1:N search + commits) per second on a
gallery of synthetic templates, from one process and from several at once. No model files.

    python bench/registry_concurrency.py --gallery 100000 --processes 1 --per-process 200
    python bench/registry_concurrency.py --gallery 100000 --processes 4 --per-process 50

The gallery is built once in --data-dir (reused when it exists). Also prints the store's
quick_check time at open. Numbers taken while something else runs are noisy: say so.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.unit.registry_worker import template  # noqa: E402

from face_dedup.adapters.sqlite_files import integrity_problems  # noqa: E402
from face_dedup.bootstrap import build_service  # noqa: E402
from face_dedup.domain import ImportItem, Outcome, Record, RecordStatus, utc_now  # noqa: E402
from face_dedup.ports import EnrollmentCommit, IndexEntry  # noqa: E402
from face_dedup.service import InputRef  # noqa: E402
from face_dedup.settings import Settings  # noqa: E402


def seed(data_dir: Path, size: int) -> None:
    service, adapters = build_service(Settings.load(data_dir=data_dir), with_engine=False)
    vectors = np.random.default_rng(1).standard_normal((size, 128)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    entries = []
    for n in range(size):
        record_id, digest = f"rec_seed_{n:08d}", f"{n:064d}"
        record = Record(
            record_id, "default", service.model_pack, f"S-{n}", f"s{n}.jpg", digest,
            RecordStatus.ENROLLED, utc_now(), vectors[n], None, {},
        )  # fmt: skip
        item = ImportItem(
            f"imp_seed_{n}", "default", f"s{n}.jpg", f"S-{n}", digest, Outcome.ENROLLED, utc_now(), record_id
        )
        service.store.commit(EnrollmentCommit(item=item, record=record))
        entries.append(IndexEntry(record_id, "default", service.model_pack, vectors[n]))
        if len(entries) == 5000:
            service.index.add(entries)
            entries = []
    if entries:
        service.index.add(entries)
    adapters.close()


def worker(data_dir: Path, tag: int, count: int) -> None:
    service, adapters = build_service(Settings.load(data_dir=data_dir), with_engine=False)
    faces = [template(service.settings, 1_000_000 + tag * 10_000 + k, 0, 0.0) for k in range(count)]
    started = time.perf_counter()
    for k, face in enumerate(faces):
        service.register(InputRef(f"{tag}-{k}.jpg", f"B-{tag}-{k}"), f"{tag:08d}{k:056d}", face, None)
    print(json.dumps({"seconds": time.perf_counter() - started, "count": count}))
    adapters.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "face-dedup-bench")
    parser.add_argument("--gallery", type=int, default=100_000)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--per-process", type=int, default=200)
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    data_dir = args.data_dir / f"gallery-{args.gallery}"
    if args.worker is not None:
        worker(data_dir, args.worker, args.per_process)
        return
    if not (data_dir / "registry.sqlite").exists():
        started = time.perf_counter()
        seed(data_dir, args.gallery)
        print(f"gallery of {args.gallery} built in {time.perf_counter() - started:.1f} s")
    db = sqlite3.connect(data_dir / "registry.sqlite")
    started = time.perf_counter()
    integrity_problems(db, quick=True)
    size = (data_dir / "registry.sqlite").stat().st_size / 1e6
    print(f"quick_check of the {size:.0f} MB store: {time.perf_counter() - started:.2f} s")
    db.close()
    base = 100 + int(time.time()) % 10_000  # fresh application ids every run (nothing resumed)
    started = time.perf_counter()
    runs = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--data-dir",
                str(args.data_dir),
                "--gallery",
                str(args.gallery),
                "--per-process",
                str(args.per_process),
                "--worker",
                str(base + p),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for p in range(args.processes)
    ]
    results = [json.loads(run.communicate()[0]) for run in runs]
    wall = time.perf_counter() - started
    total = sum(r["count"] for r in results)
    print(
        f"{args.processes} process(es) x {args.per_process} decisions: "
        f"{[round(r['seconds'], 2) for r in results]} s each; {total} in {wall:.1f} s wall "
        f"(incl. start-up); slowest process {total / max(r['seconds'] for r in results):.0f} decisions/s"
    )


if __name__ == "__main__":
    main()

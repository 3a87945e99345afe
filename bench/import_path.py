"""Where an import's CPU goes: the photo pipeline (the analysis threads) against everything
else (the thread that reads, registers and reports inputs in order), on the CLI's code path.

    python bench/import_path.py [--shared ../shared/data/faces] [--sample 400] [--workers 0]

Imports the first `--sample` LFW photos (path order; 0 = all) into an empty registry, as
`face-dedup import --workers N` does (OpenCV at one thread per worker, onnxruntime at one), and
prints images/s, CPU per photo of the whole process, of the analysis (everything off the
importing thread: the analysis threads and the embedder runtime's threads; the analysis threads
alone beside it) and of the registering thread, its wall time per photo (when it exceeds the
analysis threads' share, registration is what limits the import), and the load average: on a
loaded machine wall times say little, CPU times still hold.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import onnxruntime

from face_dedup.analysis import FaceTemplate, Rejection
from face_dedup.bootstrap import (
    analysis_workers,
    build_service,
    embedder_runtime_choice,
    one_thread_per_analysis_worker,
)
from face_dedup.importer import collect_inputs, run_import
from face_dedup.models.registry import get_pack
from face_dedup.service import SYSTEM_ACTOR, InputRef
from face_dedup.settings import Settings


def _load() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0]) if Path("/proc/loadavg").exists() else -1.0


def measure(settings: Settings, photos: list[Path], workers: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="face-dedup-bench-") as tmp:
        listing = Path(tmp) / "photos.txt"  # removed with the registry (was left behind per run)
        listing.write_text("".join(f"{p.resolve()}\n" for p in photos))
        service, adapters = build_service(
            settings.with_overrides(data_dir=Path(tmp) / "registry", workers=workers or None)
        )
        # 0: as `face-dedup import` does by default (one thread per core, two on OpenVINO).
        workers = analysis_workers(settings.with_overrides(workers=workers or None), service.engine)
        one_thread_per_analysis_worker(workers)
        analysis_cpu: list[float] = []
        registering = [0.0, 0.0]  # wall, CPU of register() on the importing thread
        lock = threading.Lock()
        analyze, register = service.analyze, service.register

        def timed_analyze(data: bytes) -> FaceTemplate | Rejection:
            start = time.thread_time()
            result = analyze(data)
            with lock:
                analysis_cpu.append(time.thread_time() - start)
            return result

        def timed_register(
            ref: InputRef,
            digest: str,
            analysis: FaceTemplate | Rejection,
            data: bytes | None,
            actor: str = SYSTEM_ACTOR,
        ) -> Any:
            wall, cpu = time.perf_counter(), time.thread_time()
            item = register(ref, digest, analysis, data, actor)
            registering[0] += time.perf_counter() - wall
            registering[1] += time.thread_time() - cpu
            return item

        # instance attributes shadow the methods for this run only
        service.analyze = timed_analyze  # type: ignore[method-assign]
        service.register = timed_register  # type: ignore[method-assign]
        service.analyze(photos[0].read_bytes())  # sessions warm before the clock starts
        analysis_cpu.clear()
        inputs = collect_inputs(listing)
        load_before = _load()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        wall, main_cpu = time.perf_counter(), time.thread_time()
        try:
            summary = run_import(service, inputs, workers=workers)
        finally:
            adapters.close()
        wall, main_cpu = time.perf_counter() - wall, time.thread_time() - main_cpu
        after = resource.getrusage(resource.RUSAGE_SELF)
    n = summary.total
    process_cpu = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)

    def per_photo(seconds: float) -> float:
        return round(seconds / n * 1000, 2)

    return {
        "photos": n,
        "workers": workers,
        "outcomes": dict(summary.outcomes),
        "wall_s": round(wall, 1),
        "images_per_s": round(n / wall, 1),
        "process_cpu_ms_per_photo": per_photo(process_cpu),
        # Off the importing thread: the analysis threads and the embedder runtime's own threads
        # (OpenVINO runs each call on a stream thread, which the analysis threads' CPU misses).
        "analysis_cpu_ms_per_photo": per_photo(process_cpu - main_cpu),
        "analysis_threads_cpu_ms_per_photo": per_photo(sum(analysis_cpu)),
        "importing_thread_cpu_ms_per_photo": per_photo(main_cpu),
        "register_cpu_ms_per_photo": per_photo(registering[1]),
        "register_wall_ms_per_photo": per_photo(registering[0]),
        "two_core_ceiling_images_per_s": round(2000 / per_photo(process_cpu), 1),
        "load_average": [load_before, _load()],
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--shared", type=Path, default=Path(__file__).resolve().parents[1] / "../shared/data/faces"
    )
    parser.add_argument("--sample", type=int, default=400, help="first N LFW photos in path order; 0 = all")
    parser.add_argument("--workers", type=int, default=0, help="analysis threads; 0: as the CLI chooses")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    lfw = args.shared / "lfw"
    if not lfw.is_dir():
        print(f"bench/import_path.py skipped: no photos at {lfw}")
        return 0
    photos = sorted(lfw.glob("*/*.jpg"))
    photos = photos[: args.sample] if args.sample else photos
    settings = Settings.load()
    result = {
        "pack": settings.model_pack,
        "embedder_runtime": embedder_runtime_choice(settings, get_pack(settings.model_pack)).runtime,
        "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}, "
        f"onnxruntime {onnxruntime.__version__}, OpenCV {cv2.__version__}",
        **measure(settings, photos, args.workers),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Cold start per cloud function, and the ingest path's per-photo CPU time, measured locally.

    .venv/bin/python bench/ingest_cold_start.py PHOTO [PHOTO2]          # the ingest function
    .venv/bin/python bench/ingest_cold_start.py --all [--json out.json]   # every function
    .venv/bin/python bench/ingest_cold_start.py --per-photo PHOTO... [--json out.json]

Cold start, in a fresh interpreter per function: importing its handler module (Powertools,
the core, and for the engine functions OpenCV and onnxruntime), then building its parts from
its declaration in `face_dedup.wiring` (model sessions; AWS clients are created but connect
to nothing), then for the ingest function the first and a second photo through the face
pipeline. Lambda's own init (layer download, sandbox) is not included.

Per photo (`--per-photo`): the ingest function's analysis (`service.analyze`, one
onnxruntime/OpenCV thread, as deployed) on each photo after a warm-up, with the calling
thread's CPU time beside the whole process's: when they are equal the function cannot use a
second vCPU, so the memory setting need only buy one (1769 MB in Lambda). Also the peak
resident memory of the process.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS_ENV = {
    "AWS_ACCESS_KEY_ID": "unused",
    "AWS_SECRET_ACCESS_KEY": "unused",
    "FACE_DEDUP_STORE_BACKEND": "dynamodb",
    "FACE_DEDUP_BLOB_BACKEND": "s3",
    "FACE_DEDUP_AWS_REGION": "eu-west-1",
    "FACE_DEDUP_S3_BUCKET": "faces",
    "FACE_DEDUP_UPLOADS_BUCKET": "uploads",
    "FACE_DEDUP_STATE_MACHINE_ARN": "arn:aws:states:eu-west-1:123456789012:stateMachine:dedup",
    # placeholders: clients are created at cold start but connect to nothing
    "FACE_DEDUP_OPENSEARCH_URL": "https://search.invalid",
    "FACE_DEDUP_NOTIFICATION_QUEUE_URL": "https://sqs.eu-west-1.amazonaws.com/123456789012/notify",
    "FACE_DEDUP_SNS_TOPIC_ARN": "arn:aws:sns:eu-west-1:123456789012:officers",
    "FACE_DEDUP_AUDIT_ARCHIVE_BUCKET": "audit",
}


def cold_start(name: str, photos: list[Path]) -> dict[str, object]:
    """Runs inside a fresh interpreter: import, build, then the photos (ingest only)."""
    for key, value in SETTINGS_ENV.items():
        os.environ.setdefault(key, value)
    sys.path.insert(0, str(ROOT))
    from face_dedup import wiring

    spec = wiring.function_spec(name)
    module = f"functions.{spec.code_dir}.{spec.handler.split('.')[0]}"
    t0, c0 = time.perf_counter(), time.process_time()
    __import__(module)  # the import is what is measured
    t1, c1 = time.perf_counter(), time.process_time()
    from face_dedup.bootstrap import build_function
    from face_dedup.settings import Settings

    parts = build_function(Settings.load(), name)
    t2, c2 = time.perf_counter(), time.process_time()
    timings: dict[str, object] = {
        "function": name,
        "engine": spec.engine,
        "memory_mb": spec.memory,
        "import_s": round(t1 - t0, 3),
        "import_cpu_s": round(c1 - c0, 3),
        "build_s": round(t2 - t1, 3),
        "build_cpu_s": round(c2 - c1, 3),
    }
    for n, photo in enumerate(photos if spec.engine else [], 1):
        start = time.perf_counter()
        parts.service.analyze(photo.read_bytes())
        timings[f"photo_{n}_s"] = round(time.perf_counter() - start, 3)
    timings["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return timings


def per_photo(photos: list[Path]) -> dict[str, object]:
    for key, value in SETTINGS_ENV.items():
        os.environ.setdefault(key, value)
    sys.path.insert(0, str(ROOT))
    from face_dedup.bootstrap import build_function
    from face_dedup.settings import Settings

    parts = build_function(Settings.load(), "ingest")
    blobs = [p.read_bytes() for p in photos]
    for data in blobs[:3]:
        parts.service.analyze(data)
    wall, thread, process = [], [], []
    for data in blobs:
        w, t, p = time.perf_counter(), time.thread_time(), time.process_time()
        parts.service.analyze(data)
        wall.append(time.perf_counter() - w)
        thread.append(time.thread_time() - t)
        process.append(time.process_time() - p)

    def median_ms(values: list[float]) -> float:
        return round(statistics.median(values) * 1000, 1)

    return {
        "photos": len(blobs),
        "wall_median_ms": median_ms(wall),
        "thread_cpu_median_ms": median_ms(thread),
        "process_cpu_median_ms": median_ms(process),
        "process_over_thread_cpu": round(sum(process) / sum(thread), 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "load_average": os.getloadavg(),
    }


def main() -> int:
    args = sys.argv[1:]
    out = None
    if "--json" in args:
        at = args.index("--json")
        out = Path(args[at + 1])
        del args[at : at + 2]
    if args[:1] == ["--child"]:  # one function in this fresh interpreter
        print(json.dumps(cold_start(args[1], [Path(p) for p in args[2:4]])))
        return 0
    if args[:1] == ["--per-photo"]:
        report: object = per_photo([Path(p) for p in args[1:]])
    elif args[:1] == ["--all"]:
        sys.path.insert(0, str(ROOT / "src"))
        from face_dedup import wiring

        names = [*wiring.FUNCTIONS, *wiring.OPTIONAL_FUNCTIONS]
        rows = []
        for name in names:
            done = subprocess.run(
                [sys.executable, __file__, "--child", name], capture_output=True, text=True, timeout=300
            )
            lines = done.stdout.strip().splitlines()
            rows.append(
                json.loads(lines[-1])
                if done.returncode == 0 and lines
                else {"function": name, "error": done.stderr[-300:]}
            )
            print(json.dumps(rows[-1]), flush=True)
        report = {"load_average": os.getloadavg(), "functions": rows}
    else:
        report = cold_start("ingest", [Path(p) for p in args[:2]])
    print(json.dumps(report))
    if out:
        out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

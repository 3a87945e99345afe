"""The ingest function's cold start, measured locally in a fresh interpreter: importing the
handler (Powertools, the core, OpenCV, onnxruntime), building its parts from its declaration
(model sessions; AWS clients are created but connect to nothing), then the first and a second
photo through the face pipeline. Lambda's own init (layer download, sandbox) is not included.

    .venv/bin/python bench/ingest_cold_start.py PHOTO [PHOTO2]
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def main() -> int:
    photos = [Path(p) for p in sys.argv[1:3]]
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "unused")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "unused")
    settings_env = {
        "FACE_DEDUP_STORE_BACKEND": "dynamodb",
        "FACE_DEDUP_BLOB_BACKEND": "s3",
        "FACE_DEDUP_AWS_REGION": "eu-west-1",
        "FACE_DEDUP_S3_BUCKET": "faces",
        "FACE_DEDUP_UPLOADS_BUCKET": "uploads",
        "FACE_DEDUP_STATE_MACHINE_ARN": "arn:aws:states:eu-west-1:123456789012:stateMachine:dedup",
    }
    os.environ.update(settings_env)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    t0 = time.perf_counter()
    import functions.ingest.handler as handler  # noqa: F401 - the import is what is measured

    t1 = time.perf_counter()
    from face_dedup.bootstrap import build_function
    from face_dedup.settings import Settings

    parts = build_function(Settings.load(), "ingest")
    t2 = time.perf_counter()
    timings = {"import_s": t1 - t0, "build_s": t2 - t1}
    for n, photo in enumerate(photos, 1):
        start = time.perf_counter()
        parts.service.analyze(photo.read_bytes())
        timings[f"photo_{n}_s"] = time.perf_counter() - start
    print(json.dumps({k: round(v, 3) for k, v in timings.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The capture page's files and where onnxruntime-web is installed: plain names, no runtime
imports, so the CDK app can stage the page's assets without loading the API or the engine."""

from __future__ import annotations

import os
from pathlib import Path

from face_dedup.deployment import CAPTURE_ORT_DIR_ENV

ROOT = Path(__file__).resolve().parents[2]
# The installed onnxruntime-web package (`make capture`); FACE_DEDUP_CAPTURE_ORT_DIR overrides.
ORT_DIR_DEFAULT = ROOT / "build" / "capture" / "node_modules" / "onnxruntime-web" / "dist"
ORT_FILES = {
    # The wasm-only ES module, the loader it imports, and the wasm file; no worker is started.
    "ort.wasm.bundle.min.mjs": "text/javascript; charset=utf-8",
    "ort-wasm-simd-threaded.mjs": "text/javascript; charset=utf-8",
    "ort-wasm-simd-threaded.wasm": "application/wasm",
}
PAGE_FILES = {
    "capture.js": "text/javascript; charset=utf-8",
    "analysis.js": "text/javascript; charset=utf-8",
    "strings.js": "text/javascript; charset=utf-8",
    "capture.css": "text/css; charset=utf-8",
}


def ort_dir() -> Path:
    return Path(os.environ.get(CAPTURE_ORT_DIR_ENV) or ORT_DIR_DEFAULT)

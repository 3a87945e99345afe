"""The selfie capture page's files for the cloud, staged at synthesis into one folder per
content type (a BucketDeployment sets one Content-Type for all it uploads, and a module script
with a guessed type would not run).

They cannot come from the API function: onnxruntime-web's wasm is 11.2 MB, over a Lambda
response (6 MB) and API Gateway's (10 MB). It is stored gzip-encoded (2.9 MB) and served with
`Content-Encoding: gzip`, which the browser undoes. The browser detector is checked against its
pinned SHA-256 here too, so a deployment never ships a file the page would refuse."""

from __future__ import annotations

import atexit
import gzip
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from face_dedup.deployment import env_name, local_models_dir
from face_dedup.models.registry import BROWSER_DETECTOR, DEFAULT_PACK_ID, get_pack, sha256_file
from face_dedup_api.capture_files import ORT_FILES, PAGE_FILES, ort_dir

PAGE_DIR = Path(__file__).resolve().parents[3] / "src" / "face_dedup_api" / "static" / "capture"


class CaptureAssetsMissing(RuntimeError):
    """`make capture` has not run: the page would load without its runtime or detector."""


@dataclass(frozen=True)
class StagedFolder:
    path: Path  # holds capture/... keys, as the page requests them
    content_type: str
    content_encoding: str | None = None


def stage_capture_assets(models_dir: Path | None = None, model_pack: str | None = None) -> list[StagedFolder]:
    """The detector comes from this machine's models (`make capture`), found as Settings would
    (FACE_DEDUP_MODELS_DIR, FACE_DEDUP_MODEL_PACK) but without loading Settings: synthesis
    loads no runtime (numpy, OpenCV; tests/infra/test_declared_once.py)."""
    models_dir = models_dir or local_models_dir(os.environ)
    model_pack = model_pack or os.environ.get(env_name("model_pack")) or DEFAULT_PACK_ID
    root = Path(tempfile.mkdtemp(prefix="face-dedup-capture-"))
    atexit.register(shutil.rmtree, root, True)
    folders: dict[str, StagedFolder] = {}

    def put(kind: str, key: str, data: bytes, encoding: str | None = None) -> None:
        folder = folders.setdefault(
            f"{kind}|{encoding}", StagedFolder(root / str(len(folders)), kind, encoding)
        )
        target = folder.path / key
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)

    for name, kind in PAGE_FILES.items():
        put(kind, f"capture/static/{name}", (PAGE_DIR / name).read_bytes())
    for name, kind in ORT_FILES.items():
        source = ort_dir() / name
        if not source.is_file():
            raise CaptureAssetsMissing(f"{source} is missing: run `make capture` before synthesizing")
        if kind == "application/wasm":  # mtime=0: the same bytes give the same asset hash
            put(kind, f"capture/ort/{name}", gzip.compress(source.read_bytes(), 9, mtime=0), "gzip")
        else:
            put(kind, f"capture/ort/{name}", source.read_bytes())
    model = models_dir / get_pack(model_pack).files_dir / BROWSER_DETECTOR.filename
    if not model.is_file() or sha256_file(model) != BROWSER_DETECTOR.sha256:
        raise CaptureAssetsMissing(
            f"{model} is missing or fails its pinned SHA-256: run `make capture` before synthesizing"
        )
    put("application/octet-stream", "capture/model.onnx", model.read_bytes())
    return list(folders.values())

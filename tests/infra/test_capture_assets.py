"""The capture page's files as the cloud stack stages them (infra/.../capture_assets.py): what
API Gateway will serve must fit its 10 MB answer, the wasm must come back to the installed bytes,
and the detector must be the one the page's pinned SHA-256 accepts."""

from __future__ import annotations

import gzip
import hashlib
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "infra"))

from face_dedup.models.registry import BROWSER_DETECTOR
from face_dedup_api.capture import ORT_FILES, PAGE_FILES, ort_dir
from face_dedup_infra.constructs.capture_assets import (
    CaptureAssetsMissing,
    stage_capture_assets,
)

API_GATEWAY_LIMIT = 10 * 1024 * 1024


def test_staged_files_fit_api_gateway_and_keep_their_bytes() -> None:
    if not (ort_dir() / "ort-wasm-simd-threaded.wasm").is_file():
        pytest.fail("onnxruntime-web is not installed: `make capture` (part of `make test`)")
    staged = {
        str(path.relative_to(folder.path)): (folder, path)
        for folder in stage_capture_assets()
        for path in folder.path.rglob("*")
        if path.is_file()
    }
    expected = {f"capture/static/{n}" for n in PAGE_FILES} | {f"capture/ort/{n}" for n in ORT_FILES}
    assert set(staged) == expected | {"capture/model.onnx"}
    for key, (folder, path) in staged.items():
        assert path.stat().st_size < API_GATEWAY_LIMIT, key
        name = key.rsplit("/", 1)[1]
        assert folder.content_type == {**PAGE_FILES, **ORT_FILES}.get(name, "application/octet-stream")
    wasm_folder, wasm = staged["capture/ort/ort-wasm-simd-threaded.wasm"]
    assert wasm_folder.content_encoding == "gzip"
    assert gzip.decompress(wasm.read_bytes()) == (ort_dir() / "ort-wasm-simd-threaded.wasm").read_bytes()
    model = staged["capture/model.onnx"][1].read_bytes()
    assert hashlib.sha256(model).hexdigest() == BROWSER_DETECTOR.sha256


def test_without_make_capture_synthesis_stops_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FACE_DEDUP_CAPTURE_ORT_DIR", str(tmp_path))
    with pytest.raises(CaptureAssetsMissing, match="make capture"):
        stage_capture_assets()

"""The Lambda layers as built by `make layers` (layers/build.py): complete, checksummed, for
arm64, and small enough for Lambda's 250 MB unzipped limit with any function."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from face_dedup.models.registry import get_pack
from face_dedup.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ROOT / "build" / "layers"
LIMIT = 250 * 1024 * 1024
EM_AARCH64 = 183


@pytest.fixture(scope="module")
def layers() -> Path:
    if not (LAYERS / "runtime" / "SHA256SUMS").is_file() or not (LAYERS / "models" / "SHA256SUMS").is_file():
        pytest.fail(f"layers are not built in {LAYERS}: run `make layers` (the README's test command does)")
    return LAYERS


def size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def test_every_function_fits_lambdas_unzipped_limit(layers: Path) -> None:
    runtime, models = size(layers / "runtime"), size(layers / "models")
    for function in (ROOT / "functions").iterdir():
        if function.is_dir() and function.name != "__pycache__":
            assert runtime + models + size(function) < LIMIT, (
                f"{function.name} with its layers is over 250 MB"
            )


@pytest.mark.parametrize("layer", ["runtime", "models"])
def test_layer_files_match_their_checksums(layers: Path, layer: str) -> None:
    listed = {}
    for line in (layers / layer / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split("  ", 1)
        listed[name] = digest
    present = {
        p.relative_to(layers / layer).as_posix()
        for p in (layers / layer).rglob("*")
        if p.is_file() and p.name != "SHA256SUMS"
    }
    assert present == set(listed)
    for name in sorted(listed)[:: max(1, len(listed) // 200)]:  # a spread sample keeps this fast
        assert hashlib.sha256((layers / layer / name).read_bytes()).hexdigest() == listed[name]


def test_models_layer_holds_the_pinned_pack(layers: Path) -> None:
    pack = get_pack(Settings.load().model_pack)
    folder = layers / "models" / "models" / pack.files_dir
    for model_file in pack.files:
        assert hashlib.sha256((folder / model_file.filename).read_bytes()).hexdigest() == model_file.sha256


def test_runtime_layer_is_the_arm64_closure_without_runtime_provided_packages(layers: Path) -> None:
    python = layers / "runtime" / "python"
    for needed in (
        "face_dedup",
        "face_dedup_api",
        "pydantic",
        "numpy",
        "cv2",
        "onnxruntime",
        "PIL",
        "pillow_heif",
        "aws_lambda_powertools",
        "opensearchpy",
        "stomp",  # the MOSIP ABIS function (replies over STOMP, datashare over httpx)
        "httpx",
        "defusedxml",
    ):
        assert (python / needed).is_dir(), needed
    for excluded in ("boto3", "botocore", "sympy", "grpc", "cv2/data"):
        assert not (python / excluded).exists(), f"{excluded} should not be in the layer"
    assert (python / "face_dedup" / "models" / "calibration_yunet-sface-flip-v1.json").is_file()
    libraries = list(python.glob("onnxruntime/capi/*.so")) + list(python.glob("cv2/*.so"))
    assert libraries
    for library in libraries:
        header = library.read_bytes()[:20]
        assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == EM_AARCH64, (
            library.name
        )

"""Build the Lambda layers, offline apart from the package registry, without Docker.

    python layers/build.py [--out build/layers]

- runtime/: the face_dedup core and its runtime dependencies for Lambda's arm64 Python 3.12,
  from binary wheels only (pip's --platform/--python-version: no compiler, no container).
- models/: the model pack's files, verified against their pinned SHA-256 (installed with
  `face-dedup models install` if absent), at /opt/models in the function.

Each layer gets a SHA256SUMS file. The build fails if a function with its layers would exceed
Lambda's 250 MB unzipped limit.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024
# Lambda's arm64 Python 3.12 runtime. Both platform tags are needed: either alone silently
# resolves wrong or placeholder packages (../shared/notes/tooling.md).
PLATFORM_FLAGS = [
    "--platform",
    "manylinux_2_28_aarch64",
    "--platform",
    "manylinux2014_aarch64",
    "--implementation",
    "cp",
    "--python-version",
    "3.12",
    "--only-binary=:all:",
]
# Never imported at run time, and large.
TRIM = [
    "cv2/data",
    "onnxruntime/tools",
    "onnxruntime/transformers",
    "onnxruntime/quantization",
    "numpy/_core/include",
    "numpy/_core/tests",
    "bin",
]
TRIM_NAMES = {"tests", "__pycache__"}


def pip(*args: str) -> None:
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet", *args]
    subprocess.run(command, check=True)  # noqa: S603


def tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def write_checksums(layer: Path) -> None:
    lines = []
    for path in sorted(p for p in layer.rglob("*") if p.is_file() and p.name != "SHA256SUMS"):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        lines.append(f"{digest}  {path.relative_to(layer).as_posix()}")
    (layer / "SHA256SUMS").write_text("\n".join(lines) + "\n", encoding="utf-8")


def build_runtime(out: Path) -> Path:
    layer = out / "runtime"
    target = layer / "python"  # Lambda puts /opt/python on sys.path
    shutil.rmtree(layer, ignore_errors=True)
    target.mkdir(parents=True)
    pip(
        "install",
        "--target",
        str(target),
        "--no-deps",
        "--no-compile",
        *PLATFORM_FLAGS,
        "-r",
        str(ROOT / "layers" / "runtime-requirements.txt"),
    )
    # The core library and the review API are pure Python (code, calibrations, the console page).
    for package in ("face_dedup", "face_dedup_api"):
        shutil.copytree(
            ROOT / "src" / package, target / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
    for relative in TRIM:
        shutil.rmtree(target / relative, ignore_errors=True)
    for path in sorted(target.rglob("*"), reverse=True):
        if path.is_dir() and path.name in TRIM_NAMES:
            shutil.rmtree(path, ignore_errors=True)
    for stub in target.rglob("*.pyi"):
        stub.unlink()
    write_checksums(layer)
    return layer


def build_models(out: Path) -> Path:
    sys.path.insert(0, str(ROOT / "src"))
    from face_dedup.models.install import install_pack
    from face_dedup.models.registry import get_pack
    from face_dedup.settings import Settings

    settings = Settings.load()
    pack = get_pack(settings.model_pack)
    statuses = install_pack(settings.models_dir, pack)  # verifies; fetches only what is missing
    bad = [s for s in statuses if s.state != "ok"]
    if bad:
        raise SystemExit(f"model files not verified: {bad}")
    layer = out / "models"
    shutil.rmtree(layer, ignore_errors=True)
    target = layer / "models" / pack.files_dir  # /opt/models/<files_dir>/<file> in the function
    target.mkdir(parents=True)
    for status in statuses:
        shutil.copy2(status.path, target / status.filename)
    write_checksums(layer)
    return layer


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "layers")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    runtime = build_runtime(args.out)
    models = build_models(args.out)
    functions = {
        d.name: tree_size(d) for d in (ROOT / "functions").iterdir() if d.is_dir() and d.name != "__pycache__"
    }
    runtime_size, models_size = tree_size(runtime), tree_size(models)
    worst = runtime_size + models_size + max(functions.values())
    mb = 1024 * 1024
    print(
        f"runtime layer {runtime_size / mb:.1f} MB, models layer {models_size / mb:.1f} MB, "
        f"largest function {max(functions.values()) / 1024:.0f} KB: {worst / mb:.1f} MB of the 250 MB limit"
    )
    if worst > LAMBDA_UNZIPPED_LIMIT:
        print("over Lambda's 250 MB unzipped limit", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

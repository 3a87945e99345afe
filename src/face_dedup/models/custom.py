"""Bring-your-own model packs: an ONNX embedder (and optionally a YuNet-format detector) from
local files, described by a manifest, checked, and copied into the model cache.

The manifest (`pack.json`, beside the files it names) is hostile input: every field is
validated and bounded, file names must be plain names in the manifest's folder (no path, no
link), every file's SHA-256 must match, and the embedder's shapes must match what the manifest
says. The pack is then run on the demo's sample faces (the same crop twice must give the same
vector; a face must be closer to its own mirror image than to anyone else in the group photo).

An added pack has no calibration: it cannot serve decisions until `face-dedup calibrate --save`
measured its impostor scores on labelled photos (bootstrap.load_tail refuses it until then).
"""

from __future__ import annotations

import json
import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from face_dedup.errors import ModelError
from face_dedup.models.registry import (
    PACKS,
    YUNET_SFACE,
    EmbedderContract,
    ModelFile,
    ModelPack,
    RegistryPackage,
    sha256_file,
    verified_path,
)

MANIFEST_NAME = "pack.json"
CUSTOM_PREFIX = "custom"
# Bounds on what a manifest may ask for: far above any face model, far below what would
# exhaust memory (a 4096-d float32 template is 16 KB; a 1024x1024 crop 12 MB per call).
MAX_MANIFEST_BYTES = 64 * 1024
MAX_MODEL_BYTES = 1 << 30
MIN_SIDE, MAX_SIDE = 32, 1024
MIN_DIM, MAX_DIM = 32, 4096
# The sample-face check: each face's score with its own mirror image must beat its nearest
# other face by SAMPLE_MARGIN, and on average by SAMPLE_GAP (SFace: 0.95 vs 0.27).
SAMPLE_MARGIN, SAMPLE_GAP = 0.1, 0.3
_ID = re.compile(r"^[a-z0-9][a-z0-9.-]{2,62}$")
_SHA = re.compile(r"^[0-9a-f]{64}$")
_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\.onnx$")
_KNOWN_KEYS = {
    "id",
    "version",
    "description",
    "license",
    "embedder",
    "detector",
    "input_size",
    "channel_order",
    "pixel_mean",
    "pixel_std",
    "embedding_dim",
    "alignment_template",
    "flip_average",
}


class PackManifestError(ModelError):
    """A custom pack's manifest or files are refused; `field` names what is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"pack manifest: {field}: {message}")
        self.field = field


@dataclass(frozen=True)
class PackManifest:
    pack: ModelPack
    sources: dict[str, Path]  # role -> the file as given (verified)


def _text(raw: dict[str, Any], key: str, limit: int, required: bool = True) -> str:
    value = raw.get(key, "" if not required else None)
    if not isinstance(value, str) or (required and not value.strip()):
        raise PackManifestError(key, "must be a non-empty string")
    if len(value) > limit or any(ord(c) < 32 for c in value):
        raise PackManifestError(key, f"must be printable text of at most {limit} characters")
    return value


def _number(raw: Any, key: str, low: float, high: float) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise PackManifestError(key, "must be a finite number")
    if not low <= raw <= high:
        raise PackManifestError(key, f"must be between {low} and {high}, got {raw}")
    return float(raw)


def _file(folder: Path, raw: Any, role: str) -> tuple[ModelFile, Path]:
    if not isinstance(raw, dict) or set(raw) - {"file", "sha256"}:
        raise PackManifestError(role, 'must be {"file": NAME, "sha256": HEX}')
    name, digest = raw.get("file"), raw.get("sha256")
    if not isinstance(name, str) or not _FILE.fullmatch(name):
        raise PackManifestError(
            f"{role}.file", "must be a plain .onnx file name in the manifest's folder (no path, no '..')"
        )
    if not isinstance(digest, str) or not _SHA.fullmatch(digest):
        raise PackManifestError(f"{role}.sha256", "must be 64 lower-case hex digits")
    path = folder / name
    if path.is_symlink() or not path.is_file():
        raise PackManifestError(f"{role}.file", f"{name} is not a regular file beside the manifest")
    size = path.stat().st_size
    if not 0 < size <= MAX_MODEL_BYTES:
        raise PackManifestError(f"{role}.file", f"{name} is {size} bytes (limit {MAX_MODEL_BYTES})")
    actual = sha256_file(path)
    if actual != digest:
        raise PackManifestError(f"{role}.sha256", f"{name} has sha256 {actual}, the manifest says {digest}")
    return ModelFile(role=role, filename=name, sha256=digest, member=name, member_sha256=digest), path


def read_manifest(manifest_path: Path) -> PackManifest:
    """Parse and validate a manifest and the files it names (no model is run here)."""
    if manifest_path.is_dir():
        manifest_path = manifest_path / MANIFEST_NAME
    if manifest_path.is_symlink() or not manifest_path.is_file():
        raise PackManifestError("manifest", f"{manifest_path} is not a regular file")
    if manifest_path.stat().st_size > MAX_MANIFEST_BYTES:
        raise PackManifestError("manifest", f"larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        raw = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PackManifestError("manifest", f"not UTF-8 JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise PackManifestError("manifest", "must be a JSON object")
    unknown = sorted(set(raw) - _KNOWN_KEYS)
    if unknown:
        raise PackManifestError(unknown[0][:40], "unknown field (a typo would be silently ignored)")
    pack_id = _text(raw, "id", 63)
    if not _ID.fullmatch(pack_id):  # fullmatch: `$` would let a trailing newline through
        raise PackManifestError("id", "3-63 characters: lower-case letters, digits, '.' and '-'")
    if pack_id in PACKS:
        raise PackManifestError("id", f"{pack_id} is a shipped pack: choose another id")
    folder = manifest_path.parent
    embedder, embedder_src = _file(folder, raw.get("embedder"), "embedder")
    sources = {"embedder": embedder_src}
    detector = YUNET_SFACE.detector
    sources["detector"] = Path()  # filled by add_pack from the installed default pack
    if raw.get("detector") is not None:
        detector, sources["detector"] = _file(folder, raw["detector"], "detector")
        if detector.filename == embedder.filename:
            raise PackManifestError("detector.file", "the detector and the embedder are the same file")
    size = raw.get("input_size")
    if not isinstance(size, list) or len(size) != 2:
        raise PackManifestError("input_size", "must be [width, height]")
    width, height = (int(_number(v, "input_size", MIN_SIDE, MAX_SIDE)) for v in size)
    if any(v != int(v) for v in size):
        raise PackManifestError("input_size", "must be whole pixels")
    order = raw.get("channel_order")
    if order not in ("RGB", "BGR"):
        raise PackManifestError("channel_order", 'must be "RGB" or "BGR"')
    template = raw.get("alignment_template")
    if not isinstance(template, list) or len(template) != 5:
        raise PackManifestError(
            "alignment_template", "must be 5 [x, y] points (eyes, nose tip, mouth corners)"
        )
    points = []
    for point in template:
        if not isinstance(point, list) or len(point) != 2:
            raise PackManifestError("alignment_template", "each point must be [x, y]")
        points.append(
            (
                _number(point[0], "alignment_template", 0, width),
                _number(point[1], "alignment_template", 0, height),
            )
        )
    if points[1][0] <= points[0][0] or points[4][0] <= points[3][0]:
        raise PackManifestError("alignment_template", "the image-left eye and mouth corner come first")
    dim = int(_number(raw.get("embedding_dim"), "embedding_dim", MIN_DIM, MAX_DIM))
    mean = _number(raw.get("pixel_mean", 0.0), "pixel_mean", -255, 255)
    std = _number(raw.get("pixel_std", 1.0), "pixel_std", 1e-3, 1e3)
    flip = raw.get("flip_average", False)
    if not isinstance(flip, bool):
        raise PackManifestError("flip_average", "must be true or false")
    version = _text(raw, "version", 32)
    pack = ModelPack(
        id=pack_id,
        version=version,
        description=_text(raw, "description", 300),
        license=_text(raw, "license", 300),
        # A local pack: its "package" names its cache folder, `custom-<id>`.
        package=RegistryPackage(name=CUSTOM_PREFIX, version=pack_id, filename="", sha256=""),
        detector=detector,
        embedder=embedder,
        contract=EmbedderContract(
            input_size=(width, height),
            channel_order=order,
            embedding_dim=dim,
            template=tuple(points),
            flip_average=flip,
            pixel_mean=mean,
            pixel_std=std,
        ),
        calibration="",  # none until `calibrate --save` measured one (bootstrap refuses it)
    )
    return PackManifest(pack, sources)


def manifest_json(pack: ModelPack) -> dict[str, Any]:
    c = pack.contract
    document: dict[str, Any] = {
        "id": pack.id,
        "version": pack.version,
        "description": pack.description,
        "license": pack.license,
        "embedder": {"file": pack.embedder.filename, "sha256": pack.embedder.sha256},
        "input_size": list(c.input_size),
        "channel_order": c.channel_order,
        "pixel_mean": c.pixel_mean,
        "pixel_std": c.pixel_std,
        "embedding_dim": c.embedding_dim,
        "alignment_template": [list(p) for p in c.template],
        "flip_average": c.flip_average,
    }
    if pack.detector != YUNET_SFACE.detector:
        document["detector"] = {"file": pack.detector.filename, "sha256": pack.detector.sha256}
    return document


def custom_dir(models_dir: Path, pack_id: str) -> Path:
    return models_dir / f"{CUSTOM_PREFIX}-{pack_id}"


def load_custom_pack(models_dir: Path, pack_id: str) -> ModelPack | None:
    """An added pack from the cache (its manifest re-validated, its files re-hashed), or None."""
    if not _ID.fullmatch(pack_id):  # fullmatch: `$` would let a trailing newline through
        return None
    folder = custom_dir(models_dir, pack_id)
    if not (folder / MANIFEST_NAME).is_file():
        return None
    return read_manifest(folder / MANIFEST_NAME).pack


def find_pack(pack_id: str, models_dir: Path) -> ModelPack:
    """A shipped pack, or one added with `face-dedup models add`."""
    if pack_id in PACKS:
        return PACKS[pack_id]
    custom = load_custom_pack(models_dir, pack_id)
    if custom is None:
        known = ", ".join(sorted(PACKS))
        raise ModelError(
            f"unknown model pack {pack_id!r}: shipped packs are {known}; "
            "others are added with `face-dedup models add`"
        )
    return custom


def add_pack(manifest_path: Path, models_dir: Path, *, replace: bool = False) -> dict[str, Any]:
    """Validate, check and install a custom pack; returns what the checks measured."""
    manifest = read_manifest(manifest_path)
    pack = manifest.pack
    target = custom_dir(models_dir, pack.id)
    if target.exists() and not replace:
        raise PackManifestError("id", f"a pack {pack.id} is already added ({target}); pass --replace")
    sources = dict(manifest.sources)
    if sources["detector"] == Path():
        sources["detector"] = verified_path(models_dir, YUNET_SFACE, YUNET_SFACE.detector)
    staging = models_dir / f".{CUSTOM_PREFIX}-{pack.id}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        for role, source in sources.items():
            model_file = pack.detector if role == "detector" else pack.embedder
            copied = staging / model_file.filename
            shutil.copyfile(source, copied)
            if sha256_file(copied) != model_file.sha256:  # changed between the check and the copy
                raise PackManifestError(f"{role}.sha256", f"{source.name} changed while it was copied")
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest_json(pack), indent=2) + "\n", "utf-8")
        checks = check_pack(models_dir, pack, staging)
        if target.exists():
            shutil.rmtree(target)
        staging.replace(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {"pack": pack.id, "path": str(target), "checks": checks, "calibrated": False}


def check_pack(models_dir: Path, pack: ModelPack, folder: Path) -> dict[str, Any]:
    """Shapes (at load), determinism, and a sanity check on the demo's sample faces."""
    from PIL import Image

    from face_dedup.models.install import DEMO_DIR_NAME, verify_demo_samples
    from face_dedup.vision.align import fit_similarity, warp_to_template
    from face_dedup.vision.detect import YuNetDetector
    from face_dedup.vision.embed import SFaceEmbedder, create_session

    detector = YuNetDetector(folder / pack.detector.filename)
    embedder = SFaceEmbedder(create_session(folder / pack.embedder.filename), pack.contract)
    if any(s.state != "ok" for s in verify_demo_samples(models_dir)):
        raise ModelError("the sanity check needs the demo's sample photos: run `face-dedup models install`")
    group = np.asarray(Image.open(models_dir / DEMO_DIR_NAME / "t1.jpg").convert("RGB"))
    template = np.asarray(pack.contract.template, dtype=np.float64)
    faces = [f for f in detector.detect(group) if f.score >= 0.8]
    if len(faces) < 3:
        raise PackManifestError(
            "detector", f"found {len(faces)} faces in the sample group photo (expected 3+)"
        )
    crops: list[NDArray[np.uint8]] = [
        warp_to_template(group, fit_similarity(f.landmarks, template), pack.contract.input_size)
        for f in faces
    ]
    first = embedder.embed(crops[0])
    again = embedder.embed(crops[0].copy())
    drift = float(np.max(np.abs(first - again)))
    if drift > 1e-5:
        raise PackManifestError("embedder", f"not deterministic: the same crop twice differs by {drift:.2e}")
    vectors = np.stack([embedder.embed(c) for c in crops])
    mirrors = np.stack([embedder.embed(np.ascontiguousarray(c[:, ::-1])) for c in crops])
    own = np.sum(vectors * mirrors, axis=1)  # each face against its own mirror image
    cross = vectors @ vectors.T
    np.fill_diagonal(cross, -1.0)
    nearest_other = cross.max(axis=1)
    separated = int(np.sum(own > nearest_other + SAMPLE_MARGIN))
    gap = float(own.mean() - nearest_other.mean())
    # A working face embedder puts a face clearly nearer its own mirror image than to other
    # people. A wrong normalisation collapses every face onto nearly one vector (measured with
    # SFace: std 0.01 or 255 instead of 1 gave other people 0.93-0.96 against 0.27 when right).
    # A swapped colour order is NOT caught here (SFace: 0.28 vs 0.27): calibration measures it.
    if separated < math.ceil(0.8 * len(faces)) or gap < SAMPLE_GAP:
        raise PackManifestError(
            "embedder",
            f"failed the sample-face check: {separated} of {len(faces)} faces were clearly nearer their "
            f"own mirror image than anyone else, mean gap {gap:.2f} (need {SAMPLE_GAP}): "
            "check channel_order, pixel_mean/std and the template",
        )
    return {
        "faces": len(faces),
        "nearer_own_mirror": separated,
        "mean_own_mirror_score": round(float(own.mean()), 4),
        "mean_nearest_other_score": round(float(nearest_other.mean()), 4),
        "determinism_max_abs_diff": drift,
    }

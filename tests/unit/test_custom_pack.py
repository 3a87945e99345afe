"""Bring-your-own model packs: the worked example (the shipped SFace file registered as a custom
pack), hostile manifests refused with typed errors, and no decisions before a calibration."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from face_dedup.bootstrap import build_engine, build_service
from face_dedup.calibrate import calibrate
from face_dedup.errors import ModelError
from face_dedup.models.custom import PackManifestError, add_pack, find_pack, read_manifest
from face_dedup.models.install import DEMO_DIR_NAME
from face_dedup.models.registry import ARCFACE_112_TEMPLATE, YUNET_SFACE, verified_path
from face_dedup.service import InputRef
from face_dedup.settings import Settings


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def models_dir(base_settings: Settings, tmp_path: Path) -> Path:
    """A private model cache holding the shipped files (links: nothing is copied twice)."""
    target = tmp_path / "models"
    for sub in (YUNET_SFACE.files_dir, DEMO_DIR_NAME):
        (target / sub).mkdir(parents=True)
        for item in (base_settings.models_dir / sub).iterdir():
            os.link(item, target / sub / item.name)
    return target


@pytest.fixture
def pack_folder(base_settings: Settings, tmp_path: Path) -> Path:
    """The README's worked example: the SFace file, given as a custom pack."""
    folder = tmp_path / "my-pack"
    folder.mkdir()
    source = verified_path(base_settings.models_dir, YUNET_SFACE, YUNET_SFACE.embedder)
    shutil.copyfile(source, folder / "sface.onnx")
    write_manifest(folder)
    return folder


def write_manifest(folder: Path, **changes: Any) -> Path:
    manifest: dict[str, Any] = {
        "id": "my-sface",
        "version": "1.0",
        "description": "SFace, registered as a custom pack",
        "license": "Apache-2.0 (OpenCV Zoo)",
        "embedder": {"file": "sface.onnx", "sha256": _sha(folder / "sface.onnx")},
        "input_size": [112, 112],
        "channel_order": "RGB",
        "pixel_mean": 0,
        "pixel_std": 1,
        "embedding_dim": 128,
        "alignment_template": [list(p) for p in ARCFACE_112_TEMPLATE],
    }
    manifest.update(changes)
    path = folder / "pack.json"
    path.write_text(json.dumps({k: v for k, v in manifest.items() if v is not None}))
    return path


def test_worked_example_is_added_and_gives_the_shipped_packs_embeddings(
    base_settings: Settings, models_dir: Path, pack_folder: Path
) -> None:
    result = add_pack(pack_folder, models_dir)
    assert result["checks"]["nearer_own_mirror"] == result["checks"]["faces"] >= 3
    assert result["checks"]["determinism_max_abs_diff"] == 0.0
    pack = find_pack("my-sface", models_dir)
    assert pack.id == "my-sface" and pack.calibration == ""
    # Same file, same contract: the custom pack's template of a face equals the shipped one's.
    settings = base_settings.with_overrides(models_dir=models_dir)
    custom = build_engine(settings, pack)
    shipped = build_engine(settings, YUNET_SFACE)
    photo = (models_dir / DEMO_DIR_NAME / "Tom_Hanks_54745.png").read_bytes()
    a, b = custom.process(photo), shipped.process(photo)
    assert not hasattr(a, "reason") and not hasattr(b, "reason")
    assert float(np.dot(a.embedding, b.embedding)) > 0.9999
    assert a.model_pack == "my-sface"
    # Adding it again is refused unless asked to replace.
    with pytest.raises(PackManifestError, match="already added"):
        add_pack(pack_folder, models_dir)


def test_a_pack_without_calibration_serves_no_decision(
    base_settings: Settings, models_dir: Path, pack_folder: Path, tmp_path: Path
) -> None:
    add_pack(pack_folder, models_dir)
    settings = base_settings.with_overrides(
        models_dir=models_dir, model_pack="my-sface", data_dir=tmp_path / "registry"
    )
    with pytest.raises(ModelError, match="no calibration yet"):
        build_service(settings)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"embedder": {"file": "../sface.onnx", "sha256": "0" * 64}}, "embedder.file"),
        ({"embedder": {"file": "/etc/passwd.onnx", "sha256": "0" * 64}}, "embedder.file"),
        ({"embedder": {"file": "sface.onnx", "sha256": "0" * 64}}, "embedder.sha256"),
        ({"embedder": {"file": "sface.onnx", "sha256": "ABC"}}, "embedder.sha256"),
        ({"embedding_dim": 10**9}, "embedding_dim"),
        ({"input_size": [100000, 112]}, "input_size"),
        ({"input_size": [112.5, 112]}, "input_size"),
        ({"pixel_std": 0}, "pixel_std"),
        ({"pixel_mean": float("nan")}, "pixel_mean"),
        ({"channel_order": "RGBA"}, "channel_order"),
        ({"alignment_template": [[1, 2]] * 4}, "alignment_template"),
        ({"id": "yunet-sface-v1"}, "id"),
        ({"id": "../escape"}, "id"),
        ({"id": "my-sface\n"}, "id"),  # `$` alone lets a trailing newline through
        ({"embedder": {"file": "sface.onnx\n", "sha256": "0" * 64}}, "embedder.file"),
        ({"license": None}, "license"),
        ({"licence": "typo"}, "licence"),
        ({"flip_average": "yes"}, "flip_average"),
    ],
)
def test_hostile_manifests_are_refused_with_the_field_named(
    pack_folder: Path, changes: dict[str, Any], field: str
) -> None:
    write_manifest(pack_folder, **changes)
    with pytest.raises(PackManifestError) as refused:
        read_manifest(pack_folder / "pack.json")
    assert refused.value.field == field


def test_a_linked_model_file_is_refused(pack_folder: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.onnx"
    (pack_folder / "sface.onnx").rename(outside)
    (pack_folder / "sface.onnx").symlink_to(outside)
    with pytest.raises(PackManifestError, match="not a regular file"):
        read_manifest(pack_folder)


def test_shapes_that_do_not_match_the_model_are_refused(models_dir: Path, pack_folder: Path) -> None:
    write_manifest(
        pack_folder,
        input_size=[128, 128],
        alignment_template=[[40, 50], [80, 50], [60, 70], [45, 95], [75, 95]],
    )
    with pytest.raises(ModelError, match="does not match"):
        add_pack(pack_folder, models_dir)
    write_manifest(pack_folder, embedding_dim=512)
    with pytest.raises(ModelError, match="512"):
        add_pack(pack_folder, models_dir)
    assert not any(p.name.startswith(("custom", ".custom")) for p in models_dir.iterdir())


def test_a_wrong_normalisation_fails_the_sample_face_check(models_dir: Path, pack_folder: Path) -> None:
    write_manifest(pack_folder, pixel_mean=127.5, pixel_std=0.01)
    with pytest.raises(PackManifestError, match="sample-face check"):
        add_pack(pack_folder, models_dir)


@pytest.mark.slow
def test_custom_pack_calibrated_and_used_end_to_end(
    base_settings: Settings, models_dir: Path, pack_folder: Path, faces_root: Path, tmp_path: Path
) -> None:
    """Added, calibrated from labelled photos (LFW, 60 people x 3), then enrolls and finds the
    same person's second photo as a duplicate candidate."""
    add_pack(pack_folder, models_dir)
    settings = base_settings.with_overrides(
        models_dir=models_dir, model_pack="my-sface", data_dir=tmp_path / "registry"
    )
    people = [p for p in sorted((faces_root / "lfw").iterdir()) if len(list(p.iterdir())) >= 3][:60]
    labels = tmp_path / "labels.csv"
    with labels.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "identity"])
        for person in people:
            for photo in sorted(person.iterdir())[:3]:
                writer.writerow([photo.relative_to(faces_root).as_posix(), person.name])
    report = calibrate(settings, root=faces_root, labels=labels, save=True)
    assert report["model_pack"] == "my-sface" and Path(report["saved_calibration"]).is_file()
    service, adapters = build_service(settings)
    try:
        first, second = sorted(people[0].iterdir())[:2]
        enrolled = service.enroll(first.read_bytes(), InputRef(first.name, "APP-1"))
        again = service.enroll(second.read_bytes(), InputRef(second.name, "APP-2"))
        assert enrolled.outcome.value == "enrolled"
        assert again.outcome.value in ("review", "duplicate")
        assert again.candidates[0].record_id == enrolled.record_id
        stored = service.store.get_record(enrolled.record_id or "")
        assert stored is not None and stored.model_pack == "my-sface"
    finally:
        adapters.close()


def test_a_file_that_is_not_an_onnx_model_is_refused_and_leaves_nothing(
    models_dir: Path, pack_folder: Path
) -> None:
    (pack_folder / "sface.onnx").write_bytes(b"\x08\x07 not a model" * 100)
    write_manifest(pack_folder)  # its digest matches: the model itself is what is wrong
    with pytest.raises(ModelError, match="onnxruntime could not load"):
        add_pack(pack_folder, models_dir)
    assert not any(p.name.startswith(("custom", ".custom")) for p in models_dir.iterdir())

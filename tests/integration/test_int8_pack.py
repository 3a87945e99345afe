"""The int8 pack (yunet-sface-int8-v1) and the batched mirror run (vision/embed.py).

- The install builds the int8 file from the pinned fp32 file and the committed ranges table:
  done again here, without the network, it must give the pinned digest.
- A face and its mirror as one batch of 2 give the vectors two single runs give.
- The int8 templates stay close to the fp32 pack's on the shared photos (a tolerance measured
  on all of them: BENCHMARKS.md, "int8 pack").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from face_dedup.analysis import FaceTemplate
from face_dedup.bootstrap import build_engine
from face_dedup.models.install import verify_pack
from face_dedup.models.registry import (
    YUNET_SFACE,
    YUNET_SFACE_FLIP,
    YUNET_SFACE_INT8,
    ModelPack,
    sha256_file,
    verified_path,
)
from face_dedup.settings import Settings
from face_dedup.vision.embed import SFaceEmbedder, create_session

# Template cosine int8 vs fp32 (both mirror-averaged, same aligned crop), measured on all the
# shared photos: LFW min 0.974 (median 0.996, 3,809 faces), `photos/` min 0.985 (235 faces);
# the test's sample must stay above the lowest, less a small margin.
MIN_TEMPLATE_COSINE = 0.97


def _installed(settings: Settings, pack: ModelPack) -> Path:
    bad = [s for s in verify_pack(settings.models_dir, pack) if s.state != "ok"]
    if bad:
        pytest.fail(
            f"pack {pack.id} is not installed in {settings.models_dir}: run `face-dedup models install`"
        )
    return verified_path(settings.models_dir, pack, pack.embedder)


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings.load(data_dir=tmp_path_factory.mktemp("registry"), model_pack=YUNET_SFACE_INT8.id)


def _crops(count: int) -> NDArray[np.uint8]:
    """Crops with structure (a gradient, a blob, noise), not faces: equality needs no face."""
    rng = np.random.default_rng(7)
    ys, xs = np.mgrid[0:112, 0:112].astype(np.float32)
    crops = []
    for _ in range(count):
        cy, cx = rng.uniform(30, 80, 2)
        blob = 200 * np.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / rng.uniform(100, 800))
        base = np.stack([xs, ys, 112 - xs], axis=-1) + blob[..., None] + rng.normal(0, 12, (112, 112, 3))
        crops.append(np.clip(base, 0, 255).astype(np.uint8))
    return np.stack(crops)


def _two_runs(session: object, name: str, crop: NDArray[np.uint8]) -> NDArray[np.float32]:
    """Face and mirror as two calls of batch 1, each normalised, averaged, normalised."""
    total = np.zeros(128, np.float32)
    for pixels in (crop, crop[:, ::-1]):
        blob = np.ascontiguousarray(pixels.transpose(2, 0, 1)[None], dtype=np.float32)
        (output,) = session.run(None, {name: blob})  # type: ignore[attr-defined]
        vector = np.asarray(output, np.float32).reshape(-1)
        total += vector / np.linalg.norm(vector)
    return total / np.linalg.norm(total)


def test_the_install_builds_the_pinned_int8_file_from_the_fp32_file_and_the_table(
    settings: Settings, tmp_path: Path
) -> None:
    from face_dedup.models.convert import quantize_folded_int8

    fp32 = verified_path(settings.models_dir, YUNET_SFACE, YUNET_SFACE.embedder)
    built = tmp_path / "int8.onnx"
    quantize_folded_int8(fp32, built)
    assert sha256_file(built) == YUNET_SFACE_INT8.embedder.sha256
    assert YUNET_SFACE_INT8.embedder.member_sha256 == YUNET_SFACE.embedder.member_sha256


def test_another_quantizer_version_is_refused_before_building(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnxruntime

    from face_dedup.errors import ModelError
    from face_dedup.models.convert import quantize_folded_int8

    monkeypatch.setattr(onnxruntime, "__version__", "1.99.0")
    fp32 = verified_path(settings.models_dir, YUNET_SFACE, YUNET_SFACE.embedder)
    with pytest.raises(ModelError, match="int8 pack is built with"):
        quantize_folded_int8(fp32, tmp_path / "int8.onnx")
    assert not (tmp_path / "int8.onnx").exists()


def test_face_and_mirror_in_one_batch_equal_two_single_runs(settings: Settings) -> None:
    session = create_session(_installed(settings, YUNET_SFACE_INT8))
    embedder = SFaceEmbedder(session, YUNET_SFACE_INT8.contract)
    assert embedder.batched
    name = session.get_inputs()[0].name
    for crop in _crops(4):
        batched = embedder.embed(crop)
        np.testing.assert_allclose(batched, _two_runs(session, name, crop), atol=2e-6)


def test_the_fp32_graph_batches_to_the_same_vectors(settings: Settings, tmp_path: Path) -> None:
    """The fp32 file is written for batch 1 (its embedder runs twice); the same graph with a
    dynamic batch gives the same vectors, so the batching itself changes nothing."""
    import onnx

    fp32 = verified_path(settings.models_dir, YUNET_SFACE, YUNET_SFACE.embedder)
    single = create_session(fp32)
    assert not SFaceEmbedder(single, YUNET_SFACE_FLIP.contract).batched
    model = onnx.load(str(fp32))
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    del model.graph.value_info[:]
    dynamic_path = tmp_path / "dynamic.onnx"
    onnx.save(model, str(dynamic_path))
    embedder = SFaceEmbedder(create_session(dynamic_path), YUNET_SFACE_FLIP.contract)
    assert embedder.batched
    plain = SFaceEmbedder(single, YUNET_SFACE_FLIP.contract)
    name = single.get_inputs()[0].name
    for crop in _crops(3):
        np.testing.assert_allclose(embedder.embed(crop), plain.embed(crop), atol=2e-6)
        np.testing.assert_array_equal(plain.embed(crop), _two_runs(single, name, crop))


@pytest.mark.shared_data
def test_int8_templates_stay_close_to_the_fp32_templates(settings: Settings, faces_root: Path) -> None:
    _installed(settings, YUNET_SFACE_INT8)
    fp32 = build_engine(settings.with_overrides(model_pack=YUNET_SFACE_FLIP.id), threads=1)
    int8 = build_engine(settings, threads=1)
    photos = sorted(p for p in (faces_root / "photos").glob("*/*/*") if p.is_file())[::6]
    photos += sorted((faces_root / "lfw").glob("*/*.jpg"))[::200]
    compared = 0
    for path in photos:
        a, b = fp32.process(path.read_bytes()), int8.process(path.read_bytes())
        if isinstance(a, FaceTemplate) and isinstance(b, FaceTemplate):
            assert float(a.embedding @ b.embedding) >= MIN_TEMPLATE_COSINE, path.name
            compared += 1
    assert compared >= 40


def test_a_registry_on_the_int8_pack_enrolls_and_finds_the_second_applications(
    settings: Settings, tmp_path: Path
) -> None:
    """Selected by settings (FACE_DEDUP_MODEL_PACK): its shipped calibration loads, its
    templates are tagged with it, and the demo's second applications are found again."""
    # (yunet-sface-flip-v1 enrols all seven first applications and links all four second ones)
    from face_dedup.bootstrap import build_service
    from face_dedup.demo import build_demo_inputs
    from face_dedup.outcomes import Outcome
    from face_dedup.service import InputRef

    _installed(settings, YUNET_SFACE_INT8)
    photos = tmp_path / "inputs" / "photos"
    build_demo_inputs(settings, photos)
    rows = sorted(p.name for p in photos.iterdir())
    firsts = [n for n in rows if n.startswith("applicant-")]
    seconds = [n for n in rows if n.startswith("second-application")]
    assert firsts and seconds
    service, adapters = build_service(settings.with_overrides(data_dir=tmp_path / "registry"))
    try:
        assert service.model_pack == YUNET_SFACE_INT8.id
        for n, name in enumerate(firsts):
            result = service.enroll((photos / name).read_bytes(), InputRef(name, f"APP-1{n:03}"))
            # never linked as someone else; one applicant of the demo's group photo goes to
            # review against another with this pack (a false alarm a person clears)
            assert result.outcome in (Outcome.ENROLLED, Outcome.REVIEW), name
        for n, name in enumerate(seconds):
            result = service.enroll((photos / name).read_bytes(), InputRef(name, f"APP-2{n:03}"))
            assert result.outcome in (Outcome.REVIEW, Outcome.DUPLICATE), name
        packs = {t.model_pack for t in service.store.iter_templates(tenant="default")}
        assert packs == {YUNET_SFACE_INT8.id}
    finally:
        adapters.close()


def test_an_existing_registry_moves_to_the_int8_pack_with_migrate(settings: Settings, tmp_path: Path) -> None:
    """The operator's route (README, "Migrating between packs"): a registry made on the default
    fp32 pack is moved with `migrate start/run/cutover`; afterwards a process started without a
    pack setting reads the int8 pack from packs.json, and the second applications are still
    found among the migrated records."""
    import csv
    import json
    import os
    import subprocess
    import sys

    from face_dedup.bootstrap import build_service
    from face_dedup.demo import build_demo_inputs
    from face_dedup.outcomes import Outcome
    from face_dedup.service import InputRef

    _installed(settings, YUNET_SFACE_INT8)
    photos = tmp_path / "inputs" / "photos"
    build_demo_inputs(settings, photos)
    with (photos.parent / "manifest.csv").open() as handle:
        rows = [(r["file"], r["application_id"]) for r in csv.DictReader(handle)]
    data_dir = tmp_path / "registry"
    old = Settings.load(
        environ={}, data_dir=data_dir, models_dir=settings.models_dir, model_pack=YUNET_SFACE_FLIP.id
    )
    service, adapters = build_service(old)
    try:
        for name, application in rows:
            if name.startswith("applicant-"):
                service.enroll((photos / name).read_bytes(), InputRef(name, application))
    finally:
        adapters.close()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FACE_DEDUP_")},
        "FACE_DEDUP_DATA_DIR": str(data_dir),
        "FACE_DEDUP_MODELS_DIR": str(settings.models_dir),
    }
    for step in (["start", "--to", YUNET_SFACE_INT8.id], ["run"], ["cutover"]):
        done = subprocess.run(
            [sys.executable, "-m", "face_dedup", "migrate", *step, "--json"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["active"] == YUNET_SFACE_INT8.id

    moved = Settings.load(environ={}, data_dir=data_dir, models_dir=settings.models_dir)
    assert moved.model_pack == YUNET_SFACE_INT8.id
    service, adapters = build_service(moved)
    try:
        assert service.model_pack == YUNET_SFACE_INT8.id
        for name, application in rows:
            if name.startswith("second-application"):
                result = service.enroll((photos / name).read_bytes(), InputRef(name, application))
                assert result.outcome in (Outcome.REVIEW, Outcome.DUPLICATE), name
    finally:
        adapters.close()

"""The default pack's embedder on OpenVINO bf16 against onnxruntime fp32, with the real model
(skipped where OpenVINO is missing or the CPU has no BF16: there `auto` is onnxruntime anyway,
which the last test checks). Accuracy on held-out LFW is measured in bench/bf16_partition.py."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from face_dedup.bootstrap import build_embedder, build_engine, embedder_runtime_choice
from face_dedup.errors import ConfigError, ModelError
from face_dedup.models.registry import YUNET_SFACE_FLIP, YUNET_SFACE_INT8
from face_dedup.settings import Settings
from face_dedup.vision import runtimes
from face_dedup.vision.embed import SFaceEmbedder
from face_dedup.vision.pipeline import FaceTemplate
from tests.conftest import shared_faces


def _bf16_here() -> bool:
    version, capabilities = runtimes.probe_openvino()
    return version is not None and "BF16" in capabilities


needs_bf16 = pytest.mark.skipif(not _bf16_here(), reason="OpenVINO or a CPU with BF16 is absent here")


@pytest.fixture(scope="module")
def fp32(base_settings: Settings) -> SFaceEmbedder:
    return build_embedder(base_settings.with_overrides(embedder_runtime="onnxruntime"), YUNET_SFACE_FLIP)


@pytest.fixture(scope="module")
def bf16(base_settings: Settings) -> SFaceEmbedder:
    if not _bf16_here():
        pytest.skip("OpenVINO or a CPU with BF16 is absent here")
    return build_embedder(base_settings.with_overrides(embedder_runtime="openvino-bf16"), YUNET_SFACE_FLIP)


def crops(count: int) -> list[NDArray[np.uint8]]:
    """Varied 112x112 crops without shipping a face: the self-check pattern shifted and noised."""
    rng = np.random.default_rng(7)
    base = runtimes.self_check_crop(224, 224).astype(np.int16)
    out = []
    for _ in range(count):
        y, x = rng.integers(0, 112, size=2)
        noisy = base[y : y + 112, x : x + 112] + rng.integers(-25, 26, size=(112, 112, 3))
        out.append(np.clip(noisy, 0, 255).astype(np.uint8))
    return out


@needs_bf16
def test_auto_runs_the_default_pack_in_bf16_here(base_settings: Settings) -> None:
    assert embedder_runtime_choice(base_settings, YUNET_SFACE_FLIP).runtime == runtimes.OPENVINO_BF16
    assert build_engine(
        base_settings.with_overrides(embedder_runtime="auto"), YUNET_SFACE_FLIP
    )._embedder.runtime == (runtimes.OPENVINO_BF16)


@needs_bf16
def test_bf16_runs_face_and_mirror_as_one_batch(bf16: SFaceEmbedder) -> None:
    assert bf16.runtime == runtimes.OPENVINO_BF16 and bf16.batched


@needs_bf16
def test_bf16_vectors_stay_close_to_fp32_and_are_reproducible(
    bf16: SFaceEmbedder, fp32: SFaceEmbedder
) -> None:
    for crop in crops(12):
        vector = bf16.embed(crop)
        assert float(np.dot(vector, fp32.embed(crop))) > 0.998
        np.testing.assert_array_equal(vector, bf16.embed(crop))  # a re-run import finds the same template


@needs_bf16
def test_threads_calling_at_once_get_the_same_bits_as_one_caller(bf16: SFaceEmbedder) -> None:
    """Each thread has its own infer request (one request is not thread-safe)."""
    inputs = crops(8)
    expected = [bf16.embed(c) for c in inputs]
    results: dict[int, list[NDArray[np.float32]]] = {}
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            results[k] = [bf16.embed(c) for c in inputs for _ in range(3)][::3]
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for got in results.values():
        for a, b in zip(got, expected, strict=True):
            np.testing.assert_array_equal(a, b)


@needs_bf16
def test_real_photos_get_the_same_decisions_and_near_templates(base_settings: Settings) -> None:
    root = shared_faces()
    photos = sorted((root / "photos").rglob("*.jpg"))[:12] + sorted((root / "lfw").rglob("*.jpg"))[::400]
    fast = build_engine(base_settings.with_overrides(embedder_runtime="openvino-bf16"), YUNET_SFACE_FLIP)
    slow = build_engine(base_settings.with_overrides(embedder_runtime="onnxruntime"), YUNET_SFACE_FLIP)
    compared = 0
    for path in photos:
        data = Path(path).read_bytes()
        a, b = fast.process(data), slow.process(data)
        assert type(a) is type(b), path.name
        if isinstance(a, FaceTemplate) and isinstance(b, FaceTemplate):
            assert float(np.dot(a.embedding, b.embedding)) > 0.995, path.name
            compared += 1
        else:
            assert getattr(a, "reason", None) == getattr(b, "reason", None), path.name
    assert compared >= 10


@needs_bf16
def test_a_runtime_that_disagrees_with_onnxruntime_is_not_used(
    base_settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A broken build or CPU must never change templates silently: the self-check crop catches it."""
    real_open = runtimes.open_openvino_bf16

    class Scrambled:
        name = runtimes.OPENVINO_BF16

        def __init__(self, inner: runtimes.OpenVinoRunner) -> None:
            self.inner = inner
            self.input_shape, self.output_shape = inner.input_shape, inner.output_shape

        def run(self, blob: NDArray[np.float32]) -> NDArray[np.float32]:
            return self.inner.run(blob)[:, ::-1].copy()  # the right numbers in the wrong places

    monkeypatch.setattr(runtimes, "open_openvino_bf16", lambda *a, **k: Scrambled(real_open(*a, **k)))
    with caplog.at_level("WARNING"):
        embedder = build_embedder(base_settings, YUNET_SFACE_FLIP)
    assert embedder.runtime == runtimes.ONNXRUNTIME
    assert "disagrees with onnxruntime" in caplog.text
    with pytest.raises(ModelError, match="disagrees"):
        build_embedder(base_settings.with_overrides(embedder_runtime="openvino-bf16"), YUNET_SFACE_FLIP)


def test_packs_not_measured_in_bf16_stay_on_onnxruntime(base_settings: Settings) -> None:
    auto = base_settings.with_overrides(embedder_runtime="auto")
    assert build_embedder(auto, YUNET_SFACE_INT8).runtime == runtimes.ONNXRUNTIME
    with pytest.raises(ConfigError, match="not measured in bf16"):
        build_embedder(base_settings.with_overrides(embedder_runtime="openvino-bf16"), YUNET_SFACE_INT8)


def test_without_bf16_auto_is_onnxruntime(base_settings: Settings) -> None:
    choice = embedder_runtime_choice(base_settings.with_overrides(embedder_runtime="auto"), YUNET_SFACE_FLIP)
    assert choice.runtime == (runtimes.OPENVINO_BF16 if _bf16_here() else runtimes.ONNXRUNTIME)


def test_models_runtime_says_what_an_import_would_run(base_settings: Settings) -> None:
    """`face-dedup models runtime`, a real process: one row per shipped pack, the default pack's
    runtime the one build_embedder gives here (compiled and checked, not predicted), and bf16
    asked for by name on a pack never measured in it is refused with its reason."""
    import json
    import os
    import subprocess
    import sys

    def rows(runtime: str) -> dict[str, dict[str, str]]:
        env = {**os.environ, "FACE_DEDUP_MODELS_DIR": str(base_settings.models_dir)}
        env["FACE_DEDUP_EMBEDDER_RUNTIME"] = runtime
        done = subprocess.run(
            [sys.executable, "-m", "face_dedup", "models", "runtime", "--json"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=True,
        )
        return {row["pack"]: row for row in json.loads(done.stdout)}

    auto = rows("auto")
    assert set(auto) == {"yunet-sface-v1", "yunet-sface-flip-v1", "yunet-sface-int8-v1"}
    expected = build_embedder(base_settings.with_overrides(embedder_runtime="auto"), YUNET_SFACE_FLIP).runtime
    assert auto[YUNET_SFACE_FLIP.id]["runtime"] == expected
    assert auto[YUNET_SFACE_INT8.id]["runtime"] == runtimes.ONNXRUNTIME
    by_name = rows("openvino-bf16")
    assert by_name[YUNET_SFACE_INT8.id]["runtime"] == "refused"
    assert "not measured in bf16" in by_name[YUNET_SFACE_INT8.id]["reason"]


def test_the_engine_asks_for_two_analysis_threads_per_core_only_on_openvino(base_settings: Settings) -> None:
    fp32 = build_engine(base_settings.with_overrides(embedder_runtime="onnxruntime"), YUNET_SFACE_FLIP)
    assert fp32.threads_per_core() == 1
    if _bf16_here():
        bf16 = build_engine(base_settings.with_overrides(embedder_runtime="openvino-bf16"), YUNET_SFACE_FLIP)
        assert bf16.threads_per_core() == 2

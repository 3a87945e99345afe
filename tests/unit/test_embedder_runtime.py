"""Which runtime the embedder runs on (vision/runtimes.py): every branch of the choice, the
embedder's shape and batch rules for any runtime, and the setting's validation. No OpenVINO needed."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from face_dedup.analysis import FaceTemplate, Rejection
from face_dedup.bootstrap import analysis_workers
from face_dedup.errors import ConfigError, ModelError
from face_dedup.models.registry import DEFAULT_PACK_ID, PACKS, YUNET_SFACE_FLIP, YUNET_SFACE_INT8
from face_dedup.ports import FaceAnalyzer
from face_dedup.settings import Settings
from face_dedup.vision import runtimes
from face_dedup.vision.embed import SFaceEmbedder

CPU_WITH_BF16 = ["FP32", "BF16", "INT8"]
CPU_WITHOUT = ["FP32", "INT8"]


def choose(
    requested: str,
    measured: bool = True,
    version: str | None = "2026.4.1",
    caps: Sequence[str] = CPU_WITH_BF16,
) -> runtimes.RuntimeChoice:
    return runtimes.choose_runtime(requested, "some-pack", measured, version, caps)


def test_auto_takes_bf16_only_where_pack_openvino_and_cpu_all_allow_it() -> None:
    assert choose("auto").runtime == runtimes.OPENVINO_BF16
    assert choose("auto", measured=False).runtime == runtimes.ONNXRUNTIME
    assert choose("auto", version=None).runtime == runtimes.ONNXRUNTIME
    assert choose("auto", caps=CPU_WITHOUT).runtime == runtimes.ONNXRUNTIME


def test_the_reason_names_what_stands_in_the_way() -> None:
    assert "not measured in bf16" in choose("auto", measured=False).reason
    assert "not installed" in choose("auto", version=None).reason
    assert "no native BF16" in choose("auto", caps=CPU_WITHOUT).reason


def test_onnxruntime_by_name_wins_even_where_bf16_could_run() -> None:
    assert choose("onnxruntime").runtime == runtimes.ONNXRUNTIME


@pytest.mark.parametrize(
    "blocked",
    [{"measured": False}, {"version": None}, {"caps": CPU_WITHOUT}],
    ids=["pack", "openvino", "cpu"],
)
def test_bf16_by_name_where_it_cannot_run_is_an_error_not_a_silent_fp32(blocked: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match="cannot run here"):
        choose("openvino-bf16", **blocked)  # type: ignore[arg-type]


def test_unknown_runtime_is_refused_by_the_choice_and_by_settings(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="embedder_runtime"):
        choose("gpu")
    with pytest.raises(ConfigError, match="embedder_runtime"):
        Settings.load(environ={"FACE_DEDUP_EMBEDDER_RUNTIME": "cuda"}, data_dir=tmp_path)
    assert Settings.load(environ={}, data_dir=tmp_path).embedder_runtime == "auto"


def test_only_the_measured_pack_may_run_in_bf16() -> None:
    """bf16 is validated per model: a derived pack (the int8 one is made from the flip pack with
    `replace`) must not inherit the flag."""
    assert PACKS[DEFAULT_PACK_ID].bf16_measured
    assert [p.id for p in PACKS.values() if p.bf16_measured] == [YUNET_SFACE_FLIP.id]
    assert not YUNET_SFACE_INT8.bf16_measured


class FakeRuntime:
    """Stands in for a compiled network (the EmbedderRuntime protocol): returns fixed rows."""

    name = "fake"

    def __init__(self, batch: int | str, rows: NDArray[np.float32] | None = None, dim: int = 128) -> None:
        self.input_shape: Sequence[int | str | None] = [batch, 3, 112, 112]
        self.output_shape: Sequence[int | str | None] = [batch, dim]
        self.rows = rows
        self.calls: list[tuple[int, ...]] = []

    def run(self, blob: NDArray[np.float32]) -> NDArray[np.float32]:
        self.calls.append(tuple(blob.shape))
        if self.rows is not None:
            return self.rows[: len(blob)]
        # A row that depends on the pixels, so the face and its mirror differ.
        return np.stack([np.resize(b.mean(axis=0).ravel(), 128) + 1.0 for b in blob]).astype(np.float32)


def crop() -> NDArray[np.uint8]:
    return runtimes.self_check_crop(112, 112)


def test_a_runtime_compiled_for_face_and_mirror_gets_one_call_of_two() -> None:
    fake = FakeRuntime(batch=2)
    embedder = SFaceEmbedder(fake, YUNET_SFACE_FLIP.contract)
    vector = embedder.embed(crop())
    assert embedder.batched and fake.calls == [(2, 3, 112, 112)]
    assert embedder.runtime == "fake"
    assert abs(float(np.linalg.norm(vector)) - 1) < 1e-5


def test_batch_one_gets_two_calls_and_the_same_vector_as_a_batch_of_two() -> None:
    single, pair = FakeRuntime(batch=1), FakeRuntime(batch=2)
    one = SFaceEmbedder(single, YUNET_SFACE_FLIP.contract).embed(crop())
    two = SFaceEmbedder(pair, YUNET_SFACE_FLIP.contract).embed(crop())
    assert len(single.calls) == 2
    np.testing.assert_array_equal(one, two)


def test_a_fixed_batch_the_pack_cannot_use_is_refused_at_load() -> None:
    with pytest.raises(ModelError, match="batches of 2"):
        SFaceEmbedder(FakeRuntime(batch=2), PACKS["yunet-sface-v1"].contract)  # no mirror: one crop a call
    with pytest.raises(ModelError, match="batches of 4"):
        SFaceEmbedder(FakeRuntime(batch=4), YUNET_SFACE_FLIP.contract)


def test_wrong_output_width_is_refused_at_load() -> None:
    with pytest.raises(ModelError, match="128-d"):
        SFaceEmbedder(FakeRuntime(batch=1, dim=512), YUNET_SFACE_FLIP.contract)


def test_a_zero_vector_from_the_runtime_is_an_error_not_a_template() -> None:
    zeros = np.zeros((2, 128), dtype=np.float32)
    with pytest.raises(ModelError, match="zero or non-finite"):
        SFaceEmbedder(FakeRuntime(batch=2, rows=zeros), YUNET_SFACE_FLIP.contract).embed(crop())


def test_the_self_check_crop_is_fixed_and_has_structure() -> None:
    first, second = runtimes.self_check_crop(112, 112), runtimes.self_check_crop(112, 112)
    np.testing.assert_array_equal(first, second)
    assert first.shape == (112, 112, 3) and first.dtype == np.uint8
    assert all(float(first[..., c].std()) > 20 for c in range(3))  # not a flat image


class FakeAnalyzer(FaceAnalyzer):
    """Only says how many analysis threads keep a core busy (no photo is analysed here)."""

    pack = YUNET_SFACE_FLIP

    def __init__(self, per_core: int | None) -> None:
        self.per_core = per_core

    def process(self, data: bytes) -> FaceTemplate | Rejection:
        raise NotImplementedError

    def crop_png(self, crop: NDArray[np.uint8]) -> bytes:
        raise NotImplementedError

    def threads_per_core(self) -> int:
        return super().threads_per_core() if self.per_core is None else self.per_core


def test_an_import_runs_enough_analysis_threads_for_its_engine(tmp_path: Path) -> None:
    """OpenVINO computes on its own threads while the caller waits: two analysis threads per core
    (measured 56 -> 72.9 images/s on 2 cores); onnxruntime computes in the caller: one per core.
    A `workers` setting is taken as given."""
    cores = runtimes.usable_cores()
    settings = Settings.load(environ={}, data_dir=tmp_path)
    assert analysis_workers(settings, FakeAnalyzer(None)) == cores  # the port's default: 1 per core
    assert analysis_workers(settings, FakeAnalyzer(2)) == 2 * cores
    assert analysis_workers(settings.with_overrides(workers=3), FakeAnalyzer(2)) == 3

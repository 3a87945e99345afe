"""OpenVINO failing in `auto` (review R12j): a compile or an inference that OpenVINO itself cannot do
used to stop every command that builds the engine (an untyped or ModelError out of build_embedder),
where onnxruntime runs the same pack. `auto` now warns and uses onnxruntime; `openvino-bf16` asked
for by name is still an error. The failures are injected into the real OpenVINO classes (no BF16
CPU or OpenVINO: skipped, `auto` is onnxruntime there anyway)."""

from __future__ import annotations

from typing import Any

import pytest

from face_dedup.bootstrap import build_embedder
from face_dedup.errors import ModelError
from face_dedup.models.registry import YUNET_SFACE_FLIP
from face_dedup.settings import Settings
from face_dedup.vision import runtimes

pytestmark = pytest.mark.skipif(
    not (lambda v: v[0] is not None and "BF16" in v[1])(runtimes.probe_openvino()),
    reason="OpenVINO or a CPU with BF16 is absent here",
)


def _fail(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("Exception from src/plugins/intel_cpu: injected")


@pytest.mark.parametrize("method", ["compile_model", "infer"])
def test_openvino_failing_in_auto_gives_onnxruntime_with_a_warning(
    base_settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, method: str
) -> None:
    import openvino

    owner = openvino.Core if method == "compile_model" else openvino.InferRequest
    monkeypatch.setattr(owner, method, _fail)
    with caplog.at_level("WARNING"):
        embedder = build_embedder(base_settings.with_overrides(embedder_runtime="auto"), YUNET_SFACE_FLIP)
    assert embedder.runtime == runtimes.ONNXRUNTIME
    assert "OpenVINO could not" in caplog.text and "using onnxruntime fp32" in caplog.text
    with pytest.raises(ModelError, match="OpenVINO could not"):
        build_embedder(base_settings.with_overrides(embedder_runtime="openvino-bf16"), YUNET_SFACE_FLIP)


def test_a_compile_in_another_precision_is_not_called_bf16(
    base_settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The precision is a hint: a plugin that compiles fp32 anyway (a CPU or build it does not
    trust with bf16) must not run under the name openvino-bf16 (and brings nothing over onnxruntime)."""
    import openvino

    real = openvino.Core.compile_model

    def in_fp32(self: Any, model: Any, device: Any = None, config: Any = None) -> Any:
        return real(self, model, device, {**(config or {}), "INFERENCE_PRECISION_HINT": "f32"})

    monkeypatch.setattr(openvino.Core, "compile_model", in_fp32)
    with caplog.at_level("WARNING"):
        embedder = build_embedder(base_settings.with_overrides(embedder_runtime="auto"), YUNET_SFACE_FLIP)
    assert embedder.runtime == runtimes.ONNXRUNTIME
    assert "not bf16" in caplog.text

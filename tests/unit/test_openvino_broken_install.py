"""Review R12k: an OpenVINO that is installed but fails to load (a wheel built for another
glibc or CPU, a half-removed install: OSError or RuntimeError from its native library, not
ImportError) is no OpenVINO, as a missing one is: the embedder runs on onnxruntime. It used to
stop every command that builds the engine (import, serve, `models runtime`) with a traceback."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from face_dedup.vision import runtimes


@pytest.mark.parametrize("error", ["OSError", "RuntimeError", "ImportError"])
def test_an_openvino_that_fails_to_load_means_onnxruntime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: str
) -> None:
    package = tmp_path / "openvino"
    package.mkdir()
    (package / "__init__.py").write_text(
        f"raise {error}('libopenvino.so.2600: cannot open shared object file')\n"
    )
    for name in [n for n in sys.modules if n == "openvino" or n.startswith("openvino.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(tmp_path))
    version, capabilities = runtimes.probe_openvino()
    assert (version, capabilities) == (None, [])
    choice = runtimes.choose_runtime(runtimes.AUTO, "some-pack", True, version, capabilities)
    assert choice.runtime == runtimes.ONNXRUNTIME

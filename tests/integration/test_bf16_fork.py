"""The bf16 embedder (OpenVINO) across a fork, and the model bytes it compiles (review R12j).

A process that forks after building the engine (multiprocessing's default start method on Linux,
a pre-forking server) used to leave a child that hung for good: a call waited on the parent's
stream threads, which a child does not have, and so did freeing the compiled model (a child that
never touched the engine hung at exit). Each case runs in a fresh interpreter with a deadline, so a
hang fails the test instead of stalling the run. Skipped where OpenVINO or a CPU with BF16 is absent.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from face_dedup import bootstrap
from face_dedup.bootstrap import build_embedder
from face_dedup.errors import ModelError
from face_dedup.models.registry import YUNET_SFACE_FLIP
from face_dedup.settings import Settings
from face_dedup.vision import embed, runtimes

pytestmark = pytest.mark.skipif(
    not (lambda v: v[0] is not None and "BF16" in v[1])(runtimes.probe_openvino()),
    reason="OpenVINO or a CPU with BF16 is absent here",
)

# The parent builds the bf16 embedder and embeds once (its stream threads are running), then
# forks; the child does CHILD; the parent reports the child's exit status, or HUNG after 60 s.
SCRIPT = """
import os, sys, time
from pathlib import Path
import numpy as np
from face_dedup.bootstrap import build_embedder
from face_dedup.errors import ModelError
from face_dedup.models.registry import YUNET_SFACE_FLIP
from face_dedup.settings import Settings
from face_dedup.vision import runtimes
{setup}
settings = Settings.load(models_dir=Path(sys.argv[1])).with_overrides(embedder_runtime="openvino-bf16")
embedder = build_embedder(settings, YUNET_SFACE_FLIP)
crop = runtimes.self_check_crop(112, 112)
expected = embedder.embed(crop)
{before}
pid = os.fork()
if pid == 0:
{child}
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        print("child", os.waitstatus_to_exitcode(status))
        break
    time.sleep(0.05)
else:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    print("child HUNG")
{after}
"""


def run_forking(models_dir: Path, child: str, before: str = "", after: str = "", setup: str = "") -> str:
    child = textwrap.indent(textwrap.dedent(child), "    ")
    script = SCRIPT.format(child=child, before=before, after=after, setup=setup)
    result = subprocess.run(
        [sys.executable, "-c", script, str(models_dir)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    return lines[-1] if lines else ""


def test_a_forked_child_embeds_the_same_bits_and_exits(base_settings: Settings) -> None:
    """Exits through the interpreter's normal shutdown (sys.exit), which frees what it holds."""
    child = """
        vector = embedder.embed(crop)
        sys.exit(0 if np.array_equal(vector, expected) else 3)
    """
    assert run_forking(base_settings.models_dir, child) == "child 0"


def test_a_forked_child_that_never_embeds_exits(base_settings: Settings) -> None:
    assert run_forking(base_settings.models_dir, "sys.exit(0)") == "child 0"


def test_a_child_forked_while_another_thread_embeds_embeds(base_settings: Settings) -> None:
    """On one core (a container's CPU set) the child hung every time in its own compile: it had
    inherited OpenVINO's locks taken by the thread that was inside a call. A fork now waits for
    the calls in flight."""
    one_core = "os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})"
    busy = """
import threading
stop = threading.Event()
def spin():
    while not stop.is_set():
        embedder.embed(crop)
spinner = threading.Thread(target=spin)
spinner.start()
time.sleep(0.3)
"""
    child = """
        os._exit(0 if np.array_equal(embedder.embed(crop), expected) else 3)
    """
    stop = "stop.set()\nspinner.join()\n"
    assert run_forking(base_settings.models_dir, child, before=busy, after=stop, setup=one_core) == "child 0"


def _models_copy(base_settings: Settings, tmp_path: Path) -> tuple[Settings, Path]:
    """A models dir holding only the default pack's embedder (all build_embedder reads)."""
    name = YUNET_SFACE_FLIP.embedder.filename
    source = base_settings.models_dir / YUNET_SFACE_FLIP.files_dir / name
    target = tmp_path / YUNET_SFACE_FLIP.files_dir / name
    target.parent.mkdir(parents=True)
    shutil.copyfile(source, target)
    return base_settings.with_overrides(models_dir=tmp_path, embedder_runtime="openvino-bf16"), target


def test_openvino_compiles_only_bytes_whose_digest_it_checked(
    base_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file is swapped once its digest was checked (here: while onnxruntime loads it): OpenVINO
    used to open the path again and compile whatever was there; now it is refused as corrupt."""
    settings, model_file = _models_copy(base_settings, tmp_path)
    real_session = embed.create_session

    def session_then_swap(*args: object, **kwargs: object) -> object:
        session = real_session(*args, **kwargs)  # type: ignore[arg-type]
        model_file.write_bytes(b"\x08\x07" + bytes(4096))  # another file under the checked name
        return session

    monkeypatch.setattr(bootstrap, "create_session", session_then_swap)
    with pytest.raises(ModelError, match="is corrupt"):
        build_embedder(settings, YUNET_SFACE_FLIP)


def test_a_forked_child_checks_the_file_again_before_compiling_it(
    base_settings: Settings, tmp_path: Path
) -> None:
    """The child compiles its own from the file: corrupted since the parent started, it is refused
    with the registry's ModelError."""
    settings, model_file = _models_copy(base_settings, tmp_path)
    corrupt = f"open({str(model_file)!r}, 'r+b').write(b'not the model')"
    child = """
        try:
            embedder.embed(crop)
            code = 3
        except Exception as exc:
            code = 0 if isinstance(exc, ModelError) and "corrupt" in str(exc) else 4
        os._exit(code)
    """
    assert run_forking(settings.models_dir, child, before=corrupt) == "child 0"

"""Where the embedder's network runs: onnxruntime in fp32 (the reference, everywhere), or OpenVINO
in bfloat16 on CPUs with native BF16 instructions, for packs whose accuracy was measured there.

Why bf16 and not int8 for the default pack (issue 12, BENCHMARKS.md): on the held-out LFW crops
the default pack's SFace in bf16 stays within 0.1 point of fp32 at every operating point and its
templates keep a cosine of at least 0.998 to the fp32 ones, while face + mirror take about 60% of
the time. int8 lost 0.2 point of TAR at FAR 1e-5 and is a separate pack. bf16 is a way of running
the same pack: which runtime made a template is not part of its comparability.

The choice is pure (`choose_runtime`), so every branch is tested without the hardware; opening
OpenVINO then checks its output against onnxruntime's on a fixed synthetic crop and falls back to
onnxruntime if they disagree (a broken build or CPU never silently changes templates).
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from face_dedup.errors import ConfigError, ModelError

log = logging.getLogger(__name__)

ONNXRUNTIME = "onnxruntime"  # fp32 on onnxruntime: the reference every pack is calibrated on
OPENVINO_BF16 = "openvino-bf16"
AUTO = "auto"
RUNTIME_CHOICES = (AUTO, ONNXRUNTIME, OPENVINO_BF16)

# The smallest cosine between a runtime's and onnxruntime's embedding of the self-check crop that
# is taken as "the same network". Measured on this machine: 0.99987 for bf16 (the held-out LFW
# faces: median 0.99995, min 0.99841); a wrong model, layout or kernel gives far below 0.9.
SELF_CHECK_MIN_COSINE = 0.995


class OpenVinoError(ModelError):
    """OpenVINO itself failed to compile or run the embedder: `auto` then uses onnxruntime."""


class EmbedderRuntime(Protocol):
    """A compiled embedder network: NCHW float32 crops in, one raw (unnormalised) row per crop out."""

    @property
    def name(self) -> str: ...

    @property
    def input_shape(self) -> Sequence[int | str | None]: ...

    @property
    def output_shape(self) -> Sequence[int | str | None]: ...

    def run(self, blob: NDArray[np.float32]) -> NDArray[np.float32]: ...


class OnnxRuntimeRunner:
    """An onnxruntime session (thread-safe: several analysis threads share one)."""

    name = ONNXRUNTIME

    def __init__(self, session: Any) -> None:
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelError(
                f"the embedder must have one input and one output, not {len(inputs)}/{len(outputs)}"
            )
        self._session = session
        self._input = inputs[0].name
        self.input_shape: Sequence[int | str | None] = list(inputs[0].shape)
        self.output_shape: Sequence[int | str | None] = list(outputs[0].shape)

    def run(self, blob: NDArray[np.float32]) -> NDArray[np.float32]:
        (output,) = self._session.run(None, {self._input: blob})
        return np.asarray(output, dtype=np.float32)


class OpenVinoRunner:
    """A model compiled by OpenVINO for the CPU. An infer request is not thread-safe, so each
    calling thread gets its own; the model is compiled with one stream per core (one thread
    each), or two threads calling at once would queue on one stream (measured: no speed-up).

    A forked child (multiprocessing's fork, a pre-forking server) compiles its own on first use:
    the parent's compiled model runs calls on stream threads the child does not have, so a call
    there waited forever, and so did freeing it (a child that never used it hung at exit). A fork
    waits for the calls in flight (_FORK_GUARD)."""

    name = OPENVINO_BF16

    def __init__(self, compile_model: Callable[[], Any]) -> None:
        self._compile = compile_model
        with _FORK_GUARD.call():
            compiled = compile_model()
        self._compiled: Any = compiled
        self._lock = threading.Lock()
        self._local = threading.local()
        self.precision = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
        self.input_shape: Sequence[int | str | None] = [int(d) for d in compiled.input(0).shape]
        self.output_shape: Sequence[int | str | None] = [int(d) for d in compiled.output(0).shape]
        _runners.add(self)

    def run(self, blob: NDArray[np.float32]) -> NDArray[np.float32]:
        with _FORK_GUARD.call():
            compiled = self._compiled if self._compiled is not None else self._compile_in_child()
            request = getattr(self._local, "request", None)
            if request is None:
                request = self._local.request = compiled.create_infer_request()
            try:
                result = request.infer({0: blob})
            except RuntimeError as exc:  # OpenVINO's errors are untyped
                raise OpenVinoError(f"OpenVINO could not run the embedder: {exc}") from exc
            # Copy: the request reuses its output buffer on the next call.
            return np.array(result[compiled.output(0)], dtype=np.float32)

    def _compile_in_child(self) -> Any:
        with self._lock:  # the child's threads compile once
            if self._compiled is None:
                self._compiled = self._compile()
            return self._compiled

    def _after_fork_in_child(self) -> None:
        if self._compiled is not None:
            # Never freed: its destructor waits for the parent's stream threads. A reference
            # leaked on purpose (the child's copy of the parent's memory, nothing new).
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(self._compiled))
        self._compiled = None
        # The parent's requests belong to its compiled model (freeing one is safe); a lock a
        # parent thread held at the fork would stay held here.
        self._local = threading.local()
        self._lock = threading.Lock()


class _ForkGuard:
    """A fork waits until no OpenVINO call is in flight, and holds new ones until it is done: a
    child forked while another thread was inside OpenVINO inherited its internal locks taken, and
    the child's own compile waited on them for good (one core: every time)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._calls = 0
        self._forking = False

    @contextmanager
    def call(self) -> Iterator[None]:
        with self._cond:
            while self._forking:
                self._cond.wait()
            self._calls += 1
        try:
            yield
        finally:
            with self._cond:
                self._calls -= 1
                self._cond.notify_all()

    def before_fork(self) -> None:
        self._cond.acquire()  # held across the fork: released in the parent, replaced in the child
        self._forking = True  # new calls wait, so the calls in flight drain
        while self._calls:
            self._cond.wait()

    def after_fork_in_parent(self) -> None:
        self._forking = False
        self._cond.notify_all()
        self._cond.release()


_FORK_GUARD = _ForkGuard()
_runners: weakref.WeakSet[OpenVinoRunner] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    global _FORK_GUARD
    _FORK_GUARD = _ForkGuard()  # the parent's calls are not this process's
    for runner in list(_runners):
        runner._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=lambda: _FORK_GUARD.before_fork(),
        after_in_parent=lambda: _FORK_GUARD.after_fork_in_parent(),
        after_in_child=_after_fork_in_child,
    )


@dataclass(frozen=True)
class RuntimeChoice:
    runtime: str  # ONNXRUNTIME or OPENVINO_BF16
    reason: str  # said by `face-dedup models runtime`, logged at start


def choose_runtime(
    requested: str,
    pack_id: str,
    pack_bf16_measured: bool,
    openvino_version: str | None,
    cpu_capabilities: Sequence[str],
) -> RuntimeChoice:
    """`auto` takes bf16 only where all of it holds; asking for bf16 by name where it cannot run
    is a configuration error (an operator who asked for it should not get fp32 silently)."""
    if requested not in RUNTIME_CHOICES:
        raise ConfigError(f"embedder_runtime must be one of {', '.join(RUNTIME_CHOICES)}, not {requested!r}")
    if requested == ONNXRUNTIME:
        return RuntimeChoice(ONNXRUNTIME, "onnxruntime fp32 asked for by configuration")
    if not pack_bf16_measured:
        blocker = f"pack {pack_id}'s accuracy was not measured in bf16"
    elif openvino_version is None:
        blocker = "openvino is not installed"
    elif "BF16" not in cpu_capabilities:
        blocker = "this CPU has no native BF16 instructions"
    else:
        return RuntimeChoice(OPENVINO_BF16, f"OpenVINO {openvino_version} bf16: the CPU has BF16")
    if requested == OPENVINO_BF16:
        raise ConfigError(f"embedder_runtime {OPENVINO_BF16} cannot run here: {blocker}")
    return RuntimeChoice(ONNXRUNTIME, f"onnxruntime fp32: {blocker}")


def probe_openvino() -> tuple[str | None, list[str]]:
    """OpenVINO's version and the CPU's capabilities it reports; (None, []) without OpenVINO."""
    try:
        import openvino
    except ImportError:
        return None, []
    except Exception as exc:  # installed but its native library fails to load: no OpenVINO either
        log.warning(
            "OpenVINO is installed but could not be loaded (%s): using onnxruntime", type(exc).__name__
        )
        return None, []
    try:
        capabilities = openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception as exc:  # OpenVINO raises its own untyped errors; no CPU plugin = no bf16
        log.warning("OpenVINO could not describe the CPU (%s): using onnxruntime", type(exc).__name__)
        return _short(openvino.__version__), []
    return _short(openvino.__version__), [str(c) for c in capabilities]


def _short(version: object) -> str:
    """2026.4.1 of '2026.4.1-22982-e213a147257-releases/2026/4'."""
    return str(version).split("-", 1)[0]


def usable_cores() -> int:
    """Cores this process may run on (a container's CPU set, not the host's count), and no more
    than its CPU quota (a container limited to 2 CPUs on a 64-core host sees all 64 in its
    CPU set: Kubernetes and `docker --cpus` limit by quota; review R12k)."""
    try:
        cores = max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        cores = max(1, os.cpu_count() or 1)
    quota = cpu_quota_cores()
    return min(cores, quota) if quota is not None else cores


# cgroup v2, then v1: the CPU time a container may use per period.
CPU_QUOTA_FILES = (
    ("/sys/fs/cgroup/cpu.max",),
    ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu/cpu.cfs_period_us"),
)


def cpu_quota_cores() -> int | None:
    """The CPU quota in whole cores (rounded up, at least 1), or None where there is none."""
    for files in CPU_QUOTA_FILES:
        try:
            fields = " ".join(Path(f).read_text() for f in files).split()
            quota, period = fields[0], fields[1]
            if quota in ("max", "-1"):
                return None
            return max(1, -(-int(quota) // int(period)))
        except (OSError, IndexError, ValueError, ZeroDivisionError):
            continue
    return None


def open_openvino_bf16(model: Callable[[], bytes], batch: int | None, threads: int = 1) -> OpenVinoRunner:
    """Compile the ONNX model `model()` returns (its bytes, verified by their SHA-256 as read:
    OpenVINO parses what was checked, not a path that could name another file by then; called
    again in a forked child) for bf16 inference. `batch` fixes a dynamic or batch-1 input to that
    many crops (face and mirror in one run: measured 10% faster than two runs, the same bits).
    `threads` per stream, one stream per usable core."""
    return OpenVinoRunner(lambda: _compile_bf16(model(), batch, threads))


def _compile_bf16(data: bytes, batch: int | None, threads: int) -> Any:
    import openvino

    streams = max(1, usable_cores() // max(1, threads))
    try:
        core = openvino.Core()
        model = core.read_model(data)
        if batch is not None:
            shape = list(model.input(0).partial_shape)
            model.reshape([batch, *shape[1:]])
        compiled = core.compile_model(
            model,
            "CPU",
            {
                "INFERENCE_PRECISION_HINT": "bf16",
                "PERFORMANCE_HINT": "LATENCY",
                "NUM_STREAMS": streams,
                "INFERENCE_NUM_THREADS": streams * max(1, threads),
                # Pinning would put every stream of every process on the same cores.
                "ENABLE_CPU_PINNING": False,
            },
        )
    except Exception as exc:  # OpenVINO raises its own untyped errors
        raise OpenVinoError(f"OpenVINO could not compile the embedder: {exc}") from exc
    # The hint is a request: where the plugin compiled another precision (a CPU or build it
    # does not trust with bf16), OpenVINO brings nothing over onnxruntime, and the runtime's
    # name would say bf16 for what is not.
    precision = compiled.get_property("INFERENCE_PRECISION_HINT")
    if precision != openvino.Type.bf16:
        raise OpenVinoError(f"OpenVINO compiled the embedder in {precision}, not bf16")
    return compiled


def self_check_crop(width: int, height: int) -> NDArray[np.uint8]:
    """A fixed, smooth synthetic crop (no person's face is shipped): enough structure that a
    wrong model, channel order or kernel shows as a low cosine."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    planes = (
        128 + 60 * np.sin(xx / 9) + 40 * np.cos(yy / 13),
        100 + 50 * np.sin((xx + yy) / 15),
        90 + 70 * np.cos(xx / 7 - yy / 11),
    )
    return np.clip(np.stack(planes, axis=-1), 0, 255).astype(np.uint8)


def agrees_with(
    candidate: Callable[[NDArray[np.uint8]], NDArray[np.float32]],
    reference: Callable[[NDArray[np.uint8]], NDArray[np.float32]],
    crop: NDArray[np.uint8],
) -> float:
    """Cosine between two embedders' (unit) vectors for the same crop."""
    return float(np.dot(candidate(crop), reference(crop)))

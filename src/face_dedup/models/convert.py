"""One-time model conversions, run at install/build time only (never per request).

`fold-dequantize-fp32`: the int8 block-quantized SFace file lists its weights as graph inputs
that onnxruntime refuses, and dequantizes them on every call. Folding each DequantizeLinear of
constant weights into an fp32 initializer gives the same outputs, loads in onnxruntime and is
faster. Needs the `onnx` package (extra `models`); the runtime does not.

`quantize-int8-qdq`: the folded fp32 SFace quantized statically (onnxruntime QDQ: per-channel
int8 weights, uint8 activations), its batch dimension made dynamic so the embedder runs a face
and its mirror in one call. The activation ranges are NOT measured here: a fresh install has no
photos. They come from a committed table (int8_ranges_sface.json), measured once on the shared
non-LFW photos by `python bench/int8_ranges.py`; the quantizer is handed those ranges as the
calibrator's result (onnxruntime's QDQQuantizer takes a TensorsData), so the file is a pure
function of the pinned shipped file, the table and the tool versions, and its digest is pinned.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable, Iterable
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from face_dedup.errors import ModelError


def fold_dequantize_fp32(source: Path, target: Path) -> None:
    try:
        import onnx
        from onnx import numpy_helper
        from onnx.reference import ReferenceEvaluator
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ModelError(
            "converting the model needs the `onnx` package: pip install 'face-dedup[models]'"
        ) from exc

    model = onnx.load(str(source))
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}

    kept_nodes = []
    folded: list[Any] = []
    for node in graph.node:
        constant_inputs = all(name in initializers for name in node.input if name)
        if node.op_type == "DequantizeLinear" and constant_inputs:
            # Evaluate this single node with the reference implementation, which knows the
            # block-size semantics of opset 21, rather than re-deriving them here.
            single = onnx.helper.make_model(
                onnx.helper.make_graph(
                    [node],
                    "fold",
                    [],
                    [onnx.helper.make_tensor_value_info(node.output[0], onnx.TensorProto.FLOAT, None)],
                    [initializers[name] for name in node.input if name],
                ),
                opset_imports=list(model.opset_import),
            )
            (value,) = ReferenceEvaluator(single).run(None, {})
            folded.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), node.output[0]))
        else:
            kept_nodes.append(node)

    del graph.node[:]
    graph.node.extend(kept_nodes)
    graph.initializer.extend(folded)

    consumed = {name for node in graph.node for name in node.input}
    consumed |= {out.name for out in graph.output}
    live_initializers = [init for init in graph.initializer if init.name in consumed]
    del graph.initializer[:]
    graph.initializer.extend(live_initializers)
    produced = {init.name for init in graph.initializer} | {o for n in graph.node for o in n.output}
    # Graph inputs that are really weights, or that nothing reads, are what onnxruntime rejects.
    real_inputs = [inp for inp in graph.input if inp.name not in produced and inp.name in consumed]
    del graph.input[:]
    graph.input.extend(real_inputs)

    onnx.checker.check_model(model)
    tmp = target.with_suffix(".tmp")
    onnx.save(model, str(tmp))
    tmp.replace(target)


INT8_RANGES_TABLE = "int8_ranges_sface.json"
# The versions the pinned int8 file was produced with: other versions may lay the graph out
# differently (a different digest, refused at install with this hint).
INT8_TOOLS = {"onnx": "1.19.1", "onnxruntime": "1.23.2"}


def _tools() -> tuple[Any, Any]:
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ModelError(
            "converting the model needs the `onnx` package: pip install 'face-dedup[models]'"
        ) from exc
    return onnx, onnxruntime


def prepare_for_int8(folded: Path, target: Path) -> None:
    """The folded fp32 SFace (the fp32 packs' pinned file) -> a dynamic batch, shape-inferred
    and optimised (BatchNorm folded into Conv) the way onnxruntime's quantizer expects: the
    graph whose activation tensors the ranges table names."""
    onnx, _ = _tools()
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="face-dedup-int8-") as tmp:
        model = onnx.load(str(folded))
        # Batch 1 is written into the shipped graph; nothing in it depends on it (Flatten keeps
        # axis 0), so the face and its mirror can go through as one batch of 2.
        for value in (*model.graph.input, *model.graph.output):
            value.type.tensor_type.shape.dim[0].dim_param = "batch"
        del model.graph.value_info[:]
        dynamic = Path(tmp) / "dynamic.onnx"
        onnx.save(model, str(dynamic))
        quant_pre_process(str(dynamic), str(target), skip_symbolic_shape=True)


def activation_ranges(
    prepared: Path, batches: Iterable[NDArray[np.float32]], percentile: float | None = None
) -> dict[str, list[float]]:
    """The range of every activation the quantizer needs, over the given NCHW inputs (the
    measurement behind the committed table; never run at install): min/max, or with
    `percentile` the central share of each tensor's histogram (outliers clipped)."""
    _tools()
    from onnxruntime.quantization import CalibrationDataReader
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorsData, create_calibrator
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    items = iter(batches)

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def get_next(self) -> dict[str, NDArray[np.float32]] | None:
            batch = next(items, None)
            return None if batch is None else {"data": batch}

    with tempfile.TemporaryDirectory(prefix="face-dedup-int8-") as tmp:
        calibrator = create_calibrator(
            prepared,
            sorted(set(QLinearOpsRegistry) | set(QDQRegistry)),
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=CalibrationMethod.MinMax if percentile is None else CalibrationMethod.Percentile,
            extra_options={} if percentile is None else {"percentile": percentile, "symmetric": False},
        )
        calibrator.collect_data(Reader())
        ranges = calibrator.compute_data()
    if not isinstance(ranges, TensorsData):
        raise ModelError(f"the calibrator answered {type(ranges).__name__}, not TensorsData")
    # float32 values written as the doubles they equal: read back, they are the same float32.
    return {
        name: [float(np.float32(data.range_value[0])), float(np.float32(data.range_value[1]))]
        for name, data in sorted(ranges.items())
    }


def load_ranges_table() -> tuple[dict[str, list[float]], list[str]]:
    """The committed table: activation ranges, and the nodes left in fp32 (`keep_fp32`)."""
    text = resources.files("face_dedup.models").joinpath(INT8_RANGES_TABLE).read_text(encoding="utf-8")
    table = json.loads(text)
    ranges = table["ranges"]
    if not isinstance(ranges, dict) or not ranges:
        raise ModelError(f"{INT8_RANGES_TABLE} has no ranges")
    keep = [str(name) for name in table.get("keep_fp32", [])]
    return {str(k): [float(v[0]), float(v[1])] for k, v in ranges.items()}, keep


def quantize_int8_qdq(source: Path, target: Path) -> None:
    """The shipped int8bq file -> folded fp32 (as the fp32 packs install it) -> int8 QDQ."""
    with tempfile.TemporaryDirectory(prefix="face-dedup-int8-") as tmp:
        folded = Path(tmp) / "folded.onnx"
        fold_dequantize_fp32(source, folded)
        quantize_folded_int8(folded, target)


def quantize_folded_int8(folded: Path, target: Path) -> None:
    """The folded fp32 SFace -> the int8 pack's file (tests run this on the installed fp32 file
    and check the pinned digest: the install, without the network)."""
    onnx, onnxruntime = _tools()
    found = {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
    if found != INT8_TOOLS:
        # Another quantizer version lays the graph out differently: its file would not match
        # the pinned digest. Say so before spending the time.
        raise ModelError(
            f"the int8 pack is built with {INT8_TOOLS}, this environment has {found}: install "
            "those versions, or install the other packs only (`face-dedup models install --pack ...`)"
        )
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorsData
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer
    from onnxruntime.quantization.quant_utils import load_model_with_shape_infer, update_opset_version
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    table, keep_fp32 = load_ranges_table()
    with tempfile.TemporaryDirectory(prefix="face-dedup-int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        prepare_for_int8(folded, prepared)
        model = update_opset_version(load_model_with_shape_infer(prepared), QuantType.QInt8)
        activations = {o for n in model.graph.node for o in n.output} | {i.name for i in model.graph.input}
        # The table names only the tensors the calibrator watched; one the graph lacks means
        # the graph is not the one it was measured on (the pinned digest catches the rest).
        nodes = {n.name for n in model.graph.node}
        unknown = sorted((set(table) - activations) | (set(keep_fp32) - nodes))
        if unknown:
            raise ModelError(
                f"{INT8_RANGES_TABLE} names tensors or nodes {unknown[:3]} this graph lacks (it differs from "
                f"the one it was measured on: install with {INT8_TOOLS})"
            )
        ranges = TensorsData(
            CalibrationMethod.MinMax,
            {name: (np.float32(lo), np.float32(hi)) for name, (lo, hi) in table.items()},
        )
        # The arguments quantize_static passes for QDQ, with the committed ranges in place of
        # a calibration run (the probe's settings: per-channel int8 weights, uint8 activations).
        quantizer = QDQQuantizer(
            model,
            True,  # per_channel
            False,  # reduce_range
            QuantType.QInt8,
            QuantType.QUInt8,
            ranges,
            [],
            keep_fp32,  # nodes_to_exclude
            sorted(set(QLinearOpsRegistry) | set(QDQRegistry)),
            {},
        )
        root = logging.getLogger()
        level = root.level
        # The quantizer logs per-channel notes on 1-D BatchNorm weights at WARNING on the root
        # logger ("Axis 1 is out-of-range"): expected here, and not for the installing user.
        root.setLevel(max(level, logging.ERROR))
        try:
            quantizer.quantize_model()
        finally:
            root.setLevel(level)
        tmp_target = target.with_suffix(".tmp")
        quantizer.model.save_model_to_file(str(tmp_target))  # sorts the nodes, as quantize_static does
        onnx.checker.check_model(str(tmp_target))
        tmp_target.replace(target)


CONVERSIONS: dict[str, Callable[[Path, Path], None]] = {
    "fold-dequantize-fp32": fold_dequantize_fp32,
    "quantize-int8-qdq": quantize_int8_qdq,
}

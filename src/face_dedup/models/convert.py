"""One-time model conversions, run at install/build time only (never per request).

`fold-dequantize-fp32`: the int8 block-quantized SFace file lists its weights as graph inputs
that onnxruntime refuses, and dequantizes them on every call. Folding each DequantizeLinear of
constant weights into an fp32 initializer gives the same outputs, loads in onnxruntime and is
faster. Needs the `onnx` package (extra `models`); the runtime does not.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

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


CONVERSIONS: dict[str, Callable[[Path, Path], None]] = {
    "fold-dequantize-fp32": fold_dequantize_fp32,
}

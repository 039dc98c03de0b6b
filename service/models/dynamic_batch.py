"""Make the batch dimension of a fixed-batch ONNX embedder dynamic.

The published MobileFaceNet graph ends in `Reshape(x, [1, 128])` and declares a `1 x 3 x 112 x 112` input. We
rewrite the leading 1 of that shape constant to 0 (copy the input's batch dimension), mark the first input and
output dimension symbolic, and let ONNX Runtime run any batch. `tests/test_models.py` proves the result equals
the original on real faces.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

BATCH_DIM = "batch"


def _constant_values(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {node.output[0]: node for node in graph.node if node.op_type == "Constant"}


def make_batch_dynamic(src: Path, dst: Path) -> None:
    model = onnx.load(str(src))
    graph = model.graph
    constants = _constant_values(graph)
    initializers = {init.name: init for init in graph.initializer}
    patched = 0
    for node in graph.node:
        if node.op_type != "Reshape":
            continue
        shape_name = node.input[1]
        if shape_name in constants:
            attr = next(a for a in constants[shape_name].attribute if a.name == "value")
            shape = numpy_helper.to_array(attr.t)
            if shape.size and shape[0] == 1:
                shape = shape.copy()
                shape[0] = 0  # 0 = copy the batch dimension of the input
                attr.t.CopyFrom(numpy_helper.from_array(shape.astype(np.int64), attr.t.name))
                patched += 1
        elif shape_name in initializers:
            shape = numpy_helper.to_array(initializers[shape_name])
            if shape.size and shape[0] == 1:
                shape = shape.copy()
                shape[0] = 0  # 0 = copy the batch dimension of the input
                initializers[shape_name].CopyFrom(numpy_helper.from_array(shape.astype(np.int64), shape_name))
                patched += 1
    for value in list(graph.input) + list(graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].ClearField("dim_value")
            dims[0].dim_param = BATCH_DIM
    del graph.value_info[:]  # stale shapes with batch 1 would confuse shape inference
    onnx.checker.check_model(model)
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dst))
    if patched == 0:
        raise ValueError(f"{src}: found no batch-fixing Reshape to patch")

"""Build MTCNN's output network (O-Net) as an ONNX graph from facenet-pytorch's `onet.pt` state dict (no torch:
the tensors are read by `torch_state_dict.py`).

Owns the O-Net architecture of facenet-pytorch (`models/mtcnn.py`, class `ONet`): conv1 3->32 k3, PReLU, max pool
3/2 (ceil); conv2 32->64 k3, PReLU, max pool 3/2 (ceil); conv3 64->64 k3, PReLU, max pool 2/2 (ceil); conv4
64->128 k2, PReLU; then `permute(0, 3, 2, 1)` (weights ported from Caffe, which flattens W before H) and flatten
to 1152 -> dense5 (256), PReLU -> dense6_1 (2, softmax), dense6_2 (4, box offsets), dense6_3 (10, points).

The ONNX contract: input `image` float32 [N, 3, 48, 48], RGB, (pixel - 127.5) / 128, rows = y; outputs `points`
[N, 10] (x of the five points, then y, as fractions of the crop; left eye, right eye, nose, left and right mouth
corner as seen in the image), `box` [N, 4] and `score` [N, 1] (face probability, softmax column 1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from service.models.tflite_to_onnx import BATCH_DIM, IR_VERSION, OPSET
from service.models.torch_state_dict import load_state_dict

INPUT_SIZE = 48
INPUT_NAME = "image"
OUTPUT_NAMES = ("points", "box", "score")
# (conv, PReLU, max-pool kernel) in order; pools have stride 2 and ceil_mode; None: no pool after that conv
_CONV_STAGES: tuple[tuple[str, str, int | None], ...] = (
    ("conv1", "prelu1", 3), ("conv2", "prelu2", 3), ("conv3", "prelu3", 2), ("conv4", "prelu4", None),
)
_POOL_STRIDE = 2
EXPECTED_KEYS = frozenset(
    [f"{conv}.{part}" for conv, _, _ in _CONV_STAGES for part in ("weight", "bias")]
    + [f"{prelu}.weight" for _, prelu, _ in _CONV_STAGES]
    + ["dense5.weight", "dense5.bias", "prelu5.weight"]
    + [f"dense6_{i}.{part}" for i in (1, 2, 3) for part in ("weight", "bias")]
)


def load_onet_weights(src: Path) -> dict[str, np.ndarray]:
    """The O-Net tensors of the torch state dict at `src`, by their state-dict names (conv1.weight, ...)."""
    weights = {key: array.astype(np.float32) for key, array in load_state_dict(src).items()}
    missing = EXPECTED_KEYS - weights.keys()
    if missing:
        raise ValueError(f"{src}: not an O-Net state dict, missing {sorted(missing)}")
    return weights


def onet_model(weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []

    def const(name: str, array: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array, dtype=array.dtype), name))
        return name

    def node(op: str, inputs: list[str], out: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    x = INPUT_NAME
    for conv, prelu, pool in _CONV_STAGES:
        w = weights[f"{conv}.weight"]
        x = node("Conv", [x, const(f"{conv}.weight", w), const(f"{conv}.bias", weights[f"{conv}.bias"])], conv,
                 kernel_shape=list(w.shape[2:]), strides=[1, 1], pads=[0, 0, 0, 0])
        slope = weights[f"{prelu}.weight"].reshape(-1, 1, 1)  # one slope per channel, broadcast over H and W
        x = node("PRelu", [x, const(f"{prelu}.weight", slope)], prelu)
        if pool is not None:
            x = node("MaxPool", [x], f"pool{conv[-1]}", kernel_shape=[pool, pool],
                     strides=[_POOL_STRIDE, _POOL_STRIDE], ceil_mode=1)
    x = node("Transpose", [x], "caffe_order", perm=[0, 3, 2, 1])  # N, C, H, W -> N, W, H, C as facenet-pytorch
    x = node("Flatten", [x], "flat", axis=1)
    x = node("Gemm", [x, const("dense5.weight", weights["dense5.weight"]),
                      const("dense5.bias", weights["dense5.bias"])], "dense5", transB=1)
    x = node("PRelu", [x, const("prelu5.weight", weights["prelu5.weight"])], "prelu5")

    def dense(index: int, out: str) -> str:
        key = f"dense6_{index}"
        return node("Gemm", [x, const(f"{key}.weight", weights[f"{key}.weight"]),
                             const(f"{key}.bias", weights[f"{key}.bias"])], out, transB=1)

    probabilities = node("Softmax", [dense(1, "dense6_1")], "softmax6_1", axis=1)
    node("Slice", [probabilities, const("face_column_start", np.array([1], np.int64)),
                   const("face_column_end", np.array([2], np.int64)), const("columns", np.array([1], np.int64))],
         "score")
    dense(2, "box")
    dense(3, "points")

    graph = helper.make_graph(
        nodes, "mtcnn_onet",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [BATCH_DIM, 3, INPUT_SIZE, INPUT_SIZE])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [BATCH_DIM, size])
         for name, size in zip(OUTPUT_NAMES, (10, 4, 1), strict=True)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="anyface.onet_onnx", ir_version=IR_VERSION)
    onnx.checker.check_model(model, full_check=True)
    return model


def build_onet(src: Path, dst: Path) -> None:
    """Write the O-Net ONNX file `dst` from facenet-pytorch's O-Net state dict (`onet.pt`) at `src`."""
    model = onet_model(load_onet_weights(src))
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dst))

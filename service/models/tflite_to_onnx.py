"""A small TFLite -> ONNX converter in pure Python (the `tflite` flatbuffer parser, `onnx`, numpy; no TensorFlow).

It owns the op-by-op translation of float TFLite graphs made of plain convolutional ops, the set MediaPipe's face
mesh uses: DEQUANTIZE (fp16 constants, folded into fp32 initializers), CONV_2D, DEPTHWISE_CONV_2D, PRELU, ADD,
MAX_POOL_2D and PAD, with TFLite's SAME/VALID padding (SAME puts the odd pixel at the end), strides, dilations
and fused activations. TFLite activations are NHWC: the ONNX graph transposes each input to NCHW once, runs every
op in NCHW and transposes each output back, so the model's boundary keeps the TFLite layout. The batch dimension
of inputs and outputs is made symbolic. Any other op, tensor type or activation rank (all must be 4-D) raises
`UnsupportedTflite`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import tflite
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # the IR version that goes with opset 17: loadable by older ONNX Runtime and Triton builds too
BATCH_DIM = "batch"
NHWC_TO_NCHW = (0, 3, 1, 2)
NCHW_TO_NHWC = (0, 2, 3, 1)

_NUMPY_TYPES: dict[int, type[np.generic]] = {
    tflite.TensorType.FLOAT32: np.float32,
    tflite.TensorType.FLOAT16: np.float16,
    tflite.TensorType.INT32: np.int32,
    tflite.TensorType.INT64: np.int64,
}


class UnsupportedTflite(ValueError):
    """The TFLite graph uses an op, option or tensor type this converter does not translate."""


@dataclass
class _Graph:
    """What the translation has built so far: ONNX nodes and initializers, and what each TFLite tensor became."""

    model: tflite.Model
    subgraph: tflite.SubGraph
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)
    constants: dict[int, np.ndarray] = field(default_factory=dict)  # TFLite layout, fp32 after DEQUANTIZE
    values: dict[int, str] = field(default_factory=dict)  # activations: ONNX name, 4-D ones in NCHW
    used_names: set[str] = field(default_factory=set)

    def tensor(self, index: int) -> tflite.Tensor:
        return self.subgraph.Tensors(index)

    def shape(self, index: int) -> tuple[int, ...]:
        tensor = self.tensor(index)
        return tuple(int(d) for d in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()

    def unique(self, base: str) -> str:
        name = re.sub(r"[^A-Za-z0-9_./:-]", "_", base) or "t"
        candidate, n = name, 1
        while candidate in self.used_names:
            n += 1
            candidate = f"{name}_{n}"
        self.used_names.add(candidate)
        return candidate

    def tensor_name(self, index: int) -> str:
        return self.tensor(index).Name().decode("utf-8")

    def constant(self, index: int) -> np.ndarray:
        if index not in self.constants:
            raise UnsupportedTflite(f"tensor {self.tensor_name(index)!r} must be a constant")
        return self.constants[index]

    def value(self, index: int) -> str:
        if index not in self.values:
            raise UnsupportedTflite(f"tensor {self.tensor_name(index)!r} is not computed by any earlier op")
        return self.values[index]

    def initializer(self, array: np.ndarray, base: str) -> str:
        name = self.unique(base)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op_type: str, inputs: list[str], base: str, **attrs: Any) -> str:
        out = self.unique(base)
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out


def _buffer_array(model: tflite.Model, raw: bytes, tensor: tflite.Tensor) -> np.ndarray | None:
    """The constant data of a tensor, or None when it has none (an activation)."""
    buffer = model.Buffers(tensor.Buffer())
    if buffer is None:
        return None
    if buffer.Offset() > 1:  # large models keep buffers after the flatbuffer
        data = np.frombuffer(raw, dtype=np.uint8, count=int(buffer.Size()), offset=int(buffer.Offset()))
    elif buffer.DataLength() > 0:
        data = buffer.DataAsNumpy()
    else:
        return None
    dtype = _NUMPY_TYPES.get(tensor.Type())
    if dtype is None:
        raise UnsupportedTflite(f"constant {tensor.Name().decode()!r} has TFLite tensor type {tensor.Type()}")
    shape = tuple(int(d) for d in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
    return np.frombuffer(data.tobytes(), dtype=dtype).reshape(shape).copy()


def _options(op: tflite.Operator, cls: type) -> Any:
    table = op.BuiltinOptions()
    if table is None:
        raise UnsupportedTflite(f"operator without {cls.__name__}")
    options = cls()
    options.Init(table.Bytes, table.Pos)
    return options


def _same_or_valid_pads(
    padding: int, size: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int]
) -> list[int]:
    """ONNX `pads` [top, left, bottom, right] for TFLite's padding of an (H, W) input."""
    if padding == tflite.Padding.VALID:
        return [0, 0, 0, 0]
    if padding != tflite.Padding.SAME:
        raise UnsupportedTflite(f"padding mode {padding}")
    begin, end = [], []
    for n, k, s, d in zip(size, kernel, stride, dilation, strict=True):
        out = -(-n // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
        begin.append(total // 2)  # TensorFlow puts the odd pixel at the end
        end.append(total - total // 2)
    return begin + end


def _activation(g: _Graph, x: str, fused: int, base: str) -> str:
    kinds = tflite.ActivationFunctionType
    if fused == kinds.NONE:
        return x
    if fused == kinds.RELU:
        return g.node("Relu", [x], base + "/relu")
    if fused in (kinds.RELU6, kinds.RELU_N1_TO_1):
        low, high = (0.0, 6.0) if fused == kinds.RELU6 else (-1.0, 1.0)
        bounds = [g.initializer(np.array(v, np.float32), f"{base}/clip_{tag}")
                  for v, tag in ((low, "min"), (high, "max"))]
        return g.node("Clip", [x, *bounds], base + "/clip")
    if fused == kinds.TANH:
        return g.node("Tanh", [x], base + "/tanh")
    raise UnsupportedTflite(f"fused activation {fused}")


def _nchw_constant(array: np.ndarray) -> np.ndarray:
    """A constant that broadcasts against an NHWC activation, rearranged to broadcast against its NCHW copy."""
    if array.ndim > 4:
        raise UnsupportedTflite(f"constant of rank {array.ndim} next to a 4-D activation")
    return array.reshape((1,) * (4 - array.ndim) + array.shape).transpose(NHWC_TO_NCHW)


def _operand(g: _Graph, index: int, base: str) -> str:
    """An op input that may be an activation or a constant (constants are laid out for NCHW activations)."""
    if index in g.values:
        return g.values[index]
    return g.initializer(_nchw_constant(g.constant(index).astype(np.float32)), base)


def _conv(g: _Graph, op: tflite.Operator, depthwise: bool) -> str:
    x_idx, w_idx = int(op.Inputs(0)), int(op.Inputs(1))
    b_idx = int(op.Inputs(2)) if op.InputsLength() > 2 else -1
    out_name = g.tensor_name(int(op.Outputs(0)))
    cls = tflite.DepthwiseConv2DOptions if depthwise else tflite.Conv2DOptions
    opt = _options(op, cls)
    weight = g.constant(w_idx).astype(np.float32)
    _, height, width, channels = g.shape(x_idx)
    if depthwise:  # TFLite (1, KH, KW, C * M) -> ONNX (C * M, 1, KH, KW), one group per input channel
        kernel = weight.transpose(3, 0, 1, 2)
        group = channels
    else:  # TFLite (O, KH, KW, I) -> ONNX (O, I, KH, KW)
        kernel = weight.transpose(0, 3, 1, 2)
        group = 1
    kh, kw = kernel.shape[2], kernel.shape[3]
    stride = (opt.StrideH(), opt.StrideW())
    dilation = (max(opt.DilationHFactor(), 1), max(opt.DilationWFactor(), 1))
    pads = _same_or_valid_pads(opt.Padding(), (height, width), (kh, kw), stride, dilation)
    inputs = [g.value(x_idx), g.initializer(kernel, out_name + "/kernel")]
    if b_idx >= 0:
        inputs.append(g.initializer(g.constant(b_idx).astype(np.float32).reshape(-1), out_name + "/bias"))
    y = g.node("Conv", inputs, out_name + "/conv" if opt.FusedActivationFunction() else out_name,
               kernel_shape=[kh, kw], strides=list(stride), dilations=list(dilation), pads=pads, group=group)
    return _activation(g, y, opt.FusedActivationFunction(), out_name)


def _max_pool(g: _Graph, op: tflite.Operator) -> str:
    x_idx = int(op.Inputs(0))
    out_name = g.tensor_name(int(op.Outputs(0)))
    opt = _options(op, tflite.Pool2DOptions)
    _, height, width, _ = g.shape(x_idx)
    kernel = (opt.FilterHeight(), opt.FilterWidth())
    stride = (opt.StrideH(), opt.StrideW())
    pads = _same_or_valid_pads(opt.Padding(), (height, width), kernel, stride, (1, 1))
    y = g.node("MaxPool", [g.value(x_idx)], out_name + "/pool" if opt.FusedActivationFunction() else out_name,
               kernel_shape=list(kernel), strides=list(stride), pads=pads)  # padded cells never win, as in TF
    return _activation(g, y, opt.FusedActivationFunction(), out_name)


def _add(g: _Graph, op: tflite.Operator) -> str:
    out_name = g.tensor_name(int(op.Outputs(0)))
    opt = _options(op, tflite.AddOptions)
    a = _operand(g, int(op.Inputs(0)), out_name + "/a")
    b = _operand(g, int(op.Inputs(1)), out_name + "/b")
    y = g.node("Add", [a, b], out_name + "/add" if opt.FusedActivationFunction() else out_name)
    return _activation(g, y, opt.FusedActivationFunction(), out_name)


def _prelu(g: _Graph, op: tflite.Operator) -> str:
    out_name = g.tensor_name(int(op.Outputs(0)))
    slope = _nchw_constant(g.constant(int(op.Inputs(1))).astype(np.float32))  # e.g. (1, 1, C) -> (1, C, 1, 1)
    return g.node("PRelu", [g.value(int(op.Inputs(0))), g.initializer(slope, out_name + "/slope")], out_name)


def _pad(g: _Graph, op: tflite.Operator) -> str:
    x_idx = int(op.Inputs(0))
    out_name = g.tensor_name(int(op.Outputs(0)))
    paddings = g.constant(int(op.Inputs(1))).astype(np.int64)  # (rank, 2): before, after per NHWC axis
    if paddings.shape != (4, 2):
        raise UnsupportedTflite(f"PAD {out_name!r}: only 4-D inputs are supported")
    paddings = paddings[list(NHWC_TO_NCHW)]
    pads = g.initializer(np.concatenate([paddings[:, 0], paddings[:, 1]]), out_name + "/pads")
    return g.node("Pad", [g.value(x_idx), pads], out_name, mode="constant")


def _dequantize(g: _Graph, op: tflite.Operator) -> None:
    src, dst = int(op.Inputs(0)), int(op.Outputs(0))
    if g.tensor(src).Type() != tflite.TensorType.FLOAT16 or src not in g.constants:
        raise UnsupportedTflite(f"DEQUANTIZE of {g.tensor_name(src)!r}: only fp16 constants are supported")
    g.constants[dst] = g.constants[src].astype(np.float32)


_OPS = {
    "CONV_2D": lambda g, op: _conv(g, op, depthwise=False),
    "DEPTHWISE_CONV_2D": lambda g, op: _conv(g, op, depthwise=True),
    "MAX_POOL_2D": _max_pool,
    "ADD": _add,
    "PRELU": _prelu,
    "PAD": _pad,
}


def _opcode_name(model: tflite.Model, op: tflite.Operator) -> str:
    code = model.OperatorCodes(op.OpcodeIndex())
    builtin = max(int(code.BuiltinCode()), int(code.DeprecatedBuiltinCode()))
    if builtin == tflite.BuiltinOperator.CUSTOM:
        raise UnsupportedTflite(f"custom op {code.CustomCode().decode()!r}")
    return str(tflite.opcode2name(builtin))


def convert_tflite(src: Path, input_names: dict[str, str], output_names: dict[str, str],
                   flatten_outputs: bool = False) -> onnx.ModelProto:
    """Translate the TFLite model at `src`. `input_names` / `output_names` map its tensor names to the ONNX
    boundary names (every graph input and output must be named). With `flatten_outputs`, each output becomes
    `[N, -1]` after it is back in NHWC order."""
    raw = src.read_bytes()
    model = tflite.Model.GetRootAsModel(raw, 0)
    if model.SubgraphsLength() != 1:
        raise UnsupportedTflite(f"{src}: {model.SubgraphsLength()} subgraphs, expected 1")
    g = _Graph(model, model.Subgraphs(0))
    for index in range(g.subgraph.TensorsLength()):
        array = _buffer_array(model, raw, g.tensor(index))
        if array is not None:
            g.constants[index] = array

    g.used_names.update(input_names.values())
    g.used_names.update(output_names.values())  # boundary names are never taken by an inner tensor
    graph_inputs = []
    for index in (int(i) for i in g.subgraph.InputsAsNumpy()):
        tensor_name = g.tensor_name(index)
        if tensor_name not in input_names:
            raise UnsupportedTflite(f"input {tensor_name!r} has no name in input_names")
        if g.tensor(index).Type() != tflite.TensorType.FLOAT32:
            raise UnsupportedTflite(f"input {tensor_name!r} is not float32")
        name = input_names[tensor_name]
        shape = g.shape(index)
        if len(shape) != 4:
            raise UnsupportedTflite(f"input {tensor_name!r} has shape {shape}: only NHWC images are supported")
        graph_inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [BATCH_DIM, *shape[1:]]))
        g.values[index] = g.node("Transpose", [name], name + "/nchw", perm=list(NHWC_TO_NCHW))

    for k in range(g.subgraph.OperatorsLength()):
        op = g.subgraph.Operators(k)
        kind = _opcode_name(model, op)
        if kind == "DEQUANTIZE":
            _dequantize(g, op)
            continue
        if kind not in _OPS:
            raise UnsupportedTflite(f"op {kind} (operator {k})")
        out = int(op.Outputs(0))
        if g.tensor(out).Type() != tflite.TensorType.FLOAT32 or len(g.shape(out)) != 4:
            raise UnsupportedTflite(f"{kind} {g.tensor_name(out)!r}: only 4-D float32 activations are supported")
        g.values[out] = _OPS[kind](g, op)

    graph_outputs = []
    for index in (int(i) for i in g.subgraph.OutputsAsNumpy()):
        tensor_name = g.tensor_name(index)
        if tensor_name not in output_names:
            raise UnsupportedTflite(f"output {tensor_name!r} has no name in output_names")
        name = output_names[tensor_name]
        shape = g.shape(index)
        y = g.node("Transpose", [g.value(index)], name + "/nhwc", perm=list(NCHW_TO_NHWC))
        if flatten_outputs:
            dims: list[int | str] = [BATCH_DIM, int(np.prod(shape[1:], dtype=np.int64))]
            g.nodes.append(helper.make_node("Flatten", [y], [name], name=name, axis=1))
        else:
            dims = [BATCH_DIM, *shape[1:]]
            g.nodes.append(helper.make_node("Identity", [y], [name], name=name))
        graph_outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, dims))

    graph = helper.make_graph(g.nodes, src.stem, graph_inputs, graph_outputs, g.initializers)
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                   producer_name="anyface.tflite_to_onnx", ir_version=IR_VERSION)
    onnx.checker.check_model(onnx_model, full_check=True)
    return onnx_model

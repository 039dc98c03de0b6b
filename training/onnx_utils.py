"""ONNX export with a dynamic batch and the checker; CPU sessions for the equality checks.

Sessions themselves are built by `service.sessions.onnxruntime`, the same code the service runs; `session()` and
`run()` here pin them to the CPU (reproducible comparisons against PyTorch) and one thread by default.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from service.models.contract import INPUT_TENSOR, OUTPUT_TENSOR
from service.sessions import onnxruntime as ort_sessions

OPSET = 17


def export_onnx(
    model: nn.Module,
    path: Path,
    input_shape: tuple[int, ...],
    input_name: str = INPUT_TENSOR,
    output_name: str = OUTPUT_TENSOR,
) -> Path:
    """Export `model` (eval mode) for an input of `input_shape` (batch excluded), batch dimension dynamic."""
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    dummy = torch.zeros(2, *input_shape)
    tmp = path.with_suffix(".tmp.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (dummy,),
            str(tmp),
            input_names=[input_name],
            output_names=[output_name],
            dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    proto = onnx.load(str(tmp))
    onnx.checker.check_model(proto, full_check=True)
    tmp.replace(path)
    return path


def session(path: Path, threads: int = 1) -> ort.InferenceSession:
    """A CPU-only ONNX Runtime session with `threads` intra-op threads (0 = every core)."""
    return ort_sessions.create_session(path, threads, device="cpu")


def run(sess: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    """The output of a single-input single-output model on `x` (float32)."""
    return ort_sessions.run(sess, x)


def torch_run(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()

"""ONNX Runtime sessions: the one place that picks execution providers, thread counts and graph optimisation."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime as ort

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

Device = Literal["auto", "cpu"]


def providers(device: Device = "auto") -> list[str]:
    """`auto`: CUDA when onnxruntime-gpu is installed and sees a GPU, then CPU; `cpu`: CPU only."""
    if device == "cpu":
        return [CPU]
    if device != "auto":
        raise ValueError(f"unknown ONNX Runtime device {device!r}")
    available = ort.get_available_providers()
    return [p for p in (CUDA, CPU) if p in available]


def create_session(path: Path | str, threads: int = 0, device: Device = "auto") -> ort.InferenceSession:
    """A session for the ONNX file at `path`: `threads` intra-op threads (0 = ONNX Runtime's default, every core),
    one inter-op thread, every graph optimisation."""
    if threads < 0:
        raise ValueError(f"threads must be >= 0, not {threads}")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Worker threads sleep between runs instead of spinning: the face path runs several small sessions (detector,
    # landmarks, embedder) one after another, and spinning pools of one starve the next (measured: docs/landmarks.md).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=options, providers=providers(device))


def run(session: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    """Run a single-input single-output model on `x` (as contiguous float32); its output."""
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ValueError(f"run() takes single-input models; this one has {[i.name for i in inputs]}")
    output = session.get_outputs()[0].name
    return session.run([output], {inputs[0].name: np.ascontiguousarray(x, dtype=np.float32)})[0]

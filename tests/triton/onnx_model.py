"""Triton Python-backend model that serves one ONNX file with ONNX Runtime (CPU test stand-in for the onnxruntime
backend, which the CPU `tritonserver` of the nvidia-pytriton wheel does not ship).

It runs inside the Python backend stub of the test venv (`.venv-triton`), not in the service's venv.
Config `parameters` (all optional):
  ONNX_FILE      file name in the version directory (default `model.onnx`)
  ONNX_INPUTS    comma-separated ONNX input names matching the config inputs in order (default: the config names)
  ONNX_OUTPUTS   same for outputs
  ORT_THREADS    intra-op threads of the session (default 1)
All requests of a dynamic batch are concatenated into one session run, as the onnxruntime backend does.
"""

from __future__ import annotations

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


def _param(config: dict, key: str, default: str = "") -> str:
    value = config.get("parameters", {}).get(key, {}).get("string_value", "")
    return value or default


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        self.inputs = [t["name"] for t in config["input"]]
        self.outputs = [t["name"] for t in config["output"]]
        onnx_inputs = _param(config, "ONNX_INPUTS")
        onnx_outputs = _param(config, "ONNX_OUTPUTS")
        self.onnx_inputs = onnx_inputs.split(",") if onnx_inputs else list(self.inputs)
        self.onnx_outputs = onnx_outputs.split(",") if onnx_outputs else list(self.outputs)
        path = os.path.join(args["model_repository"], args["model_version"], _param(config, "ONNX_FILE", "model.onnx"))
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(_param(config, "ORT_THREADS", "1"))
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        # the onnxruntime backend refuses a config whose tensor names the model lacks; so does this stand-in
        have_in = {i.name for i in self.session.get_inputs()}
        have_out = {o.name for o in self.session.get_outputs()}
        missing = [n for n in self.onnx_inputs if n not in have_in]
        missing += [n for n in self.onnx_outputs if n not in have_out]
        if missing or len(self.onnx_inputs) != len(self.inputs) or len(self.onnx_outputs) != len(self.outputs):
            raise pb_utils.TritonModelException(
                f"{args['model_name']}: tensors {missing} not in {path} (inputs {sorted(have_in)}, outputs "
                f"{sorted(have_out)})")

    def execute(self, requests: list) -> list:
        feeds: dict[str, np.ndarray] = {}
        sizes = []
        for cfg_name, onnx_name in zip(self.inputs, self.onnx_inputs, strict=True):
            parts = [pb_utils.get_input_tensor_by_name(r, cfg_name).as_numpy() for r in requests]
            feeds[onnx_name] = np.concatenate(parts) if len(parts) > 1 else parts[0]
            sizes = [len(p) for p in parts]
        results = self.session.run(self.onnx_outputs, feeds)
        responses = []
        offset = 0
        for size in sizes:
            tensors = [pb_utils.Tensor(name, np.ascontiguousarray(out[offset:offset + size]))
                       for name, out in zip(self.outputs, results, strict=True)]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            offset += size
        return responses

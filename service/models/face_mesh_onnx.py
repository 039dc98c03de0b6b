"""Build `face_mesh.onnx` from MediaPipe's `face_landmark.tflite` with the pure-Python converter.

Owns the face mesh's ONNX contract: input `image` float32 [N, 192, 192, 3] (NHWC and RGB as the TFLite model,
(pixel - mean) / std from the manifest entry), outputs `landmarks` [N, 1404] (468 x (x, y, z) in the 192 x 192
crop's pixels) and `presence` [N, 1] (the face-presence logit as the model gives it).
"""

from __future__ import annotations

from pathlib import Path

import onnx

from service.models.tflite_to_onnx import convert_tflite

INPUT_SIZE = 192
NUM_LANDMARKS = 468
INPUT_NAMES = {"input_1": "image"}
OUTPUT_NAMES = {"conv2d_21": "landmarks", "conv2d_31": "presence"}


def build_face_mesh(src: Path, dst: Path) -> None:
    """Write the face mesh ONNX file `dst` converted from the TFLite model at `src`."""
    model = convert_tflite(src, INPUT_NAMES, OUTPUT_NAMES, flatten_outputs=True)
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dst))

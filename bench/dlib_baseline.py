"""The `face_recognition` library's pipeline, rebuilt on its own parts: dlib's HOG detector (upsampled once, the
library default), the 5-point shape predictor and the ResNet embedder from `face_recognition_models`, compared by
Euclidean distance. The `face_recognition` wrapper itself pins a source build of dlib; `dlib-bin` is the same
library prebuilt, so we call dlib directly exactly as the wrapper does."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import dlib
import numpy as np


def _models_dir() -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("face_recognition_models is not installed: `pip install .[bench]`")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


class DlibFaceRecognition:
    name = "face_recognition (dlib HOG + ResNet)"

    def __init__(self, upsample: int = 1) -> None:
        models = _models_dir()
        self.detector = dlib.get_frontal_face_detector()
        self.shapes = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
        self.encoder = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))
        self.upsample = upsample

    def embed(self, rgb: np.ndarray) -> np.ndarray | None:
        """The 128-d descriptor of the largest detected face, or None."""
        rects = self.detector(rgb, self.upsample)
        if not rects:
            return None
        rect = max(rects, key=lambda r: r.width() * r.height())
        shape = self.shapes(rgb, rect)
        return np.asarray(self.encoder.compute_face_descriptor(rgb, shape, 1), dtype=np.float32)

    @staticmethod
    def similarity(a: np.ndarray, b: np.ndarray) -> float:
        """Negative Euclidean distance (the library matches at distance <= 0.6)."""
        return -float(np.linalg.norm(a - b))

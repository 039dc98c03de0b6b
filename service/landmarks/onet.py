"""MTCNN's output network (O-Net, MIT): 5 points from a 48 x 48 square crop around the detector's face box.

The model file is `mtcnn_onet.onnx`, built from the published weights by the fetch step; it takes RGB crops
normalised as (pixel - 127.5) / 128 and returns the points in crop units [0, 1] (x of the 5 points, then y).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from service.detection import DetectedFace
from service.imaging.roi import Roi, box_roi, eye_angle
from service.landmarks.base import LandmarkModel
from service.models.manifest import ModelEntry
from service.sessions.onnxruntime import create_session

INPUT_SIZE = 48


class OnetLandmarks(LandmarkModel):
    """O-Net on the square around the face box, `scale` times its larger side (turned upright by the detector's
    eye line when `upright`)."""

    name = "onet"

    def __init__(self, model_path: Path, entry: ModelEntry, threads: int = 0, scale: float = 1.0,
                 upright: bool = True) -> None:
        self.session = create_session(model_path, threads)
        self.mean, self.std = entry.mean, entry.std
        self.scale, self.upright = scale, upright

    def roi(self, face: DetectedFace) -> Roi:
        return box_roi(face.box, self.scale, eye_angle(face.landmarks) if self.upright else 0.0)

    def points(self, rgb: np.ndarray, faces: list[DetectedFace]) -> np.ndarray:
        if not faces:
            return np.zeros((0, 5, 2))
        rois = [self.roi(f) for f in faces]
        crops = np.stack([r.crop(rgb, INPUT_SIZE) for r in rois]).astype(np.float32)
        batch = ((crops - self.mean) / self.std).transpose(0, 3, 1, 2)
        (raw,) = self.session.run(["points"], {"image": np.ascontiguousarray(batch)})
        in_crop = np.stack([raw[:, :5], raw[:, 5:]], axis=-1) * INPUT_SIZE  # n x 5 x 2, crop pixels
        return np.stack([r.to_image(p, INPUT_SIZE) for r, p in zip(rois, in_crop, strict=True)])

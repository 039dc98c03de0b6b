"""What a landmark model is: it places the 5 alignment points (eyes, nose tip, mouth corners, image-left first)
of detected faces more precisely than the detector does, from the image itself."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from service.detection import DetectedFace


class LandmarkModel(ABC):
    """Places 5 points on each detected face; implementations are safe to call from several threads."""

    name: str

    @abstractmethod
    def points(self, rgb: np.ndarray, faces: list[DetectedFace]) -> np.ndarray:
        """The 5 points of each face (n x 5 x 2, image pixels), from the image and each face's detection."""


class DetectorLandmarks(LandmarkModel):
    """The detector's own 5 points, as they are."""

    name = "detector"

    def points(self, rgb: np.ndarray, faces: list[DetectedFace]) -> np.ndarray:
        return np.array([f.landmarks for f in faces], dtype=np.float64).reshape(len(faces), 5, 2)

"""What a detector returns, and the shared pre/post-processing (downscaling, NMS)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class DetectedFace:
    """A face in source-image pixels: box (x1, y1, x2, y2), landmarks (5 x 2: eyes, nose, mouth corners)."""

    box: np.ndarray
    landmarks: np.ndarray
    score: float

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])

    @property
    def size(self) -> float:
        """The resolution indicator: the larger side of the box in source pixels."""
        return max(self.width, self.height)


class Detector(ABC):
    """Finds faces in an RGB image; implementations must be safe to call from several threads."""

    name: str

    def __init__(self, score_threshold: float, max_side: int) -> None:
        self.score_threshold = score_threshold
        self.max_side = max_side

    def detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        """All faces above the score threshold, in source coordinates, best score first."""
        height, width = rgb.shape[:2]
        scale = min(1.0, self.max_side / max(height, width))
        image = rgb
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            image = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        faces = self._detect(image)
        if scale < 1.0:
            faces = [DetectedFace(f.box / scale, f.landmarks / scale, f.score) for f in faces]
        return sorted(faces, key=lambda f: -f.score)

    @abstractmethod
    def _detect(self, rgb: np.ndarray) -> list[DetectedFace]: ...


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[int]:
    """Indices of the boxes kept by greedy non-maximum suppression."""
    rects = [[float(x1), float(y1), float(x2 - x1), float(y2 - y1)] for x1, y1, x2, y2 in boxes]
    keep = cv2.dnn.NMSBoxes(rects, scores.astype(float).tolist(), 0.0, iou_threshold)
    return [int(i) for i in np.array(keep).reshape(-1)]

"""The landmark stage between detection and alignment: the 5 points of each face from one or more landmark
models, averaged, and how much the models agree (a quality signal)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from service.detection import DetectedFace
from service.landmarks.base import LandmarkModel


@dataclass(frozen=True)
class Refined:
    """A face with the points that align it, and the disagreement of the models that placed them: the mean
    distance of their points from the average, over the distance between the eyes (0 with one model)."""

    face: DetectedFace
    spread: float


def spread(points: np.ndarray) -> float:
    """Disagreement of m sets of 5 points (m x 5 x 2): mean distance to their mean over the inter-ocular distance."""
    mean = points.mean(axis=0)
    iod = max(float(np.linalg.norm(mean[1] - mean[0])), 1e-6)
    return float(np.linalg.norm(points - mean, axis=-1).mean() / iod)


class LandmarkStage:
    """Replaces each face's 5 points by the average of what `models` place (the detector's own when empty)."""

    def __init__(self, models: list[LandmarkModel]) -> None:
        self.models = models
        self.name = "+".join(m.name for m in models) or "detector"

    def refine(self, rgb: np.ndarray, faces: list[DetectedFace]) -> list[Refined]:
        if not self.models or not faces:
            return [Refined(f, 0.0) for f in faces]
        placed = np.stack([m.points(rgb, faces) for m in self.models], axis=1)  # n x m x 5 x 2
        return [Refined(replace(f, landmarks=p.mean(axis=0)), spread(p)) for f, p in zip(faces, placed, strict=True)]

"""YuNet (OpenCV Zoo, MIT) through OpenCV's `FaceDetectorYN`: fast, small, the default detector."""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np

from service.detection.base import DetectedFace, Detector


class YuNetDetector(Detector):
    name = "yunet"

    def __init__(self, model_path: Path, score_threshold: float, max_side: int, nms_threshold: float = 0.3):
        super().__init__(score_threshold, max_side)
        self.model_path = str(model_path)
        self.nms_threshold = nms_threshold
        self._local = threading.local()  # FaceDetectorYN keeps per-call state: one instance per thread
        self._create()  # fail at start-up, not on the first request

    def _create(self) -> cv2.FaceDetectorYN:
        detector = cv2.FaceDetectorYN.create(
            self.model_path, "", (320, 320), self.score_threshold, self.nms_threshold, 5000
        )
        self._local.detector = detector
        return detector

    def _detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        detector = getattr(self._local, "detector", None) or self._create()
        height, width = rgb.shape[:2]
        detector.setInputSize((width, height))
        _, rows = detector.detect(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        if rows is None:
            return []
        faces = []
        for row in rows:
            x, y, w, h = row[:4]
            faces.append(
                DetectedFace(
                    box=np.array([x, y, x + w, y + h], dtype=np.float32),
                    landmarks=row[4:14].reshape(5, 2).astype(np.float32),
                    score=float(row[14]),
                )
            )
        return faces

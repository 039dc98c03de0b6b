"""YuNet (OpenCV Zoo, MIT) through OpenCV's `FaceDetectorYN`: fast, small, the default detector.

A `FaceDetectorYN` keeps per-call state (its input size and buffers, about 120 MiB at 1280 px), so concurrent
calls need separate instances. They come from a small pool shared by all threads, at most `instances` of them:
one per thread would hold that memory for every thread of the server's pool (up to 40), for as long as the thread
lives (docs/memory.md).
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

from service.detection.base import DetectedFace, Detector


class YuNetDetector(Detector):
    name = "yunet"

    def __init__(self, model_path: Path, score_threshold: float, max_side: int, nms_threshold: float = 0.3,
                 instances: int = 0):
        super().__init__(score_threshold, max_side)
        self.model_path = str(model_path)
        self.nms_threshold = nms_threshold
        self.instances = instances or os.cpu_count() or 1
        self._idle: queue.LifoQueue[cv2.FaceDetectorYN] = queue.LifoQueue()
        self._lock = threading.Lock()
        self.created = 1
        self._idle.put(self._new())  # fail at start-up, not on the first request

    def _new(self) -> cv2.FaceDetectorYN:
        return cv2.FaceDetectorYN.create(self.model_path, "", (320, 320), self.score_threshold, self.nms_threshold,
                                         5000)

    @contextmanager
    def _instance(self) -> Iterator[cv2.FaceDetectorYN]:
        """An idle instance, a new one while fewer than `instances` exist, else the next one freed."""
        try:
            detector = self._idle.get_nowait()
        except queue.Empty:
            with self._lock:
                fresh = self.created < self.instances
                if fresh:
                    self.created += 1
            detector = self._new() if fresh else self._idle.get()
        try:
            yield detector
        finally:
            self._idle.put(detector)

    def _detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        height, width = rgb.shape[:2]
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        with self._instance() as detector:
            detector.setInputSize((width, height))
            _, rows = detector.detect(bgr)
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

"""SCRFD-2.5G with keypoints (InsightFace) on ONNX Runtime: more accurate on hard faces, non-commercial licence.

Owns SCRFD's letterboxing, anchor decoding and NMS; the session comes from `service.sessions.onnxruntime` and the
input normalisation `(pixel - mean) / std` from the model's manifest entry.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from service.detection.base import DetectedFace, Detector, nms
from service.sessions import onnxruntime as ort_sessions

STRIDES = (8, 16, 32)
ANCHORS_PER_CELL = 2


class ScrfdDetector(Detector):
    name = "scrfd"

    def __init__(self, model_path: Path, score_threshold: float, max_side: int, mean: float, std: float,
                 input_size: int = 640, nms_threshold: float = 0.4, threads: int = 0):
        super().__init__(score_threshold, max_side)
        if not std:
            raise ValueError("SCRFD input std must be non-zero (see the manifest entry)")
        self.session = ort_sessions.create_session(model_path, threads)
        self.mean = float(mean)
        self.std = float(std)
        self.input_name = self.session.get_inputs()[0].name
        self.input_size = input_size
        self.nms_threshold = nms_threshold
        self._centers: dict[tuple[int, int, int], np.ndarray] = {}

    def _anchor_centers(self, height: int, width: int, stride: int) -> np.ndarray:
        key = (height, width, stride)
        if key not in self._centers:
            ys, xs = np.mgrid[:height, :width]
            grid = np.stack([xs, ys], axis=-1).astype(np.float32)
            centers = (grid * stride).reshape(-1, 2)
            self._centers[key] = np.repeat(centers, ANCHORS_PER_CELL, axis=0)
        return self._centers[key]

    def _square_size(self, height: int, width: int) -> int:
        """The letterbox side: the image's larger side rounded up to the stride of 32, at most `input_size`.
        Never upscaling a small photo matters: letterboxing a 250 x 250 LFW photo into 640 x 640 loses 50 of
        7,701 LFW faces and costs 0.6 points of LFW accuracy against a 256 x 256 letterbox."""
        return min(self.input_size, max(64, -(-max(height, width) // 32) * 32))

    def _detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        height, width = rgb.shape[:2]
        size = self._square_size(height, width)
        scale = size / max(height, width)
        resized = cv2.resize(rgb, (max(1, round(width * scale)), max(1, round(height * scale))))
        canvas = np.zeros((size, size, 3), dtype=np.float32)
        canvas[: resized.shape[0], : resized.shape[1]] = resized
        blob = ((canvas - self.mean) / self.std).transpose(2, 0, 1)[None]
        outputs = self.session.run(None, {self.input_name: blob})
        boxes, points, scores = [], [], []
        for i, stride in enumerate(STRIDES):
            score = outputs[i].reshape(-1)
            bbox = outputs[i + 3].reshape(-1, 4) * stride
            kps = outputs[i + 6].reshape(-1, 10) * stride
            centers = self._anchor_centers(size // stride, size // stride, stride)
            keep = score >= self.score_threshold
            if not keep.any():
                continue
            c, b, k = centers[keep], bbox[keep], kps[keep]
            boxes.append(np.concatenate([c - b[:, :2], c + b[:, 2:]], axis=1))
            points.append((np.tile(c, 5) + k).reshape(-1, 5, 2))
            scores.append(score[keep])
        if not boxes:
            return []
        all_boxes = np.concatenate(boxes) / scale
        all_points = np.concatenate(points) / scale
        all_scores = np.concatenate(scores)
        keep_idx = nms(all_boxes, all_scores, self.nms_threshold)
        return [
            DetectedFace(all_boxes[i].astype(np.float32), all_points[i].astype(np.float32), float(all_scores[i]))
            for i in keep_idx
        ]

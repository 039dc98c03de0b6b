"""Find the faces of awkward photos: tiny photos, faces that fill the whole frame, photos turned without EXIF.

`FaceSearch` wraps a `Detector` and answers what `Detector.detect` answers (faces in the given image's own pixels,
best score first) plus the rotation it had to undo. Each behaviour is one setting of `DetectionSettings`, measured
in docs/awkward_photos.md (`python -m bench.awkward_photos`):

- `det_upscale_below` (160): a photo whose longer side is below this is detected on a copy upscaled (bicubic) so
  that its longer side reaches it; the only pass for such a photo, not a second one after a miss. YuNet misses
  faces of 12-16 px and misplaces the points of those it finds; on the upscaled copy it finds them all and its
  points are 1.5-3x closer to the full-size photo's. A photo at or above it is detected as it is.
- `det_pad_fallback` (on): when nothing is found, detect again on a copy padded on every side by `PAD_FRACTION`
  of the longer side, edge pixels replicated. YuNet misses faces of about 800 px and more that fill or exceed
  the frame (a close-up); the padded copy, reduced to the detector's `max_side` like any photo, holds the face
  smaller, and it is found. Its box may reach beyond the image: it is kept as found, not clipped, so that its size
  (the resolution indicator that routes the face) is the face's, not the visible part's. Faces whose centre falls
  in the padding are dropped.
- `rotation_search` (off): detect on the photo turned back from 90, 270 and 180 degrees clockwise when the best
  face is below the detector's `ROTATION_CONFIDENT` score, and keep the orientation whose best face scores
  highest (the upright one on a tie). Not "only after a miss": YuNet finds most turned faces, with scores up to
  0.9 and its points placed as if the face were upright, so a miss is rare and the search would not run; an
  upright face scores higher than the same face turned. It costs 3 more detections on every photo without a
  face, and on the few whose best face scores below the confident score. Boxes come back as the axis-aligned box
  of their turned corners, landmarks point by point: the eye line keeps the photo's rotation and similarity
  alignment turns the face upright.

"Found" means a face at or above `min_score` (the configured score threshold unless the caller gives its own,
e.g. a request's filter): the detector itself may keep lower scores, which the caller's filter drops later, and
they must not stop the fallbacks. When no pass finds one, the first pass's faces come back (rotation 0). A photo
in which the first pass finds a face costs one detection, as before (with rotation search on: unless that face is
below the confident score).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from service.detection.base import DetectedFace, Detector
from service.settings import DetectionSettings

ROTATIONS: tuple[int, ...] = (90, 270, 180)  # clockwise degrees of the photo, in the order they are tried
# Below this best score the rotation search runs (when it is on): the detector "finds" most turned faces, with
# scores up to about this and landmarks misplaced (docs/awkward_photos.md). A detector not listed: only after a miss.
ROTATION_CONFIDENT = {"yunet": 0.9, "scrfd": 0.85}
UPSCALE_INTERPOLATION = cv2.INTER_CUBIC
PAD_FRACTION = 1.0  # of the longer side, on every side
# The padded copy is detected at most this large: the face that needs the fallback fills the photo, so it is still
# a third of this side, and the detector's buffers stay at the size of the first pass (docs/memory.md).
PAD_MAX_SIDE = 640
PadBorder = Literal["replicate", "mean"]
PAD_BORDER: PadBorder = "replicate"


@dataclass(frozen=True)
class Found:
    """The faces of a photo in its own pixels (best score first) and the rotation the search had to undo:
    0, or 90/180/270 when the photo is turned that many degrees clockwise (90: the top of the head points to
    the right) and its faces were found on the photo turned back. `passes`: detector calls it took."""

    faces: list[DetectedFace]
    rotation: int = 0
    passes: int = 1


def map_faces(faces: list[DetectedFace], matrix: np.ndarray) -> list[DetectedFace]:
    """Faces found in a transformed image, in the source image's pixels: `matrix` (2 x 3) maps a point of the
    transformed image to the source. Boxes become the axis-aligned box of their four mapped corners."""
    linear, offset = matrix[:, :2], matrix[:, 2]
    mapped = []
    for face in faces:
        x1, y1, x2, y2 = (float(v) for v in face.box)
        corners = np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]]) @ linear.T + offset
        landmarks = face.landmarks.astype(np.float64) @ linear.T + offset
        box = np.concatenate([corners.min(axis=0), corners.max(axis=0)])
        mapped.append(DetectedFace(box.astype(np.float32), landmarks.astype(np.float32), face.score))
    return mapped


def turned(rgb: np.ndarray, rotation: int) -> tuple[np.ndarray, np.ndarray]:
    """The photo turned `rotation` degrees counter-clockwise (undoing a clockwise turn of that many degrees) and
    the 2 x 3 matrix that maps a point of the turned image back to the photo (pixel i spans [i, i + 1))."""
    height, width = rgb.shape[:2]
    matrices = {
        90: [[0.0, -1.0, width], [1.0, 0.0, 0.0]],
        180: [[-1.0, 0.0, width], [0.0, -1.0, height]],
        270: [[0.0, 1.0, 0.0], [-1.0, 0.0, height]],
    }
    if rotation not in matrices:
        raise ValueError(f"rotation must be one of {sorted(matrices)}, not {rotation}")
    return np.ascontiguousarray(np.rot90(rgb, rotation // 90)), np.array(matrices[rotation])


class FaceSearch:
    """The detector, with the fallbacks for awkward photos that `detection` switches on (thread-safe: no state
    beyond its configuration). `interpolation`, `pad_fraction` and `pad_border` are the measured choices; the
    benchmark varies them."""

    def __init__(self, detector: Detector, detection: DetectionSettings, *,
                 interpolation: int = UPSCALE_INTERPOLATION, pad_fraction: float = PAD_FRACTION,
                 pad_border: PadBorder = PAD_BORDER, rotation_confident: float | None = None) -> None:
        self.detector = detector
        self.upscale_below = min(detection.det_upscale_below, detection.det_max_side)
        self.pad_fallback = detection.det_pad_fallback
        self.rotation_search = detection.rotation_search
        self.min_score = detection.score_threshold
        self.interpolation = interpolation
        self.pad_fraction = pad_fraction
        self.pad_border = pad_border
        self.rotation_confident = (ROTATION_CONFIDENT.get(detector.name, 0.0) if rotation_confident is None
                                   else rotation_confident)

    def find(self, rgb: np.ndarray, min_score: float | None = None) -> Found:
        """The faces of an RGB photo in its own pixels, best score first, and the rotation undone. A face counts
        as found from `min_score` (default: the configured score threshold) up."""
        threshold = self.min_score if min_score is None else min_score
        faces = self.detect(rgb)
        passes = 1
        if self.pad_fallback and best_score(faces) < threshold:
            passes += 1
            padded = self.detect_padded(rgb)
            if best_score(padded) >= threshold:
                faces = padded
        if not self.rotation_search or best_score(faces) >= max(threshold, self.rotation_confident):
            return Found(faces, 0, passes)
        candidates = [(best_score(faces), 0, faces)]
        for rotation in ROTATIONS:
            passes += 1
            turned_faces = self.detect_turned(rgb, rotation)
            candidates.append((best_score(turned_faces), rotation, turned_faces))
        score, rotation, found = max(candidates, key=lambda c: c[0])  # a tie keeps the earlier: upright first
        return Found(found, rotation, passes) if score >= threshold else Found(faces, 0, passes)

    def detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        """One pass: the detector on the photo, or on its upscaled copy when its longer side is below
        `det_upscale_below`; faces in the photo's pixels, best score first."""
        height, width = rgb.shape[:2]
        if max(height, width) >= self.upscale_below:
            return self.detector.detect(rgb)
        scale = self.upscale_below / max(height, width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        upscaled = cv2.resize(rgb, size, interpolation=self.interpolation)
        fx, fy = width / size[0], height / size[1]
        return map_faces(self.detector.detect(upscaled), np.array([[fx, 0.0, 0.0], [0.0, fy, 0.0]]))

    def detect_padded(self, rgb: np.ndarray) -> list[DetectedFace]:
        """One pass on the photo padded on every side by `pad_fraction` of its longer side: faces whose box
        centre is in the photo, in the photo's pixels (boxes may reach beyond it). A photo whose padded copy would
        be larger than the detector's `max_side` is reduced first, so the copy never holds more pixels than the
        detector takes."""
        height, width = rgb.shape[:2]
        scale = min(1.0, min(self.detector.max_side, PAD_MAX_SIDE) / (max(height, width) * (1 + 2 * self.pad_fraction)))
        image = rgb
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            image = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        pad = max(1, round(self.pad_fraction * max(image.shape[:2])))
        if self.pad_border == "replicate":
            padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        else:
            mean = [float(v) for v in image.reshape(-1, image.shape[2]).mean(axis=0)]
            padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=mean)
        fx, fy = width / image.shape[1], height / image.shape[0]
        faces = map_faces(self.detect(padded), np.array([[fx, 0.0, -pad * fx], [0.0, fy, -pad * fy]]))
        return [f for f in faces if _centre_inside(f, width, height)]

    def detect_turned(self, rgb: np.ndarray, rotation: int) -> list[DetectedFace]:
        """One pass on the photo turned back from `rotation` degrees clockwise, in the photo's pixels."""
        image, matrix = turned(rgb, rotation)
        return map_faces(self.detect(image), matrix)


def best_score(faces: list[DetectedFace]) -> float:
    """The best score of the faces, 0 without any."""
    return max((f.score for f in faces), default=0.0)


def _centre_inside(face: DetectedFace, width: int, height: int) -> bool:
    cx, cy = (face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2
    return bool(0 <= cx <= width and 0 <= cy <= height)


"""Square, possibly rotated regions of an image cut out at a fixed size, and the way back to image pixels.

The landmark models read such crops: O-Net a 48 x 48 square around the face box, the face mesh a 192 x 192 square
turned upright by the eye line. `Roi.crop` cuts one (pre-blurred when it shrinks the face, so the crop is not
aliased), `Roi.to_image` maps points found in the crop back into the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Roi:
    """A square of side `side` centred on (cx, cy), turned by `angle` radians (the face's eye-line angle, so the
    crop shows the face upright)."""

    cx: float
    cy: float
    side: float
    angle: float = 0.0

    def matrix(self, size: int) -> np.ndarray:
        """The 2 x 3 affine map from image pixels to the pixels of a `size x size` crop of this square."""
        scale = size / max(self.side, 1e-6)
        cos, sin = np.cos(-self.angle) * scale, np.sin(-self.angle) * scale
        rotation = np.array([[cos, -sin], [sin, cos]])
        centre = np.array([self.cx, self.cy])
        translation = np.array([size / 2.0, size / 2.0]) - rotation @ centre
        return np.hstack([rotation, translation[:, None]])

    def crop(self, image: np.ndarray, size: int) -> np.ndarray:
        """The square as a `size x size` image (border pixels repeated outside the image)."""
        matrix = self.matrix(size)
        scale = size / max(self.side, 1e-6)
        if scale < 0.5:  # warpAffine samples 4 pixels: blur first so a strong reduction is not aliased
            sigma = 0.25 / scale
            image = cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, sigmaY=sigma)
        return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    def to_image(self, points: np.ndarray, size: int) -> np.ndarray:
        """Points (n x 2) in the pixels of a `size x size` crop, in image pixels."""
        inverse = cv2.invertAffineTransform(self.matrix(size))
        pts = np.asarray(points, dtype=np.float64)
        return pts @ inverse[:, :2].T + inverse[:, 2]


def eye_angle(landmarks: np.ndarray) -> float:
    """The angle (radians) of the line from the image-left eye to the image-right eye of 5 landmarks."""
    (x0, y0), (x1, y1) = landmarks[0], landmarks[1]
    return float(np.arctan2(y1 - y0, x1 - x0))


def box_roi(box: np.ndarray, scale: float, angle: float = 0.0) -> Roi:
    """The square around a face box (x1, y1, x2, y2), on its centre: side = scale x its larger side."""
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(x2 - x1, y2 - y1)
    return Roi((x1 + x2) / 2, (y1 + y2) / 2, side * scale, angle)

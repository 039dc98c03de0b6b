"""Similarity alignment of a face to the ArcFace 5-point template, at any output resolution.

The template is defined for 112 x 112 crops; a branch of resolution r uses it scaled by r / 112, and the crop is
warped straight from the source image, never through a 112 crop.
"""

from __future__ import annotations

import cv2
import numpy as np

ARCFACE_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)


def template_for(size: int) -> np.ndarray:
    """The template in an r x r crop, in pixel-centre coordinates: area-downsampling a 112 crop to r maps the
    centre of pixel i to (i + 0.5) * r / 112 - 0.5, so a face aligned straight at r matches the downsampled
    112 crop the BTNet branches were trained on (docs/training.md, "Geometry contract")."""
    return (ARCFACE_TEMPLATE_112 + 0.5) * (size / 112.0) - 0.5


def umeyama_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (rotation, uniform scale, translation) mapping src to dst: 2 x 3."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    n = src.shape[0]
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / n
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1.0
    rotation = u @ np.diag(d) @ vt
    var_src = (src_c**2).sum() / n
    scale = float((s * d).sum() / var_src) if var_src > 0 else 1.0
    translation = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, translation[:, None]])


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """Warp the face given by 5 landmarks (x, y in source pixels) into a `size x size` crop."""
    matrix = umeyama_similarity(landmarks, template_for(size))
    # INTER_AREA is not supported by warpAffine; for strong downscaling pre-blur keeps the crop alias-free.
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    if scale < 0.5:
        sigma = 0.5 / scale * 0.5
        image = cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, sigmaY=sigma)
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

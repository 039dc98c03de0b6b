"""The quality of one face: how well it can be expected to match its own identity, in [0, 1].

The face path (`face_path.FacePath.analyze`) scores every face it finds from what it already has, cheaply (well
under a millisecond a face):

- `det_score`: the detector's score;
- `landmark_spread`: the disagreement of the landmark models over the inter-ocular distance (0 when one model
  places the points, `service.landmarks.stage.spread`);
- `sharpness`: log(1 + variance of the Laplacian) of the grey face aligned at `REFERENCE_SIZE` pixels straight
  from the image, whatever the resolution it is embedded at, so that faces of every size and branch compare (a
  tiny face is upsampled to it and comes out smooth: it holds little detail);
- `log_size`: log2 of the face box's larger side (pixels of the image the crop is cut from);
- `yaw`: the nose's distance from the line through the eye centre and the mouth centre, over the inter-ocular
  distance (0 frontal);
- `pitch`: how far the nose's position between the eye centre and the mouth centre, along that line, is from the
  alignment template's (0 as the template, larger when the head tilts up or down).

`QualityModel` maps them to a quality: a linear model on the capped, standardised features squashed by a sigmoid.
Its coefficients (`QUALITY_MODEL`) are pinned here; `python -m bench.quality` fits them on LFW pairsDevTrain (clean
photos and degraded copies: shrunk, blurred, JPEG; docs/quality.md) and prints them in this form. The model is
fitted to the similarity of genuine pairs as a sum of one term per face, each coefficient held to its expected sign
or 0, so that the quality of a face reads as about the chance that it scores at or above the calibrated verify
threshold against a typical clean photo of the same person. In the current fit sharpness carries most of it, then
the detector score and the size; the pose proxies came out at 0 (LFW's faces are mostly frontal) and the landmark
spread is 0 with one landmark model.
"""

from __future__ import annotations

import math
from dataclasses import astuple, dataclass, fields

import cv2
import numpy as np

from service.detection import DetectedFace
from service.errors import LowQuality
from service.imaging.align import ARCFACE_TEMPLATE_112, template_for, umeyama_similarity

DECIMALS = 4  # answers carry the quality rounded to this, and `min_quality` is compared with that value
REFERENCE_SIZE = 48  # pixels: the side of the aligned grey crop whose sharpness is measured
AREA_FACTOR = 4  # a large face is averaged over 4 x 4 blocks (after a bilinear reduction to that)
Z_CLIP = 4.0  # standardised features are clipped to +-Z_CLIP: no extrapolation far beyond the fitted data

_EYES = ARCFACE_TEMPLATE_112[:2].mean(axis=0)
_MOUTH = ARCFACE_TEMPLATE_112[3:].mean(axis=0)
# Where the template's nose lies between the eye centre (0) and the mouth centre (1): about 0.495.
TEMPLATE_NOSE_POSITION = float(np.dot(ARCFACE_TEMPLATE_112[2] - _EYES, _MOUTH - _EYES) / np.sum((_MOUTH - _EYES) ** 2))


@dataclass(frozen=True)
class QualityFeatures:
    """The measurements of one face that its quality is computed from (see the module docstring)."""

    det_score: float
    landmark_spread: float
    sharpness: float
    log_size: float
    yaw: float
    pitch: float

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def vector(self) -> np.ndarray:
        return np.array(astuple(self), dtype=np.float64)


@dataclass(frozen=True)
class QualityModel:
    """quality = sigmoid(bias + sum_i weights[i] * clip((min(x[i], cap[i]) - mean[i]) / scale[i], -Z_CLIP, Z_CLIP)),
    the features x in `QualityFeatures` order. A cap is where more of a feature stops helping (a face sharper than
    most clean photos, or larger than the fit's shrunk faces, counts as that sharp or that large)."""

    cap: tuple[float, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float

    def standardised(self, x: np.ndarray) -> np.ndarray:
        """The capped, standardised and clipped features (n x k, or one of k)."""
        capped = np.minimum(np.asarray(x, dtype=np.float64), np.array(self.cap))
        return np.clip((capped - np.array(self.mean)) / np.array(self.scale), -Z_CLIP, Z_CLIP)

    def logit(self, x: np.ndarray) -> np.ndarray:
        """The model's logit for feature vectors (n x k, or one of k)."""
        return np.asarray(self.bias + self.standardised(x) @ np.array(self.weights))

    def quality(self, features: QualityFeatures) -> float:
        return float(sigmoid(self.logit(features.vector())))


def sigmoid(x: np.ndarray | float) -> np.ndarray:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64))))  # = 1 / (1 + e^-x), stable


# Fitted by `python -m bench.quality` (docs/quality.md); re-run it when the face path changes (detector, landmarks).
QUALITY_MODEL = QualityModel(
    cap=(math.inf, math.inf, 6.10459, 6, math.inf, math.inf),
    mean=(0.900718, 0, 5.52861, 5.57806, 0.112995, 0.083684),
    scale=(0.053045, 1, 0.81328, 0.634857, 0.097269, 0.05985),
    weights=(0.392999, 0, 1.51826, 0.184585, 0, 0),
    bias=1.34482,
)


def reference_crop(image: np.ndarray, landmarks: np.ndarray, size: int = REFERENCE_SIZE) -> np.ndarray:
    """The face aligned to the 5-point template at `size` x `size`, in grey (float32). A face more than twice as
    large as the crop is first reduced by an integer factor in a window around it (area averaging over the last
    `AREA_FACTOR` x `AREA_FACTOR` blocks), so that the crop is hardly aliased and neither the cost nor the memory
    grows with the image or the face."""
    points = np.asarray(landmarks, dtype=np.float64)
    matrix = umeyama_similarity(points, template_for(size))
    factor = int(1.0 / max(math.sqrt(abs(float(np.linalg.det(matrix[:, :2])))), 1e-6))
    if factor >= 2:
        corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], dtype=np.float64)
        inverse = cv2.invertAffineTransform(matrix)
        region = corners @ inverse[:, :2].T + inverse[:, 2]
        height, width = image.shape[:2]
        low, high = region.min(axis=0), region.max(axis=0)
        x0, y0 = max(0, math.floor(low[0]) - factor), max(0, math.floor(low[1]) - factor)
        x1, y1 = min(width, math.ceil(high[0]) + factor), min(height, math.ceil(high[1]) + factor)
        x1, y1 = x0 + (x1 - x0) // factor * factor, y0 + (y1 - y0) // factor * factor  # whole blocks
        if x1 > x0 and y1 > y0:
            shape = ((x1 - x0) // factor, (y1 - y0) // factor)
            window = image[y0:y1, x0:x1]
            if factor > AREA_FACTOR:  # bilinear to AREA_FACTOR x the size first: reads a few pixels, not all
                window = cv2.resize(window, (shape[0] * AREA_FACTOR, shape[1] * AREA_FACTOR),
                                    interpolation=cv2.INTER_LINEAR)
            image = cv2.resize(window, shape, interpolation=cv2.INTER_AREA)
            # pixel centres: x in the window is factor * x' + (factor - 1) / 2 in the reduced one's x'
            origin = np.array([x0 + (factor - 1) / 2, y0 + (factor - 1) / 2])
            matrix = np.hstack([matrix[:, :2] * factor, (matrix[:, :2] @ origin + matrix[:, 2])[:, None]])
    crop = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY) if crop.ndim == 3 else crop
    return grey.astype(np.float32)


def sharpness(grey: np.ndarray) -> float:
    """log(1 + variance of the 3 x 3 Laplacian) of a grey image in 0..255."""
    return float(np.log1p(cv2.Laplacian(grey.astype(np.float32), cv2.CV_32F).var()))


def pose(landmarks: np.ndarray) -> tuple[float, float]:
    """(yaw, pitch) proxies from 5 points (left eye, right eye, nose, left and right mouth corner): the nose's
    distance from the eye-centre-to-mouth-centre line and its position along it, against the template's, both
    over the inter-ocular distance. Invariant to the face's position, scale and in-plane rotation."""
    p = np.asarray(landmarks, dtype=np.float64)
    eyes, mouth, nose = p[:2].mean(axis=0), p[3:].mean(axis=0), p[2]
    iod = max(float(np.linalg.norm(p[1] - p[0])), 1e-6)
    axis = mouth - eyes
    length = max(float(np.linalg.norm(axis)), 1e-6)
    unit = axis / length
    offset = nose - eyes
    across = abs(float(offset[0] * unit[1] - offset[1] * unit[0]))
    along = float(offset @ unit)
    return across / iod, abs(along / length - TEMPLATE_NOSE_POSITION) * length / iod


def features(image: np.ndarray, face: DetectedFace, landmark_spread: float = 0.0) -> QualityFeatures:
    """The quality features of a face found in `image` (its box and landmarks in that image's pixels)."""
    yaw, pitch = pose(face.landmarks)
    return QualityFeatures(
        det_score=float(face.score),
        landmark_spread=float(landmark_spread),
        sharpness=sharpness(reference_crop(image, face.landmarks)),
        log_size=math.log2(max(face.size, 1.0)),
        yaw=yaw,
        pitch=pitch,
    )


def face_quality(image: np.ndarray, face: DetectedFace, landmark_spread: float = 0.0,
                 model: QualityModel = QUALITY_MODEL) -> float:
    """The quality in [0, 1] of a face found in `image`."""
    return model.quality(features(image, face, landmark_spread))


def shown(quality: float) -> float:
    """The quality as answers carry it (and as `min_quality` is compared with)."""
    return round(float(quality), DECIMALS)


def require_quality(quality: float, minimum: float, what: str) -> None:
    """`LowQuality` naming the face (`what`), its quality and the limit, when the quality is below `minimum`."""
    if shown(quality) < minimum:
        raise LowQuality(f"{what}: face quality {shown(quality)} is below min_quality {minimum:g}; send a sharper, "
                         "larger, more frontal photo, or a lower min_quality")

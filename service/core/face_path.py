"""The face path of one photo, without HTTP and without asyncio: decode -> face search (the detector, with the
fallbacks for awkward photos) -> filter -> rank -> landmarks -> route -> align -> quality.

The service (through `pipeline.FacePipeline`), the benchmarks, the threshold calibration and the training crops
all call this one path, so they see the same faces: the same detector settings, the same filter and the same rule
for the main face of a photo (`rank_by_prominence`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.core.quality import face_quality
from service.detection import DetectedFace, Detector
from service.detection.search import FaceSearch
from service.embedding.router import Rule, route
from service.errors import NoFace
from service.imaging.align import align_face
from service.imaging.decode import DecodedImage, decode
from service.landmarks import LandmarkStage
from service.metrics import stage
from service.settings import DecodeLimits, DetectionSettings

# A face search that only runs the detector: for a `FacePath` built around a bare detector.
PLAIN_SEARCH = DetectionSettings(det_upscale_below=0, det_pad_fallback=False, rotation_search=False)


def prominence(face: DetectedFace, width: int, height: int) -> float:
    """How much a face is "the" face of a photo: its box area inside the image, less twice the squared distance
    of its centre from the image centre (InsightFace's ranking). A large face cut off at the border, typical of
    bystanders, ranks below the centred subject."""
    x1, y1, x2, y2 = (float(v) for v in face.box)
    area = max(0.0, min(x2, width) - max(x1, 0.0)) * max(0.0, min(y2, height) - max(y1, 0.0))
    dx, dy = (x1 + x2) / 2 - width / 2, (y1 + y2) / 2 - height / 2
    return area - 2.0 * (dx * dx + dy * dy)


def rank_by_prominence(faces: list[DetectedFace], width: int, height: int) -> list[DetectedFace]:
    """The faces, the main face of the photo first (most prominent), then the others by prominence."""
    return sorted(faces, key=lambda f: -prominence(f, width, height))


@dataclass(frozen=True)
class FaceFilter:
    """Which detections count as faces for a request."""

    min_face_size: float
    score_threshold: float
    max_faces: int

    @classmethod
    def of(cls, detection: DetectionSettings, min_face_size: float | None = None, score: float | None = None,
           max_faces: int | None = None) -> FaceFilter:
        """The configured filter, narrowed by a request's own values where it gives them."""
        return cls(
            min_face_size=detection.min_face_size if min_face_size is None else min_face_size,
            score_threshold=detection.score_threshold if score is None else score,
            max_faces=detection.max_faces if max_faces is None else min(detection.max_faces, max_faces),
        )

    def keep(self, faces: list[DetectedFace]) -> list[DetectedFace]:
        return [f for f in faces if f.score >= self.score_threshold and f.size >= self.min_face_size]


@dataclass(frozen=True)
class FoundFace:
    """A face that passed the filter, in the photo's own pixels and in the decoded image's pixels, with the
    disagreement of the landmark models that placed its points (`service.landmarks.stage.Refined.spread`)."""

    in_photo: DetectedFace
    in_image: DetectedFace
    spread: float


@dataclass
class AnalyzedFace:
    face: DetectedFace
    resolution: int
    branch: str
    embedding: np.ndarray | None = None
    landmark_spread: float = 0.0
    quality: float = 0.0  # `service.core.quality`: in [0, 1], higher matches its own identity better


@dataclass
class AnalyzedImage:
    width: int
    height: int
    faces: list[AnalyzedFace]  # the main face first (`rank_by_prominence`)
    rotation: int = 0  # clockwise degrees the photo was turned by, found by the rotation search (0 when upright)
    thumbnail: np.ndarray | None = None  # the main face aligned at the thumbnail size, when asked for (RGB)

    def main_face(self, field: str) -> AnalyzedFace:
        """The most prominent face of the photo; `NoFace` naming the upload field when there is none."""
        if not self.faces:
            raise NoFace(f"{field}: no face found in the image")
        return self.faces[0]


class FacePath:
    """Decode, find, filter, rank, place the landmarks of, route, align and score the faces of one photo
    (thread-safe, synchronous)."""

    def __init__(self, detector: Detector | FaceSearch, limits: DecodeLimits, resolutions: list[int],
                 model_names: dict[int, str], rule: Rule = "ceil", landmarks: LandmarkStage | None = None) -> None:
        self.search = detector if isinstance(detector, FaceSearch) else FaceSearch(detector, PLAIN_SEARCH)
        self.landmarks = landmarks or LandmarkStage([])
        self.limits = limits
        self.resolutions = sorted(resolutions)
        self.model_names = model_names
        self.rule = rule

    def route(self, face: DetectedFace) -> int:
        """The embedder resolution for a face of this size (BTNet's resolution indicator)."""
        return route(face.size, self.resolutions, self.rule)

    def _decode_and_find(self, data: bytes, field: str, flt: FaceFilter
                         ) -> tuple[DecodedImage, list[FoundFace], int]:
        """The decoded photo (reduced when it is larger than `max_decode_side`) and its faces that pass the
        filter, the main face first, each in the photo's own pixels and in the decoded image's pixels: the
        filter and the ranking see the photo's pixels, the landmark models and the crops the decoded image; and
        the rotation (clockwise degrees) the face search undid to find them."""
        with stage("decode"):
            decoded = decode(data, self.limits, field)
        with stage("detect"):
            found = self.search.find(decoded.pixels, flt.score_threshold)
        detections = found.faces
        sx, sy = decoded.scale
        in_photo = [rescaled(f, 1 / sx, 1 / sy) for f in detections] if decoded.reduced else detections
        in_image = {id(p): f for p, f in zip(in_photo, detections, strict=True)}
        ranked = rank_by_prominence(flt.keep(in_photo), decoded.width, decoded.height)[: flt.max_faces]
        if not self.landmarks.models or not ranked:
            return decoded, [FoundFace(f, in_image[id(f)], 0.0) for f in ranked], found.rotation
        with stage("landmarks"):
            refined = self.landmarks.refine(decoded.pixels, [in_image[id(f)] for f in ranked])
        return decoded, [FoundFace(rescaled(r.face, 1 / sx, 1 / sy) if decoded.reduced else r.face, r.face, r.spread)
                         for r in refined], found.rotation

    def find_faces(self, data: bytes, field: str, flt: FaceFilter) -> tuple[np.ndarray, list[DetectedFace]]:
        """The decoded RGB image and its faces that pass the filter, the main face first, in that image's pixels
        (which are the photo's unless it is larger than `max_decode_side`)."""
        decoded, kept, _ = self._decode_and_find(data, field, flt)
        return decoded.pixels, [f.in_image for f in kept]

    def analyze(self, data: bytes, field: str, flt: FaceFilter, align: bool = True, thumbnail: int | None = None
                ) -> tuple[AnalyzedImage, list[np.ndarray]]:
        """Every face of one photo in the photo's own pixels, routed to its resolution by its size in the image
        its crop is cut from, (with `align`) its aligned crop, and (with `thumbnail`) the main face aligned at
        that size whatever the face's own (a picture for people, not for the embedder)."""
        decoded, kept, rotation = self._decode_and_find(data, field, flt)
        faces = [AnalyzedFace(f.in_photo, res, self.model_names[res], landmark_spread=f.spread)
                 for f in kept for res in [self.route(f.in_image)]]
        with stage("quality"):
            for face, f in zip(faces, kept, strict=True):
                face.quality = face_quality(decoded.pixels, f.in_image, f.spread)
        crops: list[np.ndarray] = []
        if align:
            with stage("align"):
                crops = [align_face(decoded.pixels, f.in_image.landmarks, face.resolution)
                         for face, f in zip(faces, kept, strict=True)]
        result = AnalyzedImage(decoded.width, decoded.height, faces, rotation)
        if thumbnail is not None and kept:
            result.thumbnail = align_face(decoded.pixels, kept[0].in_image.landmarks, thumbnail)
        return result, crops

    def main_face_crop(self, data: bytes, flt: FaceFilter, resolution: int, field: str = "image"
                       ) -> np.ndarray | None:
        """The main face of a photo aligned at `resolution` (whatever its size), or None without a face: what
        the offline tools (benchmarks, calibration, training crops) embed."""
        image, kept = self.find_faces(data, field, flt)
        if not kept:
            return None
        return align_face(image, kept[0].landmarks, resolution)


def rescaled(face: DetectedFace, fx: float, fy: float) -> DetectedFace:
    """The face with its box and landmarks scaled by fx along x and fy along y."""
    factors = np.array([fx, fy, fx, fy], dtype=np.float64)
    return DetectedFace(face.box * factors, face.landmarks * factors[:2], face.score)

"""Build the configured detector from the manifest."""

from __future__ import annotations

from pathlib import Path

from service.detection.base import Detector
from service.detection.scrfd import ScrfdDetector
from service.detection.yunet import YuNetDetector
from service.models.manifest import Manifest
from service.settings import DetectionSettings


def build_detector(detection: DetectionSettings, manifest: Manifest, model_dir: Path, threads: int = 0,
                   score_threshold: float | None = None) -> Detector:
    """The detector named in `detection`, keeping detections from `score_threshold` (default: the configured
    one) up."""
    entry = manifest.models.get(detection.detector)
    if entry is None or entry.role != "detector":
        raise RuntimeError(
            f"detector {detection.detector!r} is not in the manifest; run `python -m service.models fetch`"
        )
    path = model_dir / entry.file
    score = detection.score_threshold if score_threshold is None else score_threshold
    if detection.detector == "yunet":
        return YuNetDetector(path, score, detection.det_max_side, instances=detection.detector_instances)
    return ScrfdDetector(path, score, detection.det_max_side, mean=entry.mean, std=entry.std, threads=threads)

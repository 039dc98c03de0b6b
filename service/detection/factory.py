"""Build the configured detector from the manifest."""

from __future__ import annotations

from service.detection.base import Detector
from service.detection.scrfd import ScrfdDetector
from service.detection.yunet import YuNetDetector
from service.models.manifest import Manifest
from service.settings import Settings


def build_detector(settings: Settings, manifest: Manifest) -> Detector:
    entry = manifest.models.get(settings.detector)
    if entry is None or entry.role != "detector":
        raise RuntimeError(
            f"detector {settings.detector!r} is not in the manifest; run `python -m service.models fetch`"
        )
    path = settings.model_dir / entry.file
    if settings.detector == "yunet":
        return YuNetDetector(path, settings.score_threshold, settings.det_max_side)
    return ScrfdDetector(path, settings.score_threshold, settings.det_max_side, threads=settings.intra_op_threads)

"""Face detectors: every face in an image with its box, 5 landmarks and score."""

from service.detection.base import DetectedFace, Detector
from service.detection.factory import build_detector

__all__ = ["DetectedFace", "Detector", "build_detector"]

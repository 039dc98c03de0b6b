"""Landmark refinement: better 5-point alignment landmarks than the detector's, from dedicated models."""

from service.landmarks.base import DetectorLandmarks, LandmarkModel
from service.landmarks.stage import LandmarkStage, Refined

__all__ = ["DetectorLandmarks", "LandmarkModel", "LandmarkStage", "Refined"]

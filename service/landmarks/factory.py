"""Build the configured landmark stage from the manifest."""

from __future__ import annotations

from pathlib import Path

from service.landmarks.base import DetectorLandmarks, LandmarkModel
from service.landmarks.mesh import FaceMeshLandmarks
from service.landmarks.onet import OnetLandmarks
from service.landmarks.stage import LandmarkStage
from service.models.manifest import Manifest

# The manifest entry of each landmark model.
MANIFEST_NAMES = {"mesh": "face_mesh", "onet": "onet"}


def build_model(name: str, manifest: Manifest, model_dir: Path, threads: int = 1) -> LandmarkModel:
    """One landmark model by its setting name: `detector`, `mesh` or `onet`."""
    if name == "detector":
        return DetectorLandmarks()
    entry = manifest.models.get(MANIFEST_NAMES[name])
    if entry is None or entry.role != "landmarks":
        raise RuntimeError(f"landmark model {name!r} is not in the manifest; run `python -m service.models fetch`")
    path = model_dir / entry.file
    if name == "mesh":
        return FaceMeshLandmarks(path, entry, threads)
    return OnetLandmarks(path, entry, threads)


def build_landmark_stage(names: list[str], manifest: Manifest, model_dir: Path, threads: int = 1) -> LandmarkStage:
    """The stage averaging the named models (`["detector"]` alone: the detector's points, no model runs)."""
    if names == ["detector"]:
        return LandmarkStage([])
    return LandmarkStage([build_model(n, manifest, model_dir, threads) for n in names])

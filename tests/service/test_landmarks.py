"""The landmark stage on real LFW faces through the real models: the mesh and O-Net points land on the face,
closer to SCRFD's points (an independent detector) than YuNet's own, they turn with the photo, the face path
uses them, and the setting rejects what it cannot build."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from service.core.wiring import build_offline, read_manifest
from service.detection import DetectedFace
from service.imaging.decode import decode_image
from service.imaging.roi import Roi
from service.landmarks.factory import build_landmark_stage
from service.settings import DecodeLimits, DetectionSettings, Settings
from tests.conftest import lfw_photo, people_with_photos

LIMITS = DecodeLimits()


def test_roi_maps_points_into_the_crop_and_back() -> None:
    roi = Roi(cx=120.0, cy=80.0, side=90.0, angle=0.4)
    points = np.array([[100.0, 70.0], [150.0, 95.0], [120.0, 80.0]])
    matrix = roi.matrix(48)
    in_crop = points @ matrix[:, :2].T + matrix[:, 2]
    assert np.allclose(in_crop[2], [24.0, 24.0])  # the centre goes to the crop's centre
    assert np.allclose(roi.to_image(in_crop, 48), points)


def test_setting_names_known_distinct_models() -> None:
    assert DetectionSettings(landmarks="mesh+onet").landmark_models == ["mesh", "onet"]
    for bad in ("mesh+mesh", "dlib", "", "mesh+"):
        with pytest.raises(ValidationError):
            DetectionSettings(landmarks=bad)


@pytest.fixture(scope="module")
def faces(model_dir: Path, lfw_dir: Path) -> list[tuple[np.ndarray, DetectedFace, DetectedFace]]:
    """20 DevTest photos: (RGB image, YuNet's main face, SCRFD's main face)."""
    yunet = build_offline(Settings(model_dir=model_dir, detection=DetectionSettings(landmarks="detector")))
    scrfd = build_offline(Settings(model_dir=model_dir, detection=DetectionSettings(detector="scrfd",
                                                                                     landmarks="detector")))
    out = []
    for name in people_with_photos(lfw_dir, 1, 20):
        data = lfw_photo(lfw_dir, name).read_bytes()
        image, found = yunet.path.find_faces(data, "image", yunet.face_filter)
        _, reference = scrfd.path.find_faces(data, "image", scrfd.face_filter)
        out.append((image, found[0], reference[0]))
    return out


def error(points: np.ndarray, reference: np.ndarray) -> float:
    """Mean distance of 5 points from the reference's, over the reference's inter-ocular distance."""
    return float(np.linalg.norm(points - reference, axis=1).mean() / np.linalg.norm(reference[1] - reference[0]))


@pytest.mark.parametrize("models", [["mesh"], ["onet"], ["mesh", "onet"]])
def test_refined_points_are_closer_to_an_independent_detector(model_dir: Path, faces: list, models: list[str]
                                                              ) -> None:
    stage = build_landmark_stage(models, read_manifest(Settings(model_dir=model_dir)), model_dir, threads=1)
    refined = [stage.refine(image, [yunet])[0] for image, yunet, _ in faces]
    before = [error(yunet.landmarks, scrfd.landmarks) for _, yunet, scrfd in faces]
    after = [error(r.face.landmarks, scrfd.landmarks) for r, (_, _, scrfd) in zip(refined, faces, strict=True)]
    assert max(after) < 0.15, after  # every point set lands on its face
    assert np.mean(after) < np.mean(before), (np.mean(after), np.mean(before))
    spreads = [r.spread for r in refined]
    assert all(s == 0.0 for s in spreads) if len(models) == 1 else all(0.0 < s < 0.2 for s in spreads)


@pytest.mark.parametrize("models", [["onet"], ["mesh", "onet"]])
def test_refined_points_turn_with_the_photo(model_dir: Path, faces: list, models: list[str]) -> None:
    """A photo turned by 25 degrees gets the turned points (within 4% of the inter-ocular distance): the crops
    are turned upright by the detector's eye line."""
    stage = build_landmark_stage(models, read_manifest(Settings(model_dir=model_dir)), model_dir, 1)
    yunet = build_offline(Settings(model_dir=model_dir, detection=DetectionSettings(landmarks="detector")))
    image, face, _ = faces[0]
    upright = stage.refine(image, [face])[0].face.landmarks
    h, w = image.shape[:2]
    turn = cv2.getRotationMatrix2D((w / 2, h / 2), 25, 1.0)
    turned = cv2.warpAffine(image, turn, (w, h), borderMode=cv2.BORDER_REPLICATE)
    ok, png = cv2.imencode(".png", cv2.cvtColor(turned, cv2.COLOR_RGB2BGR))
    assert ok
    rgb, found = yunet.path.find_faces(png.tobytes(), "image", yunet.face_filter)
    assert np.array_equal(rgb, decode_image(png.tobytes(), LIMITS))
    points = stage.refine(rgb, found[:1])[0].face.landmarks
    expected = upright @ turn[:, :2].T + turn[:, 2]
    assert error(points, expected) < 0.04, error(points, expected)


def test_the_face_path_aligns_with_the_configured_models(model_dir: Path, lfw_dir: Path) -> None:
    data = lfw_photo(lfw_dir, people_with_photos(lfw_dir, 1, 1)[0]).read_bytes()
    plain = build_offline(Settings(model_dir=model_dir, detection=DetectionSettings(landmarks="detector")))
    refined = build_offline(Settings(model_dir=model_dir, detection=DetectionSettings(landmarks="mesh+onet")))
    before, _ = plain.path.analyze(data, "image", plain.face_filter, align=False)
    after, _ = refined.path.analyze(data, "image", refined.face_filter, align=False)
    assert np.array_equal(before.faces[0].face.box, after.faces[0].face.box)  # same detection
    moved = np.linalg.norm(before.faces[0].face.landmarks - after.faces[0].face.landmarks, axis=1)
    assert 0.3 < moved.mean() < 8.0, moved  # the points moved, by a few pixels
    assert before.faces[0].landmark_spread == 0.0 < after.faces[0].landmark_spread

"""The face search for awkward photos (service/detection/search.py): tiny photos, faces that fill the frame, photos
turned without EXIF, photos without a face.

The geometry (every box and landmark mapped back from an upscaled, padded or turned copy) is checked exactly with a
fake detector that finds a marker only when the image is upright; the behaviours on real LFW photos through the
real YuNet model, built as the service builds it (score floor 0.3, threshold 0.6 applied by the search)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from service.detection import DetectedFace, Detector, build_detector
from service.detection.search import FaceSearch, Found, turned
from service.models.manifest import load_manifest
from service.settings import DetectionSettings
from tests.conftest import lfw_photo

THRESHOLD = 0.6  # YuNet's configured score threshold
FLOOR = 0.3  # service/core/wiring.py DETECTOR_SCORE_FLOOR
OFF = {"det_upscale_below": 0, "det_pad_fallback": False, "rotation_search": False}

# LFW photos (peopleDevTrain identities) chosen for what YuNet does with them, checked by the assertions below.
TINY = ["Aaron_Peirsol", "Abdullah_Gul", "Adrien_Brody"]
CLOSE_UPS = ["AJ_Cook", "Aaron_Eckhart", "Abdullah"]  # cropped inside the face box, enlarged: missed without padding
TURNED = "Aaron_Eckhart"  # turned 90 degrees: YuNet finds nothing on it
TURNED_FOUND_SIDEWAYS = "Aaron_Peirsol"  # turned 90 degrees: YuNet finds it sideways, its points misplaced


def settings(**fields: object) -> DetectionSettings:
    return DetectionSettings().model_copy(update={**OFF, **fields})


# --- the geometry, with a fake detector ------------------------------------------------------------------------


class MarkerDetector(Detector):
    """Finds the red marker as a "face" (a 1 px box, every landmark at its centre) only where the green marker is
    below and to the right of it, i.e. in the upright image; records the sizes it was given."""

    name = "marker"

    def __init__(self, max_side: int = 1280) -> None:
        super().__init__(score_threshold=0.0, max_side=max_side)
        self.sizes: list[tuple[int, int]] = []

    def _detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        self.sizes.append((rgb.shape[1], rgb.shape[0]))
        red = np.unravel_index(np.argmax(rgb[:, :, 0].astype(int) - rgb[:, :, 1]), rgb.shape[:2])
        green = np.unravel_index(np.argmax(rgb[:, :, 1].astype(int) - rgb[:, :, 0]), rgb.shape[:2])
        (ry, rx), (gy, gx) = red, green
        if not (gx > rx and gy > ry):
            return []
        centre = np.array([rx + 0.5, ry + 0.5], dtype=np.float32)
        box = np.array([rx, ry, rx + 1, ry + 1], dtype=np.float32)
        return [DetectedFace(box, np.tile(centre, (5, 1)), 0.95)]


def marked(width: int, height: int, red: tuple[int, int], green: tuple[int, int]) -> np.ndarray:
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[red[1], red[0]] = (255, 0, 0)
    image[green[1], green[0]] = (0, 255, 0)
    return image


def test_a_turned_copy_maps_back_exactly() -> None:
    upright = marked(60, 40, red=(10, 5), green=(50, 30))
    for rotation in (90, 180, 270):
        photo = np.ascontiguousarray(np.rot90(upright, -rotation // 90))  # turned `rotation` degrees clockwise
        red_y, red_x = np.argwhere(photo[:, :, 0] == 255)[0]
        search = FaceSearch(MarkerDetector(), settings(rotation_search=True))
        found = search.find(photo, min_score=0.5)
        assert found.rotation == rotation
        face = found.faces[0]
        np.testing.assert_allclose(face.landmarks, np.tile([red_x + 0.5, red_y + 0.5], (5, 1)), atol=1e-4)
        np.testing.assert_allclose(face.box, [red_x, red_y, red_x + 1, red_y + 1], atol=1e-4)
        image, matrix = turned(photo, rotation)
        np.testing.assert_array_equal(image, upright)
        np.testing.assert_allclose(matrix @ [10.5, 5.5, 1.0], [red_x + 0.5, red_y + 0.5])  # the upright marker


def test_an_upscaled_copy_maps_back_to_the_photo() -> None:
    photo = marked(30, 20, red=(7, 4), green=(25, 15))
    detector = MarkerDetector()
    found = FaceSearch(detector, settings(det_upscale_below=240)).find(photo, min_score=0.5)
    assert detector.sizes == [(240, 160)]
    assert found.passes == 1 and found.rotation == 0
    np.testing.assert_allclose(found.faces[0].landmarks[0], [7.5, 4.5], atol=0.1)


def test_a_photo_at_or_above_the_upscaling_threshold_is_detected_as_it_is() -> None:
    detector = MarkerDetector()
    FaceSearch(detector, settings(det_upscale_below=240)).find(marked(240, 100, (3, 3), (9, 9)), min_score=0.5)
    assert detector.sizes == [(240, 100)]


def test_a_padded_copy_maps_back_and_never_exceeds_the_detectors_side() -> None:
    photo = marked(400, 300, red=(100, 50), green=(300, 200))

    class FirstPassMisses(MarkerDetector):
        """Misses the photo itself, finds the marker on the padded copy."""

        def _detect(self, rgb: np.ndarray) -> list[DetectedFace]:
            faces = super()._detect(rgb)
            return faces if len(self.sizes) > 1 else []

    detector = FirstPassMisses(max_side=640)
    found = FaceSearch(detector, settings(det_pad_fallback=True), pad_fraction=1.0).find(photo, min_score=0.5)
    assert found.passes == 2
    assert max(detector.sizes[1]) <= 640  # reduced before padding: 400 x 3 would be 1200
    np.testing.assert_allclose(found.faces[0].landmarks[0], [100.5, 50.5], atol=1.5)


# --- the real detector on LFW photos ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def detector(model_dir: Path) -> Detector:
    detection = DetectionSettings()
    return build_detector(detection, load_manifest(model_dir), model_dir, score_threshold=FLOOR)


def read(lfw: Path, name: str) -> np.ndarray:
    bgr = cv2.imread(str(lfw_photo(lfw, name)))
    assert bgr is not None
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def main_face(faces: list[DetectedFace]) -> DetectedFace:
    kept = [f for f in faces if f.score >= THRESHOLD]
    assert kept, "the full-size photo has a face"
    return kept[0]


def hits(found: Found, true_box: np.ndarray) -> list[DetectedFace]:
    """The faces at or above the threshold whose centre is in the true box."""
    out = []
    for face in found.faces:
        cx, cy = (face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2
        if face.score >= THRESHOLD and true_box[0] <= cx <= true_box[2] and true_box[1] <= cy <= true_box[3]:
            out.append(face)
    return out


def nme(face: DetectedFace, reference: np.ndarray) -> float:
    iod = float(np.linalg.norm(reference[0] - reference[1]))
    return float(np.linalg.norm(face.landmarks - reference, axis=1).mean() / iod)


def test_a_tiny_photo_is_found_when_upscaled_and_not_without(detector: Detector, lfw_dir: Path) -> None:
    plain = FaceSearch(detector, settings())
    upscaled = FaceSearch(detector, settings(det_upscale_below=DetectionSettings().det_upscale_below))
    for name in TINY:
        rgb = read(lfw_dir, name)
        face = main_face(detector.detect(rgb))
        scale = 12 / face.size  # the whole photo shrunk until its face is 12 px
        small = cv2.resize(rgb, (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale)),
                           interpolation=cv2.INTER_AREA)
        sx, sy = small.shape[1] / rgb.shape[1], small.shape[0] / rgb.shape[0]
        true_box = face.box * np.array([sx, sy, sx, sy])
        assert not hits(plain.find(small), true_box), name
        found = hits(upscaled.find(small), true_box)
        assert found, name
        assert nme(found[0], face.landmarks * np.array([sx, sy])) < 0.35, name  # in the small photo's pixels


def test_a_normal_photo_takes_one_plain_pass(detector: Detector, lfw_dir: Path) -> None:
    """A 250 x 250 LFW photo is not upscaled by default and its faces are the plain detector's."""
    rgb = read(lfw_dir, TINY[0])
    found = FaceSearch(detector, DetectionSettings()).find(rgb)
    plain = detector.detect(rgb)
    assert found.passes == 1 and found.rotation == 0
    assert len(found.faces) == len(plain)
    for a, b in zip(found.faces, plain, strict=True):
        np.testing.assert_array_equal(a.box, b.box)
        np.testing.assert_array_equal(a.landmarks, b.landmarks)


def close_up(rgb: np.ndarray, face: DetectedFace, factor: float, side: int) -> tuple[np.ndarray, np.ndarray]:
    """The photo cropped inside its face box (`factor` of it, about its centre) and enlarged to `side`; the face
    box in the close-up's pixels."""
    x1, y1, x2, y2 = (float(v) for v in face.box)
    cx, cy, hw, hh = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) * factor / 2, (y2 - y1) * factor / 2
    left, top, right, bottom = round(cx - hw), round(cy - hh), round(cx + hw), round(cy + hh)
    crop = rgb[top:bottom, left:right]
    scale = side / max(crop.shape[:2])
    image = cv2.resize(crop, (round(crop.shape[1] * scale), round(crop.shape[0] * scale)),
                       interpolation=cv2.INTER_CUBIC)
    return image, (face.box - np.array([left, top, left, top])) * scale


@pytest.mark.parametrize("name", CLOSE_UPS)
def test_a_face_filling_the_frame_is_found_with_the_pad_fallback_only(detector: Detector, lfw_dir: Path, name: str
                                                                      ) -> None:
    rgb = read(lfw_dir, name)
    image, true_box = close_up(rgb, main_face(detector.detect(rgb)), 0.7, 960)
    default = DetectionSettings()
    without = FaceSearch(detector, default.model_copy(update={"det_pad_fallback": False})).find(image)
    assert not hits(without, true_box)
    with_pad = FaceSearch(detector, default).find(image)
    found = hits(with_pad, true_box)
    assert found and with_pad.passes == 2
    face = found[0]
    assert face.box[0] < 0 or face.box[1] < 0 or face.box[2] > image.shape[1] or face.box[3] > image.shape[0], \
        "the face exceeds the frame and its box is kept as found, not clipped"
    eyes = face.landmarks[:2]
    assert np.all(eyes >= 0) and np.all(eyes[:, 0] <= image.shape[1]) and np.all(eyes[:, 1] <= image.shape[0])


def turned_photo(rgb: np.ndarray, clockwise: int) -> np.ndarray:
    return np.ascontiguousarray(np.rot90(rgb, -clockwise // 90))


def upright_points_turned(face: DetectedFace, width: int, height: int) -> np.ndarray:
    """The upright photo's landmarks in the photo turned 90 degrees clockwise."""
    x, y = face.landmarks[:, 0], face.landmarks[:, 1]
    return np.stack([height - y, x], axis=1)


@pytest.mark.parametrize("name", [TURNED, TURNED_FOUND_SIDEWAYS])
def test_a_turned_photo_is_found_upright_with_rotation_search(detector: Detector, lfw_dir: Path, name: str
                                                              ) -> None:
    rgb = read(lfw_dir, name)
    default = DetectionSettings()
    upright = main_face(FaceSearch(detector, default).find(rgb).faces)
    photo = turned_photo(rgb, 90)
    found = FaceSearch(detector, default.model_copy(update={"rotation_search": True})).find(photo)
    assert found.rotation == 90
    face = main_face(found.faces)
    expected = upright_points_turned(upright, rgb.shape[1], rgb.shape[0])
    np.testing.assert_allclose(face.landmarks, expected, atol=2.0)
    corners = expected  # the box holds the turned landmarks
    assert np.all(corners[:, 0] >= face.box[0]) and np.all(corners[:, 0] <= face.box[2])
    assert np.all(corners[:, 1] >= face.box[1]) and np.all(corners[:, 1] <= face.box[3])
    # the eye line is turned with the photo: the second eye is below the first, not beside it
    assert face.landmarks[1, 1] - face.landmarks[0, 1] > 2 * abs(face.landmarks[1, 0] - face.landmarks[0, 0])


def test_without_rotation_search_a_turned_photo_has_no_face(detector: Detector, lfw_dir: Path) -> None:
    found = FaceSearch(detector, DetectionSettings()).find(turned_photo(read(lfw_dir, TURNED), 90))
    assert found.rotation == 0
    assert not [f for f in found.faces if f.score >= THRESHOLD]


def test_without_rotation_search_a_sideways_face_keeps_misplaced_points(detector: Detector, lfw_dir: Path) -> None:
    """What the search fixes beyond a miss: YuNet finds this turned face, with its points as if it were upright."""
    rgb = read(lfw_dir, TURNED_FOUND_SIDEWAYS)
    upright = main_face(detector.detect(rgb))
    found = FaceSearch(detector, DetectionSettings()).find(turned_photo(rgb, 90))
    face = main_face(found.faces)
    assert found.rotation == 0 and face.score < 0.9
    assert nme(face, upright_points_turned(upright, rgb.shape[1], rgb.shape[0])) > 0.3


def test_a_photo_without_a_face_stays_without_one(detector: Detector, lfw_dir: Path) -> None:
    everything = FaceSearch(detector, DetectionSettings().model_copy(update={"rotation_search": True}))
    rgb = read(lfw_dir, TINY[0])
    face = main_face(detector.detect(rgb))
    beside = np.ascontiguousarray(rgb[:, : max(1, int(face.box[0]) - 5)])  # the strip left of the face
    grey = np.full((200, 200, 3), 128, dtype=np.uint8)
    for image in (beside, grey):
        found = everything.find(image)
        assert found.rotation == 0
        assert not [f for f in found.faces if f.score >= THRESHOLD]
        assert found.passes == 5  # the plain pass, the pad fallback and three turned copies


def test_the_settings_are_read_from_their_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANYFACE_DET_UPSCALE_BELOW", "100")
    monkeypatch.setenv("ANYFACE_DET_PAD_FALLBACK", "false")
    monkeypatch.setenv("ANYFACE_ROTATION_SEARCH", "true")
    detection = DetectionSettings()
    assert (detection.det_upscale_below, detection.det_pad_fallback, detection.rotation_search) == (100, False, True)

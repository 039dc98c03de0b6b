"""The per-face quality score (service/core/quality.py) and `min_quality`: the features on synthetic faces, the
score on real LFW photos through the real face path, and the API's refusals (422 `low_quality`)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageFilter

from service.api.app import create_app
from service.core.face_path import FaceFilter
from service.core.quality import (
    QUALITY_MODEL,
    TEMPLATE_NOSE_POSITION,
    QualityFeatures,
    QualityModel,
    features,
    pose,
    reference_crop,
    require_quality,
    sharpness,
)
from service.core.wiring import OfflineFaces, build_offline
from service.detection import DetectedFace
from service.errors import LowQuality
from service.imaging.align import ARCFACE_TEMPLATE_112, align_face
from service.settings import Settings
from tests.conftest import lfw_photo, people_with_photos
from tests.images import encode, side_by_side, tiny_face_scene

# People whose photo's face the detector still finds when it is shrunk to about 12 px (tests/images.py)
TINY_FINDABLE = ["AJ_Lamas", "Abba_Eban", "Abel_Aguilar", "Adrian_Annus", "Adriana_Perez_Navarro", "Ahmed_Ghazi",
                 "Alan_Dershowitz", "Al_Davis"]
LOW_SCORE = FaceFilter(min_face_size=0, score_threshold=0.3, max_faces=1)  # the detector's floor: tiny faces


# --- features, without models -----------------------------------------------------------------------------------
def template_face(scale: float = 1.0, offset: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    return ARCFACE_TEMPLATE_112 * scale + np.array(offset)


def test_pose_is_zero_for_the_template_and_grows_with_the_nose_offset() -> None:
    yaw, pitch = pose(template_face())
    assert yaw == pytest.approx(0.0, abs=0.01) and pitch == pytest.approx(0.0, abs=1e-9)
    assert 0.45 < TEMPLATE_NOSE_POSITION < 0.55
    # invariant to position, scale and in-plane rotation
    angle = np.deg2rad(30)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    turned = template_face(3.0, (40, 70)) @ rotation.T
    assert pose(turned) == pytest.approx(pose(template_face()), abs=1e-9)
    yaws, pitches = [], []
    for shift in (0.0, 5.0, 10.0, 15.0):
        points = template_face()
        points[2, 0] += shift  # the nose turns sideways: yaw
        yaws.append(pose(points)[0])
        points = template_face()
        points[2, 1] += shift  # the nose moves towards the mouth: pitch
        pitches.append(pose(points)[1])
    assert yaws == sorted(yaws) and yaws[-1] > 0.35
    assert pitches == sorted(pitches) and pitches[-1] > 0.35


def textured(size: int = 400, seed: int = 0) -> np.ndarray:
    """An RGB image with detail at every scale (smoothed noise at several widths)."""
    rng = np.random.default_rng(seed)
    layers = [cv2.resize(rng.random((size // k, size // k)).astype(np.float32), (size, size),
                         interpolation=cv2.INTER_CUBIC) for k in (1, 4, 16)]
    grey = np.clip(sum(layers) / 3 * 255, 0, 255).astype(np.uint8)
    return np.dstack([grey, grey, grey])


def test_sharpness_falls_with_blur_and_compares_across_scales() -> None:
    image = textured()
    points = template_face(2.0, (90, 90))  # a "face" of about 220 px
    sharp = sharpness(reference_crop(image, points))
    blurred = [sharpness(reference_crop(cv2.GaussianBlur(image, (0, 0), sigma), points)) for sigma in (2, 4, 8)]
    assert sharp > blurred[0] > blurred[1] > blurred[2]
    # a large face is reduced before alignment: the crop matches aligning at 112 and reducing that to 48
    direct = reference_crop(image, points)
    via_112 = cv2.cvtColor(cv2.resize(align_face(image, points, 112), (48, 48), interpolation=cv2.INTER_AREA),
                           cv2.COLOR_RGB2GRAY).astype(np.float32)
    assert np.abs(direct - via_112).mean() < 6.0
    # the same picture as a 12 px face holds little detail: it scores far less sharp
    small = cv2.resize(image, (24, 24), interpolation=cv2.INTER_AREA)
    tiny = sharpness(reference_crop(small, points * 24 / 400))
    assert tiny < blurred[0]


def test_the_model_is_a_squashed_linear_score() -> None:
    model = QualityModel(cap=(np.inf, np.inf, 1.0, np.inf, np.inf, np.inf), mean=(0.0,) * 6, scale=(1.0,) * 6,
                         weights=(1.0, 0, 2.0, 0, 0, 0), bias=0.0)
    x = QualityFeatures(0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    assert model.quality(x) == pytest.approx(0.5)
    assert model.quality(QualityFeatures(2.0, 0, 0, 0, 0, 0)) == pytest.approx(1 / (1 + np.exp(-2.0)))
    assert model.quality(QualityFeatures(100.0, 0, 0, 0, 0, 0)) < 1 / (1 + np.exp(-4.01))  # clipped at 4 SD
    assert model.quality(QualityFeatures(0, 0, 3.0, 0, 0, 0)) == pytest.approx(1 / (1 + np.exp(-2.0)))  # capped at 1
    assert len(QUALITY_MODEL.cap) == 6
    assert len(QUALITY_MODEL.mean) == len(QUALITY_MODEL.scale) == len(QUALITY_MODEL.weights) == 6
    face = DetectedFace(np.array([80, 80, 310, 310], np.float32), template_face(2.0, (90, 90)).astype(np.float32),
                        0.9)
    found = features(textured(), face, 0.0)
    assert found.log_size == pytest.approx(np.log2(230)) and found.det_score == pytest.approx(0.9)
    assert 0.0 <= QUALITY_MODEL.quality(found) <= 1.0


def test_require_quality_names_the_face_its_quality_and_the_limit() -> None:
    require_quality(0.61234, 0.6, "image")
    require_quality(0.59996, 0.6, "image")  # answers show 0.6: equal to the limit is accepted
    with pytest.raises(LowQuality) as caught:
        require_quality(0.41, 0.6, "images[1]")
    assert caught.value.code == "low_quality"
    assert "images[1]" in caught.value.message and "0.41" in caught.value.message and "0.6" in caught.value.message


# --- real photos through the real face path ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def faces(model_dir: Path) -> OfflineFaces:
    return build_offline(Settings(model_dir=model_dir), use_branches=True)


def main_quality(faces: OfflineFaces, data: bytes, flt: FaceFilter | None = None) -> tuple[float, float] | None:
    """(quality, size) of the main face of a photo, None without a face."""
    result, _ = faces.path.analyze(data, "image", flt or faces.face_filter, align=False)
    return (result.faces[0].quality, result.faces[0].face.size) if result.faces else None


def blurred(path: Path, radius: float) -> bytes:
    return encode(Image.open(path).convert("RGB").filter(ImageFilter.GaussianBlur(radius)), "PNG")


def test_a_sharp_face_scores_higher_than_the_same_photo_blurred_or_tiny(faces: OfflineFaces, lfw_dir: Path) -> None:
    tiny_seen = 0
    for person in TINY_FINDABLE:
        photo = lfw_photo(lfw_dir, person)
        sharp = main_quality(faces, photo.read_bytes())
        assert sharp is not None, person
        heavy = main_quality(faces, blurred(photo, 6), LOW_SCORE)
        if heavy is not None:
            assert heavy[0] < sharp[0] - 0.2, (person, sharp, heavy)
        mild = main_quality(faces, blurred(photo, 2), LOW_SCORE)
        assert mild is not None and (heavy is None or heavy[0] < mild[0]), (person, mild, heavy)
        assert mild[0] < sharp[0], (person, sharp, mild)
        scene, _ = tiny_face_scene(photo, face_px=12)
        tiny = main_quality(faces, scene, LOW_SCORE)
        if tiny is not None and tiny[1] < 20:  # the tiny face itself (not something else in the scene)
            tiny_seen += 1
            assert tiny[0] < sharp[0] - 0.2, (person, sharp, tiny)
        assert 0.0 <= sharp[0] <= 1.0
    assert tiny_seen >= 3, "the detector should find several of the 12-pixel faces at score 0.3"


def test_sharp_lfw_faces_are_mostly_above_the_default(faces: OfflineFaces, lfw_dir: Path) -> None:
    default = Settings().min_quality
    names = people_with_photos(lfw_dir, minimum=1, limit=40)  # View 1 test identities, never fitted on
    qualities = [q for n in names if (q := main_quality(faces, lfw_photo(lfw_dir, n).read_bytes())) is not None]
    assert len(qualities) >= 38
    above = np.mean([q >= default for q, _ in qualities])
    assert above >= 0.95, (default, sorted(q for q, _ in qualities)[:5])


# --- the API ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def api(model_dir: Path, lfw_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    store = tmp_path_factory.mktemp("quality") / "gallery.sqlite3"
    with TestClient(create_app(Settings(model_dir=model_dir, store=f"sqlite:///{store}")),
                    raise_server_exceptions=False) as client:
        yield client


def upload(lfw: Path, name: str, number: int = 1) -> tuple[str, bytes, str]:
    return (f"{name}_{number}.jpg", lfw_photo(lfw, name, number).read_bytes(), "image/jpeg")


def detected_quality(api: TestClient, file: tuple[str, bytes, str]) -> float:
    response = api.post("/v1/detect", files={"image": file})
    assert response.status_code == 200, response.text
    return float(response.json()["faces"][0]["quality"])


def test_detect_reports_quality_of_every_face_and_never_refuses(api: TestClient, lfw_dir: Path) -> None:
    group = side_by_side(lfw_photo(lfw_dir, "Aaron_Peirsol"), lfw_photo(lfw_dir, "Abdullah_Gul"),
                         lfw_photo(lfw_dir, "Adrien_Brody"))
    faces = api.post("/v1/detect", files={"image": ("g.jpg", group, "image/jpeg")}).json()["faces"]
    assert len(faces) >= 3
    assert all(isinstance(f["quality"], float) and 0.0 <= f["quality"] <= 1.0 for f in faces)
    assert len({f["quality"] for f in faces}) > 1  # a score of each face, not a constant
    # a heavily blurred face is still reported (detect has no min_quality), with a lower quality
    sharp = detected_quality(api, upload(lfw_dir, "Aaron_Peirsol"))
    soft = api.post("/v1/detect", files={"image": ("b.png", blurred(lfw_photo(lfw_dir, "Aaron_Peirsol"), 4),
                                                   "image/png")}, data={"det_score_threshold": "0.3"})
    assert soft.status_code == 200 and soft.json()["faces"]
    assert soft.json()["faces"][0]["quality"] < sharp


def test_enrolment_refuses_a_face_below_min_quality_and_writes_nothing(api: TestClient, lfw_dir: Path) -> None:
    photo = upload(lfw_dir, "Ari_Fleischer")
    quality = detected_quality(api, photo)
    url = "/v1/galleries/q-enrol/subjects/ari/faces"
    for limit in (min(1.0, quality + 0.01), 0.99):
        refused = api.post(url, files=[("images", photo)], data={"min_quality": str(limit)})
        assert refused.status_code == 422, refused.text
        error = refused.json()["error"]
        assert error["code"] == "low_quality"
        assert f"{quality:g}" in error["message"] and f"{limit:g}" in error["message"]
        assert api.get("/v1/galleries/q-enrol").status_code == 404  # nothing written
    # all or nothing: a good photo and a refused one in the same request write nothing either
    both = api.post(url, files=[("images", photo), ("images", upload(lfw_dir, "Ari_Fleischer", 2))],
                    data={"min_quality": str(min(1.0, quality + 0.01))})
    assert both.status_code == 422 and api.get("/v1/galleries/q-enrol").status_code == 404
    accepted = api.post(url, files=[("images", photo)], data={"min_quality": str(max(0.0, quality - 0.01))})
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["faces"][0]["quality"] == pytest.approx(quality)
    assert api.get("/v1/galleries/q-enrol/subjects/ari").json()["face_count"] == 1
    invalid = api.post(url, files=[("images", photo)], data={"min_quality": "1.5"})
    assert invalid.status_code == 422 and invalid.json()["error"]["code"] == "invalid_parameter"


def test_identify_and_verify_honour_the_request_min_quality(api: TestClient, lfw_dir: Path) -> None:
    for i, name in enumerate(["Alvaro_Uribe", "Amelia_Vega"]):
        response = api.post(f"/v1/galleries/q-search/subjects/s{i}/faces", files=[("images", upload(lfw_dir, name))],
                            data={"min_quality": "0"})
        assert response.status_code == 201, response.text
    probe = upload(lfw_dir, "Amelia_Vega", 2)
    quality = detected_quality(api, probe)
    above, below = str(min(1.0, quality + 0.01)), str(max(0.0, quality - 0.01))

    found = api.post("/v1/identify", files={"image": probe}, data={"gallery": "q-search", "min_quality": below})
    assert found.status_code == 200, found.text
    face = found.json()["faces"][0]
    assert face["candidates"][0]["subject_id"] == "s1" and face["skipped"] is None
    assert face["face"]["quality"] == pytest.approx(quality)
    refused = api.post("/v1/identify", files={"image": probe}, data={"gallery": "q-search", "min_quality": above})
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "low_quality"
    assert "image" in refused.json()["error"]["message"]

    matched = api.post("/v1/verify", files={"image": probe}, data={"gallery": "q-search", "subject_id": "s1",
                                                                     "min_quality": below})
    assert matched.status_code == 200 and matched.json()["match"] is True
    assert matched.json()["face_a"]["quality"] == pytest.approx(quality)
    refused = api.post("/v1/verify", files={"image": probe}, data={"gallery": "q-search", "subject_id": "s1",
                                                                     "min_quality": above})
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "low_quality"

    other = upload(lfw_dir, "Amelia_Vega", 3)
    pair = api.post("/v1/verify", files={"image_a": other, "image_b": probe}, data={"min_quality": below})
    if detected_quality(api, other) >= float(below):
        assert pair.status_code == 200 and pair.json()["face_b"]["quality"] == pytest.approx(quality)
    refused = api.post("/v1/verify", files={"image_a": probe, "image_b": probe}, data={"min_quality": above})
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "low_quality"
    assert "image_a" in refused.json()["error"]["message"]


def largest_by_side(faces: list[dict]) -> dict[bool, dict]:
    """The largest face of the left photo (True) and of the right one (False) of a side-by-side pair."""
    out: dict[bool, dict] = {}
    for f in sorted(faces, key=lambda f: f["face"]["size"]):
        out[(f["face"]["box"]["x1"] + f["face"]["box"]["x2"]) / 2 < 250] = f
    return out


def test_identify_all_faces_skips_faces_below_min_quality(api: TestClient, lfw_dir: Path) -> None:
    sharp_path, soft_path = lfw_photo(lfw_dir, "Adrien_Brody", 2), lfw_photo(lfw_dir, "Alejandro_Toledo", 2)
    for subject, name in (("brody", "Adrien_Brody"), ("toledo", "Alejandro_Toledo")):
        assert api.post(f"/v1/galleries/q-group/subjects/{subject}/faces", files=[("images", upload(lfw_dir, name))],
                        data={"min_quality": "0"}).status_code == 201
    canvas = Image.new("RGB", (500, 250), (128, 128, 128))
    canvas.paste(Image.open(sharp_path).convert("RGB"), (0, 0))
    canvas.paste(Image.open(soft_path).convert("RGB").filter(ImageFilter.GaussianBlur(4)), (250, 0))
    group = ("g.png", encode(canvas, "PNG"), "image/png")
    form = {"gallery": "q-group", "all_faces": "true", "threshold": "-1", "det_score_threshold": "0.3"}
    everyone = api.post("/v1/identify", files={"image": group}, data={**form, "min_quality": "0"}).json()["faces"]
    by_side = largest_by_side(everyone)  # Brody's photo shows bystanders too
    sharp_q, soft_q = by_side[True]["face"]["quality"], by_side[False]["face"]["quality"]
    assert sharp_q > soft_q and all(f["skipped"] is None and f["candidates"] for f in everyone)
    limit = str(round((sharp_q + soft_q) / 2, 4))
    result = api.post("/v1/identify", files={"image": group}, data={**form, "min_quality": limit})
    assert result.status_code == 200, result.text
    faces = largest_by_side(result.json()["faces"])
    assert faces[True]["skipped"] is None and faces[True]["candidates"][0]["subject_id"] == "brody"
    assert faces[False]["skipped"] == "low_quality" and faces[False]["candidates"] == []
    assert faces[False]["face"]["quality"] == pytest.approx(soft_q)


def test_the_setting_is_the_default_and_a_request_overrides_it(model_dir: Path, lfw_dir: Path,
                                                                tmp_path: Path) -> None:
    settings = Settings(model_dir=model_dir, store=f"sqlite:///{tmp_path / 'g.sqlite3'}", min_quality=0.999)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        url = "/v1/galleries/strict/subjects/a/faces"
        refused = client.post(url, files=[("images", upload(lfw_dir, "Anna_Kournikova"))])
        assert refused.status_code == 422 and refused.json()["error"]["code"] == "low_quality"
        assert "0.999" in refused.json()["error"]["message"]
        assert client.post(url, files=[("images", upload(lfw_dir, "Anna_Kournikova"))],
                           data={"min_quality": "0"}).status_code == 201
        assert client.post("/v1/identify", files={"image": upload(lfw_dir, "Anna_Kournikova", 2)},
                           data={"gallery": "strict"}).status_code == 422


def test_the_openapi_declares_min_quality_and_low_quality(api: TestClient) -> None:
    spec = api.get("/openapi.json").json()
    for path in ("/v1/identify", "/v1/verify", "/v1/galleries/{gallery}/subjects/{subject_id}/faces"):
        op = spec["paths"][path]["post"]
        assert "low_quality" in op["responses"]["422"]["description"], path
        ref = op["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[1]
        field = spec["components"]["schemas"][ref]["properties"]["min_quality"]
        assert "low_quality" in field["description"], path
    assert "low_quality" not in spec["paths"]["/v1/detect"]["post"]["responses"]["422"]["description"]
    face_out = spec["components"]["schemas"]["FaceOut"]
    assert "quality" in face_out["required"]
    assert "skipped" in spec["components"]["schemas"]["IdentifiedFace"]["properties"]


def test_a_degraded_photo_is_refused_at_the_default(api: TestClient, lfw_dir: Path) -> None:
    """The default min_quality (docs/quality.md) keeps a clean photo and refuses the same photo shrunk and blurred
    into a face that cannot be matched."""
    photo = lfw_photo(lfw_dir, "Amelie_Mauresmo")
    clean = api.post("/v1/galleries/q-default/subjects/a/faces", files=[("images", upload(lfw_dir, "Amelie_Mauresmo"))])
    assert clean.status_code == 201, clean.text
    small = Image.open(photo).convert("RGB").resize((40, 40), Image.Resampling.BOX)
    canvas = Image.new("RGB", (160, 160), (120, 120, 120))
    canvas.paste(small.filter(ImageFilter.GaussianBlur(1.0)), (60, 60))
    buf = io.BytesIO()
    canvas.save(buf, format="JPEG", quality=15)
    probe = ("small.jpg", buf.getvalue(), "image/jpeg")
    detected = api.post("/v1/detect", files={"image": probe}, data={"det_score_threshold": "0.3"}).json()["faces"]
    assert detected, "the detector should still find the degraded face"
    refused = api.post("/v1/identify", files={"image": probe}, data={"gallery": "q-default",
                                                                     "det_score_threshold": "0.3"})
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "low_quality", refused.text

"""Awkward photos through the API: a photo turned without EXIF (found with the rotation search, reported, and
matched to the upright photo), a face that fills the frame (found by the pad fallback), and a tiny photo (found
on its upscaled copy)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.api.app import create_app
from service.settings import DetectionSettings, Settings
from tests.conftest import lfw_photo
from tests.images import encode

PERSON = "Aaron_Peirsol"


@pytest.fixture(scope="module")
def api(model_dir: Path, lfw_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    store = tmp_path_factory.mktemp("store") / "gallery.sqlite3"
    settings = Settings(model_dir=model_dir, store=f"sqlite:///{store}",
                        detection=DetectionSettings(rotation_search=True))
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def upload(image: Image.Image, field: str = "image") -> dict[str, tuple[str, bytes, str]]:
    return {field: ("photo.png", encode(image, "PNG"), "image/png")}


def detect(api: TestClient, image: Image.Image) -> dict:
    response = api.post("/v1/detect", files=upload(image))
    assert response.status_code == 200, response.text
    return response.json()


def test_turned_photo_is_found_reported_and_matches(api: TestClient, lfw_dir: Path) -> None:
    upright = Image.open(lfw_photo(lfw_dir, PERSON)).convert("RGB")
    before = detect(api, upright)
    assert before["rotation"] == 0 and before["faces"]
    turned = upright.transpose(Image.Transpose.ROTATE_270)  # PIL turns counter-clockwise: this is 90 clockwise
    found = detect(api, turned)
    assert found["rotation"] == 90, found
    eyes = np.array(found["faces"][0]["landmarks"][:2])
    assert abs(eyes[0, 0] - eyes[1, 0]) < abs(eyes[0, 1] - eyes[1, 1])  # the eye line runs down the turned photo
    verdict = api.post("/v1/verify", files={**upload(upright, "image_a"), **upload(turned, "image_b")}).json()
    assert verdict["match"] is True, verdict


def test_face_filling_the_frame_is_found(api: TestClient, lfw_dir: Path) -> None:
    photo = Image.open(lfw_photo(lfw_dir, PERSON)).convert("RGB")
    x1, y1, x2, y2 = detect(api, photo)["faces"][0]["box"].values()
    inset = 0.12 * (x2 - x1)  # cut inside the face box: the face fills and exceeds the frame
    tight = photo.crop((round(x1 + inset), round(y1 + inset), round(x2 - inset), round(y2 - inset)))
    faces = detect(api, tight)["faces"]
    assert len(faces) == 1
    box = faces[0]["box"]
    assert box["x1"] < 0 or box["y1"] < 0 or box["x2"] > tight.width or box["y2"] > tight.height  # the whole face


def test_tiny_photo_is_found(api: TestClient, lfw_dir: Path) -> None:
    photo = Image.open(lfw_photo(lfw_dir, PERSON)).convert("RGB")
    size = detect(api, photo)["faces"][0]["size"]
    factor = 14.0 / size  # the face becomes ~14 pixels
    tiny = photo.resize((round(photo.width * factor), round(photo.height * factor)), Image.Resampling.BOX)
    faces = detect(api, tiny)["faces"]
    assert len(faces) == 1 and 9 < faces[0]["size"] < 22, faces

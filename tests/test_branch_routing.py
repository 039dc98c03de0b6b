"""Serving by resolution: a tiny face goes to the BTNet branch of its size, aligned straight at that size, and
is matched against a gallery enrolled at full resolution."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.embedding.router import route
from service.models.manifest import load_manifest
from service.settings import Settings
from tests.conftest import lfw_photo
from tests.images import tiny_face_scene

PEOPLE = ["Abdullah_Gul", "Aaron_Peirsol", "Amelia_Vega", "Ana_Guevara", "Amelie_Mauresmo"]
# The detector's box of a face downscaled to ~13 px measures 13-16 px, and a detector is less sure of such faces:
# the routing tests use the `nearest` rule (all of those go to the 14 branch) and a per-request score threshold
# of 0.3, both settings a deployment for tiny faces would choose.
TINY = {"det_score_threshold": "0.3"}


def test_router_rules() -> None:
    resolutions = [7, 14, 28, 56, 112]
    assert [route(x, resolutions, "ceil") for x in (3, 7, 7.5, 14, 20, 56.1, 112, 300)] == [7, 7, 14, 14, 28, 112,
                                                                                           112, 112]
    assert [route(x, resolutions, "floor") for x in (3, 7, 13.9, 20, 111, 300)] == [7, 7, 7, 14, 56, 112]
    assert [route(x, resolutions, "nearest") for x in (9, 10.5, 11, 20, 21, 100)] == [7, 14, 14, 14, 28, 112]
    assert route(50, [112], "ceil") == 112  # no branches: the trunk takes everything


@pytest.fixture(scope="module")
def branches(model_dir: Path) -> dict[int, str]:
    found = {e.resolution: name for name, e in load_manifest(model_dir).embedders("btnet").items() if e.resolution}
    if 14 not in found:
        pytest.skip("no BTNet branch for 14 px in models/manifest.json: run `make branches` (training + export)")
    return found


@pytest.fixture(scope="module")
def api(model_dir: Path, lfw_dir: Path, branches: dict[int, str],
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    store = tmp_path_factory.mktemp("routing") / "g.sqlite3"
    settings = Settings(model_dir=model_dir, store=f"sqlite:///{store}", branch_rule="nearest")
    with TestClient(create_app(settings)) as client:
        for i, person in enumerate(PEOPLE):  # enrolled from full-size photos: the 112 trunk
            photo = lfw_photo(lfw_dir, person, 1)
            response = client.post(f"/v1/galleries/tiny/subjects/p{i}/faces",
                                   files=[("images", (photo.name, photo.read_bytes(), "image/jpeg"))])
            assert response.status_code == 201
            assert response.json()["faces"][0]["branch"] == "mobilefacenet"
        yield client


def test_a_14_pixel_face_is_embedded_by_the_14_branch_and_matches_its_enrolment(
        api: TestClient, lfw_dir: Path, branches: dict[int, str]) -> None:
    hits = 0
    for i, person in enumerate(PEOPLE):
        scene, _ = tiny_face_scene(lfw_photo(lfw_dir, person, 2), face_px=13)
        result = api.post("/v1/identify", files={"image": ("tiny.png", scene, "image/png")},
                          data={"gallery": "tiny", "top_k": "5", "threshold": "-1", **TINY})
        assert result.status_code == 200, result.text
        face = result.json()["faces"][0]
        assert 10.5 < face["face"]["size"] < 21, face["face"]
        assert face["face"]["resolution"] == 14 and face["face"]["branch"] == branches[14]
        hits += face["candidates"][0]["subject_id"] == f"p{i}"
    assert hits >= 4, f"only {hits} of {len(PEOPLE)} tiny probes matched their full-resolution enrolment"
    metrics = api.get("/metrics").text
    assert 'anyface_faces_embedded_total{branch="14"}' in metrics


def test_without_branches_the_trunk_takes_tiny_faces(model_dir: Path, lfw_dir: Path, tmp_path: Path) -> None:
    settings = Settings(model_dir=model_dir, store=f"sqlite:///{tmp_path / 'g.sqlite3'}", use_branches=False)
    scene, _ = tiny_face_scene(lfw_photo(lfw_dir, PEOPLE[0], 2), face_px=13)
    with TestClient(create_app(settings)) as client:
        face = client.post("/v1/detect", files={"image": ("tiny.png", scene, "image/png")},
                           data=TINY).json()["faces"][0]
        assert face["size"] < 21
        verify = client.post("/v1/verify", files={"image_a": ("tiny.png", scene, "image/png"),
                                                  "image_b": lfw_photo(lfw_dir, PEOPLE[0], 1).open("rb")},
                             data=TINY).json()
        assert verify["face_a"]["branch"] == "mobilefacenet" and verify["face_a"]["resolution"] == 112

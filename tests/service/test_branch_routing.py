"""Serving by resolution: a tiny face goes to the BTNet branch of its size, aligned straight at that size, and
is matched against a gallery enrolled at full resolution."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.embedding.router import route
from service.models.manifest import load_manifest
from service.settings import Settings
from tests.conftest import lfw_photo, people_with_photos
from tests.images import tiny_face_scene

# The detector's box of a face downscaled to ~13 px measures 13-16 px, and a detector is less sure of such faces:
# the routing tests use the `nearest` rule (all of those go to the 14 branch) and a per-request score threshold
# of 0.3, both settings a deployment for tiny faces would choose.
TINY = {"det_score_threshold": "0.3", "min_quality": "0"}  # this test is about branches, not the quality gate
GALLERY_SIZE = 40


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


def _service(model_dir: Path, store: Path, use_branches: bool) -> TestClient:
    return TestClient(create_app(Settings(model_dir=model_dir, store=f"sqlite:///{store}", branch_rule="nearest",
                                          use_branches=use_branches)))


def _enroll_and_probe(client: TestClient, lfw: Path, people: list[str], face_px: float) -> list[dict]:
    """Enrol the first photo of each person at full size, then identify a second photo shrunk to `face_px`."""
    for i, person in enumerate(people):
        photo = lfw_photo(lfw, person, 1)
        response = client.post(f"/v1/galleries/tiny/subjects/p{i}/faces", data={"allow_multiple": "true"},
                               files=[("images", (photo.name, photo.read_bytes(), "image/jpeg"))])
        assert response.status_code == 201 and response.json()["faces"][0]["branch"] == "mobilefacenet"
    answers = []
    for i, person in enumerate(people):
        scene, _ = tiny_face_scene(lfw_photo(lfw, person, 2), face_px=face_px)
        result = client.post("/v1/identify", files={"image": ("tiny.png", scene, "image/png")},
                             data={"gallery": "tiny", "top_k": str(len(people)), "threshold": "-1", **TINY})
        if result.status_code == 422 and result.json()["error"]["code"] == "no_face":
            continue  # the detector missed this tiny face: nothing to route
        assert result.status_code == 200, result.text
        face = result.json()["faces"][0]
        mated = next(c["similarity"] for c in face["candidates"] if c["subject_id"] == f"p{i}")
        answers.append({"person": i, "face": face["face"], "rank1": face["candidates"][0]["subject_id"] == f"p{i}",
                        "mated": mated})
    return answers


def test_a_14_pixel_face_is_embedded_by_the_14_branch_and_beats_upsampling(
        model_dir: Path, lfw_dir: Path, branches: dict[int, str], tmp_path: Path) -> None:
    people = people_with_photos(lfw_dir, minimum=2, limit=GALLERY_SIZE)
    with _service(model_dir, tmp_path / "btnet.sqlite3", use_branches=True) as client:
        btnet = _enroll_and_probe(client, lfw_dir, people, face_px=14)
        metrics = client.get("/metrics").text
    with _service(model_dir, tmp_path / "trunk.sqlite3", use_branches=False) as client:
        trunk = _enroll_and_probe(client, lfw_dir, people, face_px=14)
    resolutions = [*sorted(branches), 112]
    for answer in btnet:  # every face goes where its measured size says, and the answer names the embedder
        face = answer["face"]
        assert face["resolution"] == route(face["size"], resolutions, "nearest"), face
        assert face["branch"] == (branches.get(face["resolution"]) or "mobilefacenet"), face
    at_14 = {a["person"]: a for a in btnet if a["face"]["resolution"] == 14}
    assert len(at_14) >= GALLERY_SIZE // 2, "most 14-pixel faces should be found and routed to the 14 branch"
    assert all(a["face"]["resolution"] == 112 and a["face"]["branch"] == "mobilefacenet" for a in trunk)
    assert 'anyface_faces_embedded_total{branch="14"}' in metrics
    # the same probes, embedded at 14 px by the branch vs upsampled into the trunk: the branch lands closer to
    # the full-resolution enrolment of the same person
    paired = [(at_14[a["person"]]["mated"], a["mated"]) for a in trunk if a["person"] in at_14]
    mean_btnet = sum(b for b, _ in paired) / len(paired)
    mean_trunk = sum(t for _, t in paired) / len(paired)
    assert mean_btnet > mean_trunk, (mean_btnet, mean_trunk, len(paired))
    print(f"14 px probes: mated similarity {mean_btnet:.3f} (BTNet r14) vs {mean_trunk:.3f} (upsampled trunk)")


def test_a_26_pixel_face_is_identified_through_the_28_branch(
        model_dir: Path, lfw_dir: Path, branches: dict[int, str], tmp_path: Path) -> None:
    people = people_with_photos(lfw_dir, minimum=2, limit=GALLERY_SIZE)
    with _service(model_dir, tmp_path / "g.sqlite3", use_branches=True) as client:
        answers = _enroll_and_probe(client, lfw_dir, people, face_px=26)
    assert len(answers) == len(people)
    at_28 = [a for a in answers if a["face"]["resolution"] == 28]
    assert len(at_28) >= 0.8 * len(people)
    assert sum(a["rank1"] for a in at_28) >= 0.9 * len(at_28)

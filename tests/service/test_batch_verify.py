"""`POST /v1/verify/batch` on real models and LFW photos: one photo against 100 equals 100 single verifies, against
subjects equals verify-against-subject, pairs equal single verifies; a photo without a face is answered in its
place; the bounds are settings."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.settings import Settings
from tests.conftest import lfw_photo, people_with_photos
from tests.images import blank

JPEG = "image/jpeg"


@pytest.fixture(scope="module")
def api(model_dir: Path, lfw_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    store = tmp_path_factory.mktemp("store") / "g.sqlite3"
    settings = Settings(model_dir=model_dir, store=f"sqlite:///{store}", max_batch_subjects=5)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def _file(path: Path, field: str) -> tuple[str, tuple[str, bytes, str]]:
    return (field, (path.name, path.read_bytes(), JPEG))


def test_one_photo_against_100_equals_100_verifies(api: TestClient, lfw_dir: Path) -> None:
    probe = lfw_photo(lfw_dir, "Aaron_Peirsol", 1)
    others = [lfw_photo(lfw_dir, "Aaron_Peirsol", n) for n in (2, 3, 4)]
    others += [lfw_photo(lfw_dir, p, 1) for p in people_with_photos(lfw_dir, 1, 120, "peopleDevTrain.txt")]
    others = others[:100]
    response = api.post("/v1/verify/batch", files=[_file(probe, "image"), *[_file(p, "photos") for p in others]])
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["against_photos"]) == len(body["photos"]) == 100 and body["pairs"] == []
    singles = [api.post("/v1/verify", files=[_file(probe, "image_a"), _file(p, "image_b")]).json() for p in others]
    batch = body["against_photos"]
    for one, many in zip(singles, batch, strict=True):
        if "error" in one:  # a photo the single verify refuses is answered with the same error in the batch
            assert many["error"]["code"] == one["error"]["code"]
            continue
        assert abs(one["similarity"] - many["similarity"]) < 1e-5 and one["match"] == many["match"]
    assert all(m["match"] for m in batch[:3]) and body["threshold"] == singles[0]["threshold"]
    assert sum(m["match"] is True for m in batch) >= 3


def test_a_photo_without_a_face_is_answered_in_its_place(api: TestClient, lfw_dir: Path) -> None:
    probe = lfw_photo(lfw_dir, "Aaron_Peirsol", 1)
    files = [_file(probe, "image"), _file(lfw_photo(lfw_dir, "Aaron_Peirsol", 2), "photos"),
             ("photos", ("wall.png", blank(), "image/png")), ("photos", ("junk.jpg", b"not an image", JPEG))]
    body = api.post("/v1/verify/batch", files=files).json()
    assert body["against_photos"][0]["match"] is True
    assert [p["error"]["code"] if p["error"] else None for p in body["photos"]] == [None, "no_face", "invalid_image"]
    assert body["against_photos"][1] == {"similarity": None, "match": None,
                                         "error": body["photos"][1]["error"]}
    no_face = api.post("/v1/verify/batch", files=[("image", ("wall.png", blank(), "image/png")), files[1]])
    assert no_face.status_code == 422 and no_face.json()["error"]["code"] == "no_face"  # the probe's own problem


def test_against_subjects_equals_verify_against_subject(api: TestClient, lfw_dir: Path) -> None:
    people = people_with_photos(lfw_dir, 3, 3)
    for person in people:
        files = [_file(lfw_photo(lfw_dir, person, n), "images") for n in (1, 2)]
        assert api.post(f"/v1/galleries/batch/subjects/{person}/faces", files=files,
                        data={"allow_multiple": "true", "name": person}).status_code == 201
    probe = lfw_photo(lfw_dir, people[0], 3)
    wanted = [{"gallery": "batch", "subject_id": p} for p in people] + [{"gallery": "batch", "subject_id": "nobody"}]
    body = api.post("/v1/verify/batch", files=[_file(probe, "image")], data={"subjects": json.dumps(wanted)}).json()
    results = body["against_subjects"]
    assert [r["subject_id"] for r in results] == [*people, "nobody"]
    assert results[0]["match"] is True and results[0]["name"] == people[0]
    assert results[3]["error"]["code"] == "subject_not_found"
    assert len(results[0]["faces"]) == 2  # every enrolled face, the best of which is the similarity
    assert results[0]["similarity"] == max(f["similarity"] for f in results[0]["faces"])
    for person, result in zip(people, results, strict=False):
        single = api.post("/v1/verify", files=[_file(probe, "image")],
                          data={"gallery": "batch", "subject_id": person}).json()
        assert abs(single["similarity"] - result["similarity"]) < 1e-5 and single["match"] == result["match"]
    too_many = [{"gallery": "batch", "subject_id": f"s{i}"} for i in range(6)]
    response = api.post("/v1/verify/batch", files=[_file(probe, "image")], data={"subjects": json.dumps(too_many)})
    assert response.status_code == 422 and "at most 5" in response.json()["error"]["message"]


def test_pairs_equal_single_verifies(api: TestClient, lfw_dir: Path) -> None:
    photos = [lfw_photo(lfw_dir, "Aaron_Peirsol", n) for n in (1, 2)] + \
        [lfw_photo(lfw_dir, p, 1) for p in ("Abdullah_Gul", "Adrien_Brody")]
    pairs = [[0, 1], [0, 2], [2, 3], [1, 1]]
    body = api.post("/v1/verify/batch", files=[_file(p, "photos") for p in photos],
                    data={"pairs": json.dumps(pairs)}).json()
    assert [(p["a"], p["b"]) for p in body["pairs"]] == [tuple(p) for p in pairs]
    for (a, b), result in zip(pairs, body["pairs"], strict=True):
        single = api.post("/v1/verify", files=[_file(photos[a], "image_a"), _file(photos[b], "image_b")]).json()
        assert abs(single["similarity"] - result["similarity"]) < 1e-5 and single["match"] == result["match"]
    assert body["pairs"][0]["match"] is True and body["pairs"][2]["match"] is False


@pytest.mark.parametrize(("data", "with_probe", "code"), [
    ({"pairs": "[[0, 5]]"}, False, "invalid_parameter"),  # beyond the photos
    ({"pairs": "[[0, 1]]"}, True, "invalid_parameter"),  # pairs with a probe
    ({}, False, "missing_field"),  # neither
    ({"pairs": "[[0, 1.5]]"}, False, "invalid_parameter"),
    ({"subjects": '[{"gallery": "../x", "subject_id": "a"}]'}, True, "invalid_parameter"),
    ({"pairs": "{}"}, False, "invalid_parameter"),
])
def test_bad_batches_are_refused(api: TestClient, lfw_dir: Path, data: dict[str, str], with_probe: bool,
                                 code: str) -> None:
    photo = lfw_photo(lfw_dir, "Aaron_Peirsol", 1)
    files = [_file(photo, "photos"), _file(photo, "photos")] + ([_file(photo, "image")] if with_probe else [])
    response = api.post("/v1/verify/batch", files=files, data=data)
    assert response.status_code == 422 and response.json()["error"]["code"] == code, response.text


def test_the_photo_bound_is_a_setting(model_dir: Path, lfw_dir: Path, tmp_path: Path) -> None:
    settings = Settings(model_dir=model_dir, store=f"sqlite:///{tmp_path / 'g.sqlite3'}", max_batch_photos=3)
    photo = lfw_photo(lfw_dir, "Aaron_Peirsol", 1)
    with TestClient(create_app(settings), raise_server_exceptions=False) as api:
        response = api.post("/v1/verify/batch", files=[_file(photo, "image"), *[_file(photo, "photos")] * 4])
        assert response.status_code == 422 and response.json()["error"]["code"] == "too_many_images"
        props = api.get("/openapi.json").json()["components"]["schemas"]
        assert any("photos" in s.get("properties", {}) for s in props.values())

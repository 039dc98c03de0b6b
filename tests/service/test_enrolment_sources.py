"""Idempotent enrolment through the API (`sources`, one per photo): a photo whose source the subject has is neither
analysed nor added again, and the answer says so; on real models and LFW photos."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.settings import Settings
from tests.conftest import lfw_photo
from tests.images import blank


@pytest.fixture(scope="module")
def api(model_dir: Path, lfw_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    store = tmp_path_factory.mktemp("store") / "g.sqlite3"
    with TestClient(create_app(Settings(model_dir=model_dir, store=f"sqlite:///{store}")),
                    raise_server_exceptions=False) as client:
        yield client


def _photos(lfw: Path, *numbers: int) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("images", (f"{n}.jpg", lfw_photo(lfw, "Aaron_Peirsol", n).read_bytes(), "image/jpeg")) for n in numbers]


def test_a_photo_is_enrolled_once(api: TestClient, lfw_dir: Path) -> None:
    url = "/v1/galleries/g/subjects/aaron/faces"
    first = api.post(url, files=_photos(lfw_dir, 1, 2), data={"sources": ["photo-1", "photo-2"]})
    assert first.status_code == 201
    faces = first.json()["faces"]
    assert [(f["source"], f["duplicate"]) for f in faces] == [("photo-1", False), ("photo-2", False)]
    assert all(f["quality"] is not None for f in faces)

    # a retry of the same photos plus a new one: only the new one is added
    again = api.post(url, files=_photos(lfw_dir, 1, 3, 2), data={"sources": ["photo-1", "photo-3", "photo-2"]})
    assert again.status_code == 201
    body = again.json()["faces"]
    assert [f["duplicate"] for f in body] == [True, False, True]
    assert body[0]["face_id"] == faces[0]["face_id"] and body[2]["face_id"] == faces[1]["face_id"]
    assert body[0]["quality"] is None  # not analysed again
    assert api.get("/v1/galleries/g").json()["faces"] == 3

    # every photo known: nothing is added (200), and a known source is not even decoded
    known = api.post(url, files=[("images", ("x.png", blank(), "image/png"))], data={"sources": ["photo-1"]})
    assert known.status_code == 200 and known.json()["faces"][0]["duplicate"] is True
    assert api.get("/v1/galleries/g").json()["faces"] == 3
    # the identify index holds each face once
    probe = {"image": ("p.jpg", lfw_photo(lfw_dir, "Aaron_Peirsol", 4).read_bytes(), "image/jpeg")}
    candidates = api.post("/v1/identify", files=probe, data={"gallery": "g", "top_k": "5"}).json()
    assert [c["subject_id"] for c in candidates["faces"][0]["candidates"]] == ["aaron"]


def test_sources_must_match_the_photos(api: TestClient, lfw_dir: Path) -> None:
    url = "/v1/galleries/g/subjects/bad/faces"
    count = api.post(url, files=_photos(lfw_dir, 1, 2), data={"sources": ["only-one"]})
    assert count.status_code == 422 and "one per image" in count.json()["error"]["message"]
    spaces = api.post(url, files=_photos(lfw_dir, 1), data={"sources": ["has space"]})
    assert spaces.status_code == 422 and spaces.json()["error"]["code"] == "invalid_parameter"
    assert api.post(url, files=_photos(lfw_dir, 1), data={"sources": ["x" * 129]}).status_code == 422
    assert api.get("/v1/galleries/g/subjects/bad").status_code == 404

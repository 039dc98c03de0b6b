"""The API the web console stands on, in process, on real models and LFW photos: face thumbnails (and the setting
that turns them off), subject search, empty galleries, `GET /v1/me`, the branch in detect, / and /ui."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.api.app import create_app
from service.settings import ApiKey, Settings
from tests.conftest import lfw_photo

ADMIN, VIEWER, SCOPED = "admin-key-123456", "viewer-key-123456", "scoped-key-123456"
KEYS = [ApiKey(key=ADMIN, name="operator"), ApiKey(key=VIEWER, name="auditor", read_only=True),
        ApiKey(key=SCOPED, galleries=["team"])]


def _client(model_dir: Path, store: Path, **settings: object) -> TestClient:
    return TestClient(create_app(Settings(model_dir=model_dir, store=f"sqlite:///{store}", **settings)),
                      raise_server_exceptions=False)


@pytest.fixture(scope="module")
def api(model_dir: Path, lfw_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with _client(model_dir, tmp_path_factory.mktemp("store") / "g.sqlite3", api_keys=KEYS) as client:
        client.headers["X-API-Key"] = ADMIN
        yield client


def _enrol(api: TestClient, lfw: Path, gallery: str, subject: str, person: str, numbers: list[int],
           name: str | None = None) -> dict:  # type: ignore[type-arg]
    files = [("images", (f"{n}.jpg", lfw_photo(lfw, person, n).read_bytes(), "image/jpeg")) for n in numbers]
    response = api.post(f"/v1/galleries/{gallery}/subjects/{subject}/faces", files=files,
                        data={"name": name} if name else {})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def test_thumbnail_is_the_aligned_face_and_goes_with_it(api: TestClient, lfw_dir: Path) -> None:
    enrolled = _enrol(api, lfw_dir, "thumbs", "aaron", "Aaron_Peirsol", [1, 2], "Aaron")
    first, second = (f["face_id"] for f in enrolled["faces"])
    assert enrolled["subject"]["first_face_id"] == first
    response = api.get(f"/v1/galleries/thumbs/subjects/aaron/faces/{first}/thumbnail")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    image = Image.open(io.BytesIO(response.content))
    assert image.size == (112, 112) and len(response.content) < 8 * 1024
    # aligned: the detector finds the face in it with its eyes where the alignment template puts them
    padded = Image.new("RGB", (224, 224), (128, 128, 128))
    padded.paste(image, (56, 56))
    buf = io.BytesIO()
    padded.save(buf, "PNG")
    [face] = api.post("/v1/detect", files={"image": ("t.png", buf.getvalue(), "image/png")}).json()["faces"]
    eyes = np.array(face["landmarks"][:2]) - 56
    assert np.abs(eyes - np.array([[38.29, 51.70], [73.53, 51.50]])).max() < 6
    listed = api.get("/v1/galleries/thumbs/subjects").json()["subjects"]
    assert [(s["subject_id"], s["first_face_id"]) for s in listed] == [("aaron", first)]

    assert api.get(f"/v1/galleries/thumbs/subjects/nobody/faces/{first}/thumbnail").json()["error"]["code"] == \
        "subject_not_found"
    assert api.get("/v1/galleries/thumbs/subjects/aaron/faces/999999/thumbnail").json()["error"]["code"] == \
        "face_not_found"
    assert api.delete(f"/v1/galleries/thumbs/subjects/aaron/faces/{first}").status_code == 200
    gone = api.get(f"/v1/galleries/thumbs/subjects/aaron/faces/{first}/thumbnail")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "face_not_found"
    assert api.get("/v1/galleries/thumbs/subjects/aaron").json()["first_face_id"] == second
    # read-only keys may see thumbnails, keys of other galleries may not
    assert api.get(f"/v1/galleries/thumbs/subjects/aaron/faces/{second}/thumbnail",
                   headers={"X-API-Key": VIEWER}).status_code == 200
    assert api.get(f"/v1/galleries/thumbs/subjects/aaron/faces/{second}/thumbnail",
                   headers={"X-API-Key": SCOPED}).json()["error"]["code"] == "forbidden"


def test_subjects_are_searched_by_id_or_name(api: TestClient, lfw_dir: Path) -> None:
    _enrol(api, lfw_dir, "search", "s-1", "Aaron_Peirsol", [1], "Ana Lopez")
    _enrol(api, lfw_dir, "search", "s-2", "Abdullah_Gul", [1], "Bruno Diaz")
    _enrol(api, lfw_dir, "search", "lopez-3", "Adrien_Brody", [1])

    def ids(query: str, **params: object) -> list[str]:
        body = api.get("/v1/galleries/search/subjects", params={"q": query, **params}).json()
        return [s["subject_id"] for s in body["subjects"]]

    assert ids("LOPEZ") == ["lopez-3", "s-1"]  # by id and by name, ignoring case
    assert ids("diaz") == ["s-2"]
    assert ids("zzz") == []
    page = api.get("/v1/galleries/search/subjects", params={"q": "lopez", "limit": 1}).json()
    assert [s["subject_id"] for s in page["subjects"]] == ["lopez-3"] and page["next_cursor"] == "lopez-3"
    assert ids("lopez", cursor=page["next_cursor"]) == ["s-1"]
    too_long = api.get("/v1/galleries/search/subjects", params={"q": "x" * 129})
    assert too_long.status_code == 422 and too_long.json()["error"]["code"] == "invalid_parameter"


def test_empty_gallery_is_created_by_put(api: TestClient, lfw_dir: Path) -> None:
    created = api.put("/v1/galleries/fresh")
    assert created.status_code == 201
    body = created.json()
    assert (body["name"], body["subjects"], body["faces"]) == ("fresh", 0, 0)
    assert body["embedder"].startswith("mobilefacenet@")
    assert api.put("/v1/galleries/fresh").status_code == 200  # exists: answered as it is
    assert "fresh" in [g["name"] for g in api.get("/v1/galleries").json()["galleries"]]
    # searching it works and finds nobody; enrolling fills it
    probe = {"image": ("p.jpg", lfw_photo(lfw_dir, "Aaron_Peirsol", 1).read_bytes(), "image/jpeg")}
    found = api.post("/v1/identify", files=probe, data={"gallery": "fresh"})
    assert found.status_code == 200 and found.json()["faces"][0]["candidates"] == []
    _enrol(api, lfw_dir, "fresh", "aaron", "Aaron_Peirsol", [2])
    assert api.get("/v1/galleries/fresh").json()["faces"] == 1
    assert api.put("/v1/galleries/nope", headers={"X-API-Key": VIEWER}).json()["error"]["code"] == "forbidden"
    assert api.put("/v1/galleries/other", headers={"X-API-Key": SCOPED}).json()["error"]["code"] == "forbidden"
    assert api.put("/v1/galleries/bad name").status_code == 422


def test_me_says_what_the_key_may_do(api: TestClient) -> None:
    assert api.get("/v1/me").json() == {"auth_required": True, "name": "operator", "read_only": False,
                                        "galleries": None, "metrics": True}
    assert api.get("/v1/me", headers={"X-API-Key": VIEWER}).json()["read_only"] is True
    scoped = api.get("/v1/me", headers={"X-API-Key": SCOPED}).json()
    assert (scoped["name"], scoped["galleries"], scoped["metrics"]) == (None, ["team"], False)
    refused = api.get("/v1/me", headers={"X-API-Key": "wrong-key-0000"})
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"


def test_detect_tells_the_branch_each_face_would_take(api: TestClient, lfw_dir: Path) -> None:
    photo = lfw_photo(lfw_dir, "Aaron_Peirsol", 1)
    big = api.post("/v1/detect", files={"image": ("a.jpg", photo.read_bytes(), "image/jpeg")}).json()["faces"][0]
    assert (big["branch"], big["resolution"]) == ("mobilefacenet", 112)
    small = Image.open(photo).resize((50, 50), Image.BOX)
    buf = io.BytesIO()
    small.save(buf, "PNG")
    tiny = api.post("/v1/detect", files={"image": ("s.png", buf.getvalue(), "image/png")}).json()["faces"]
    assert tiny and tiny[0]["resolution"] < 112 and tiny[0]["branch"] != "mobilefacenet"


def test_console_pages_and_their_headers(api: TestClient) -> None:
    root = api.get("/", headers={"X-API-Key": ""})
    assert root.status_code == 200 and 'href="/ui/"' in root.text and 'href="/docs"' in root.text
    page = api.get("/ui/", headers={"X-API-Key": ""})  # the pages hold no data: no key needed
    assert page.status_code == 200 and "<title>AnyFace console</title>" in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    script = api.get("/ui/console.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert "innerHTML" not in script.text  # text is always set as text
    assert api.get("/ui/missing.js").status_code == 404


def test_console_and_thumbnails_can_be_turned_off(model_dir: Path, lfw_dir: Path, tmp_path: Path) -> None:
    with _client(model_dir, tmp_path / "g.sqlite3", console=False, thumbnails=False) as api:
        assert api.get("/ui/").status_code == 404
        assert 'href="/ui/"' not in api.get("/").text
        face_id = _enrol(api, lfw_dir, "private", "aaron", "Aaron_Peirsol", [1])["faces"][0]["face_id"]
        response = api.get(f"/v1/galleries/private/subjects/aaron/faces/{face_id}/thumbnail")
        assert response.status_code == 404 and response.json()["error"]["code"] == "thumbnail_not_found"
    with _client(model_dir, tmp_path / "g.sqlite3") as api:  # turned on again: only new faces get one
        face_id = _enrol(api, lfw_dir, "private", "aaron", "Aaron_Peirsol", [2])["faces"][0]["face_id"]
        assert api.get(f"/v1/galleries/private/subjects/aaron/faces/{face_id}/thumbnail").status_code == 200

"""The REST API end to end, in process, on real models and real LFW photos."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.api.app import create_app
from service.settings import DecodeLimits, DetectionSettings, Settings
from tests.conftest import lfw_photo
from tests.images import blank, encode, side_by_side

MAX_BYTES = 300_000
MAX_PIXELS = 4_000_000


@pytest.fixture(scope="module", params=["faiss", "milvus"])
def api(request: pytest.FixtureRequest, model_dir: Path, lfw_dir: Path, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[TestClient]:
    """The API on each vector engine: the embedded FAISS index, and Milvus (a milvus-lite server)."""
    store = tmp_path_factory.mktemp("store") / "gallery.sqlite3"
    engine: dict[str, object] = {}
    milvus = None
    if request.param == "milvus":
        from service.settings import MilvusSettings
        from tests.milvus_server import MilvusLite

        milvus = MilvusLite(tmp_path_factory.mktemp("milvus")).start()
        engine = {"vector_engine": "milvus", "milvus": MilvusSettings(milvus_uri=milvus.uri)}
    settings = Settings(model_dir=model_dir, store=f"sqlite:///{store}", max_top_k=50,  # type: ignore[arg-type]
                        decode=DecodeLimits(max_image_bytes=MAX_BYTES, max_image_pixels=MAX_PIXELS), **engine)
    try:
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            yield client
    finally:
        if milvus is not None:
            milvus.stop()


def photo(lfw: Path, name: str, number: int = 1) -> tuple[str, bytes, str]:
    return (f"{name}_{number}.jpg", lfw_photo(lfw, name, number).read_bytes(), "image/jpeg")


def error_code(response: object) -> str:
    body = response.json()  # type: ignore[attr-defined]
    return str(body["error"]["code"])


def enroll(api: TestClient, lfw: Path, gallery: str, subject: str, name: str, numbers: list[int], **form: str):
    files = [("images", photo(lfw, name, n)) for n in numbers]
    return api.post(f"/v1/galleries/{gallery}/subjects/{subject}/faces", files=files, data={"name": name, **form})


def test_health_and_readiness(api: TestClient) -> None:
    assert api.get("/healthz").json() == {"status": "ok"}
    ready = api.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"models": True, "embedding_backend": True, "store": True, "store_writable": True,
                                      "gallery_index": True}
    assert "/v1/identify" in api.get("/openapi.json").json()["paths"]


def test_detect_returns_box_landmarks_score_size(api: TestClient, lfw_dir: Path) -> None:
    response = api.post("/v1/detect", files={"image": photo(lfw_dir, "Aaron_Peirsol")})
    assert response.status_code == 200
    body = response.json()
    assert body["image"] == {"width": 250, "height": 250}
    assert len(body["faces"]) == 1
    face = body["faces"][0]
    box = face["box"]
    assert 40 < box["x1"] < box["x2"] < 220 and 30 < box["y1"] < box["y2"] < 230
    assert len(face["landmarks"]) == 5
    (lx, ly), (rx, ry) = face["landmarks"][:2]
    assert lx < rx and abs(ly - ry) < 15  # eyes left to right, roughly level
    assert face["score"] > 0.8 and 80 < face["size"] < 180


def test_detect_finds_every_face(api: TestClient, lfw_dir: Path) -> None:
    group = side_by_side(lfw_photo(lfw_dir, "Aaron_Peirsol"), lfw_photo(lfw_dir, "Abdullah_Gul"),
                         lfw_photo(lfw_dir, "Adrien_Brody"))
    faces = api.post("/v1/detect", files={"image": ("g.jpg", group, "image/jpeg")}).json()["faces"]
    centres = sorted((f["box"]["x1"] + f["box"]["x2"]) / 2 for f in faces)
    assert len(faces) >= 3
    assert any(c < 250 for c in centres) and any(250 < c < 500 for c in centres) and any(c > 500 for c in centres)
    limited = api.post("/v1/detect", files={"image": ("g.jpg", group, "image/jpeg")}, data={"max_faces": "1"})
    assert len(limited.json()["faces"]) == 1


def test_verify_same_and_different_people(api: TestClient, lfw_dir: Path) -> None:
    same = api.post("/v1/verify", files={"image_a": photo(lfw_dir, "Aaron_Peirsol", 1),
                                         "image_b": photo(lfw_dir, "Aaron_Peirsol", 2)}).json()
    other = api.post("/v1/verify", files={"image_a": photo(lfw_dir, "Aaron_Peirsol", 1),
                                          "image_b": photo(lfw_dir, "Abdullah_Gul", 1)}).json()
    assert same["match"] is True and other["match"] is False
    assert same["similarity"] > same["threshold"] > other["similarity"]
    assert same["threshold"] == other["threshold"]
    assert same["face_a"]["branch"] == "mobilefacenet" and same["face_a"]["resolution"] == 112
    strict = api.post("/v1/verify", files={"image_a": photo(lfw_dir, "Aaron_Peirsol", 1),
                                           "image_b": photo(lfw_dir, "Aaron_Peirsol", 2)},
                      data={"threshold": "0.99"}).json()
    assert strict["threshold"] == 0.99 and strict["match"] is False


def test_enroll_identify_and_verify_against_subject(api: TestClient, lfw_dir: Path) -> None:
    people = ["Abdullah_Gul", "Alvaro_Uribe", "Ari_Fleischer", "Amelia_Vega"]
    for i, name in enumerate(people):
        response = enroll(api, lfw_dir, "staff", f"s{i}", name, [1, 2], metadata=json.dumps({"team": i}))
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["subject"]["subject_id"] == f"s{i}" and len(body["faces"]) == 2
        assert body["subject"]["metadata"] == {"team": i}
    # a third photo of each person is identified as that person, best first
    for i, name in enumerate(people):
        result = api.post("/v1/identify", files={"image": photo(lfw_dir, name, 3)},
                          data={"gallery": "staff", "top_k": "3"}).json()
        candidates = result["faces"][0]["candidates"]
        assert candidates[0]["subject_id"] == f"s{i}" and candidates[0]["name"] == name
        assert candidates == sorted(candidates, key=lambda c: -c["similarity"])
        assert all(c["similarity"] >= result["threshold"] for c in candidates)
    # someone never enrolled is unknown: no candidate above the threshold
    unknown = api.post("/v1/identify", files={"image": photo(lfw_dir, "Aaron_Peirsol", 1)},
                       data={"gallery": "staff"}).json()
    assert unknown["faces"][0]["candidates"] == []
    # with threshold -1 every subject is a candidate, capped by top_k
    everyone = api.post("/v1/identify", files={"image": photo(lfw_dir, "Aaron_Peirsol", 1)},
                        data={"gallery": "staff", "threshold": "-1", "top_k": "3"}).json()
    assert len(everyone["faces"][0]["candidates"]) == 3
    check = api.post("/v1/verify", files={"image": photo(lfw_dir, "Amelia_Vega", 3)},
                     data={"gallery": "staff", "subject_id": "s3"}).json()
    assert check["match"] is True and check["subject"]["name"] == "Amelia_Vega"
    mismatch = api.post("/v1/verify", files={"image": photo(lfw_dir, "Amelia_Vega", 3)},
                        data={"gallery": "staff", "subject_id": "s0"}).json()
    assert mismatch["match"] is False


def test_identify_all_faces_of_a_group_photo(api: TestClient, lfw_dir: Path) -> None:
    assert enroll(api, lfw_dir, "group", "brody", "Adrien_Brody", [1]).status_code == 201
    assert enroll(api, lfw_dir, "group", "toledo", "Alejandro_Toledo", [1]).status_code == 201
    group = side_by_side(lfw_photo(lfw_dir, "Adrien_Brody", 2), lfw_photo(lfw_dir, "Alejandro_Toledo", 2))
    result = api.post("/v1/identify", files={"image": ("g.jpg", group, "image/jpeg")},
                      data={"gallery": "group", "all_faces": "true"}).json()
    found = {f["candidates"][0]["subject_id"] for f in result["faces"] if f["candidates"]}
    assert {"brody", "toledo"} <= found


def test_enrollment_refuses_several_faces_unless_asked(api: TestClient, lfw_dir: Path) -> None:
    group = side_by_side(lfw_photo(lfw_dir, "Adrien_Brody", 3), lfw_photo(lfw_dir, "Alejandro_Toledo", 3))
    url = "/v1/galleries/multi/subjects/p1/faces"
    refused = api.post(url, files=[("images", ("g.jpg", group, "image/jpeg"))])
    assert refused.status_code == 422 and error_code(refused) == "multiple_faces"
    assert api.get("/v1/galleries/multi").status_code == 404  # nothing written
    accepted = api.post(url, files=[("images", ("g.jpg", group, "image/jpeg"))], data={"allow_multiple": "true"})
    assert accepted.status_code == 201 and len(accepted.json()["faces"]) == 1


def test_gallery_management(api: TestClient, lfw_dir: Path) -> None:
    names = ["Ari_Fleischer", "Amelie_Mauresmo", "Ana_Guevara", "Alvaro_Uribe", "Anna_Kournikova"]
    for i, name in enumerate(names):
        assert enroll(api, lfw_dir, "mgmt", f"m{i}", name, [1]).status_code == 201
    galleries = {g["name"]: g for g in api.get("/v1/galleries").json()["galleries"]}
    assert galleries["mgmt"]["subjects"] == 5 and galleries["mgmt"]["faces"] == 5
    info = api.get("/v1/galleries/mgmt").json()
    assert info["index_type"] in ("flat", "milvus-hnsw") and info["indexed_faces"] == 5  # per engine
    assert info["index_params"] == {} if info["index_type"] == "flat" else info["index_params"]["index_type"] == "HNSW"
    # cursor pagination visits every subject once
    seen, cursor = [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = api.get("/v1/galleries/mgmt/subjects", params=params).json()
        seen += [s["subject_id"] for s in page["subjects"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"m{i}" for i in range(5)]
    # add a second face, rename, delete a face, delete the subject
    assert enroll(api, lfw_dir, "mgmt", "m0", "Ari_Fleischer", [2]).status_code == 201
    subject = api.get("/v1/galleries/mgmt/subjects/m0").json()
    assert subject["face_count"] == 2 and len(subject["faces"]) == 2
    patched = api.patch("/v1/galleries/mgmt/subjects/m0", json={"name": "Agassi", "metadata": {"sport": "tennis"}})
    assert patched.json()["name"] == "Agassi" and patched.json()["metadata"] == {"sport": "tennis"}
    face_id = subject["faces"][0]["face_id"]
    assert api.delete(f"/v1/galleries/mgmt/subjects/m0/faces/{face_id}").json() == {"deleted": True}
    gone = api.delete(f"/v1/galleries/mgmt/subjects/m0/faces/{face_id}")
    assert gone.status_code == 404 and error_code(gone) == "face_not_found"
    assert api.get("/v1/galleries/mgmt").json()["indexed_faces"] == 5
    assert api.delete("/v1/galleries/mgmt/subjects/m1").status_code == 200
    probe = api.post("/v1/identify", files={"image": photo(lfw_dir, "Amelie_Mauresmo", 2)},
                     data={"gallery": "mgmt", "threshold": "-1", "top_k": "10"}).json()
    assert "m1" not in {c["subject_id"] for c in probe["faces"][0]["candidates"]}
    assert api.get("/v1/galleries/mgmt/subjects/m1").status_code == 404
    assert api.delete("/v1/galleries/mgmt").status_code == 200
    assert api.get("/v1/galleries/mgmt").status_code == 404
    missing = api.post("/v1/identify", files={"image": photo(lfw_dir, "Andy_Roddick", 2)}, data={"gallery": "mgmt"})
    assert missing.status_code == 404 and error_code(missing) == "gallery_not_found"


def test_image_formats(api: TestClient, lfw_dir: Path) -> None:
    original = Image.open(lfw_photo(lfw_dir, "Aaron_Peirsol"))
    rgba = original.convert("RGBA")
    variants = {
        "png": encode(original, "PNG"),
        "webp": encode(original, "WEBP", quality=90),
        "gray": encode(original.convert("L"), "PNG"),
        "alpha": encode(rgba, "PNG"),
    }
    reference = api.post("/v1/detect", files={"image": photo(lfw_dir, "Aaron_Peirsol")}).json()["faces"][0]
    for label, data in variants.items():
        faces = api.post("/v1/detect", files={"image": (f"x.{label}", data, "application/octet-stream")}).json()
        assert len(faces["faces"]) == 1, label
        assert abs(faces["faces"][0]["box"]["x1"] - reference["box"]["x1"]) < 6, label


def test_exif_orientation_is_applied(api: TestClient, lfw_dir: Path) -> None:
    original = Image.open(lfw_photo(lfw_dir, "Aaron_Peirsol"))
    rotated = original.transpose(Image.Transpose.ROTATE_90)  # stored sideways ...
    exif = Image.Exif()
    exif[0x0112] = 6  # ... with the tag saying "rotate 90 CW to display"
    data = encode(rotated, "JPEG", exif=exif.tobytes(), quality=95)
    result = api.post("/v1/verify", files={"image_a": ("r.jpg", data, "image/jpeg"),
                                           "image_b": photo(lfw_dir, "Aaron_Peirsol", 2)}).json()
    assert result["match"] is True
    (lx, ly), (rx, ry) = result["face_a"]["landmarks"][:2]
    assert lx < rx and abs(ly - ry) < 15  # upright after orientation


@pytest.mark.parametrize(
    ("files", "data", "status", "code"),
    [
        ({"image": ("x.jpg", b"this is not an image", "image/jpeg")}, {}, 422, "invalid_image"),
        ({"image": ("x.jpg", b"", "image/jpeg")}, {}, 422, "empty_image"),
        ({"image": ("x.png", "ONE_BY_ONE", "image/png")}, {}, 422, "image_too_small"),
        ({"image": ("x.jpg", "TRUNCATED", "image/jpeg")}, {}, 422, "invalid_image"),
        ({"image": ("x.png", "TOO_MANY_PIXELS", "image/png")}, {}, 413, "image_too_many_pixels"),
        ({"image": ("x.bmp", "TOO_MANY_BYTES", "image/bmp")}, {}, 413, "image_too_large"),
        ({}, {}, 422, "missing_field"),
    ],
)
def test_bad_images_get_specific_4xx(api: TestClient, lfw_dir: Path, files: dict, data: dict, status: int,
                                     code: str) -> None:
    jpeg = lfw_photo(lfw_dir, "Aaron_Peirsol").read_bytes()
    generated = {
        "ONE_BY_ONE": encode(Image.new("RGB", (1, 1)), "PNG"),
        "BLANK": blank(),
        "TRUNCATED": jpeg[: len(jpeg) // 3],
        "TOO_MANY_PIXELS": encode(Image.new("RGB", (2100, 2100)), "PNG"),
        "TOO_MANY_BYTES": encode(Image.new("RGB", (400, 400)), "BMP"),
    }
    files = {k: (n, generated.get(v, v) if isinstance(v, str) else v, t) for k, (n, v, t) in files.items()}
    for route, extra in [("/v1/detect", {}), ("/v1/identify", {"gallery": "staff"})]:
        if route == "/v1/identify" and code == "no_face":
            continue  # checked below with an existing gallery
        response = api.post(route, files=files or None, data={**extra, **data})
        assert response.status_code == status, (route, response.text)
        assert error_code(response) == code, (route, response.text)


def test_bad_parameters_get_specific_4xx(api: TestClient, lfw_dir: Path) -> None:
    assert enroll(api, lfw_dir, "params", "p0", "Aaron_Peirsol", [1]).status_code == 201
    image = {"image": photo(lfw_dir, "Aaron_Peirsol", 2)}
    cases = [
        ("/v1/identify", image, {"gallery": "params", "top_k": "0"}, 422, "invalid_parameter"),
        ("/v1/identify", image, {"gallery": "params", "top_k": "51"}, 422, "invalid_parameter"),
        ("/v1/identify", image, {"gallery": "params", "top_k": "many"}, 422, "invalid_parameter"),
        ("/v1/identify", image, {"gallery": "params", "threshold": "2"}, 422, "invalid_parameter"),
        ("/v1/identify", image, {}, 422, "missing_field"),
        ("/v1/identify", image, {"gallery": "nope"}, 404, "gallery_not_found"),
        ("/v1/identify", {"image": ("b.png", blank(), "image/png")}, {"gallery": "params"}, 422, "no_face"),
        ("/v1/identify", image, {"gallery": "bad/name"}, 422, "invalid_parameter"),
        ("/v1/verify", {"image_a": ("b.png", blank(), "image/png"), "image_b": photo(lfw_dir, "Aaron_Peirsol")}, {},
         422, "no_face"),
        ("/v1/verify", image, {}, 422, "missing_field"),
        ("/v1/verify", {"image_a": photo(lfw_dir, "Aaron_Peirsol")}, {}, 422, "missing_field"),
        ("/v1/verify", image, {"gallery": "params", "subject_id": "ghost"}, 404, "subject_not_found"),
        ("/v1/verify", image, {"gallery": "ghosts", "subject_id": "p0"}, 404, "gallery_not_found"),
        ("/v1/galleries/params/subjects/p1/faces", None, {}, 422, "missing_field"),
    ]
    for route, files, data, status, code in cases:
        response = api.post(route, files=files, data=data)
        assert (response.status_code, error_code(response)) == (status, code), (route, data, response.text)
    bad_meta = api.post("/v1/galleries/params/subjects/p2/faces", files=[("images", photo(lfw_dir, "Abdullah_Gul"))],
                        data={"metadata": "{not json"})
    assert (bad_meta.status_code, error_code(bad_meta)) == (422, "invalid_metadata")
    assert api.get("/v1/galleries/params/subjects/p2").status_code == 404
    assert error_code(api.get("/v1/galleries/params/subjects/ghost")) == "subject_not_found"
    assert error_code(api.get("/v1/galleries/ghosts/subjects/p0")) == "gallery_not_found"
    assert error_code(api.get("/v1/galleries/params/subjects", params={"limit": 0})) == "invalid_parameter"
    assert api.patch("/v1/galleries/params/subjects/ghost", json={"name": "x"}).status_code == 404


def test_failed_enrollment_writes_nothing(api: TestClient, lfw_dir: Path) -> None:
    files = [("images", photo(lfw_dir, "Abdullah_Gul", 1)), ("images", ("b.png", blank(), "image/png"))]
    response = api.post("/v1/galleries/atomic/subjects/a1/faces", files=files)
    assert response.status_code == 422 and error_code(response) == "no_face"
    assert "images[1]" in response.json()["error"]["message"]
    assert api.get("/v1/galleries/atomic").status_code == 404


def stage_cpu_seconds(text: str) -> dict[str, float]:
    found = re.findall(r'^anyface_stage_cpu_seconds_total\{stage="([^"]+)"\} (\S+)$', text, re.MULTILINE)
    return {stage: float(value) for stage, value in found}


def test_metrics_are_exported(api: TestClient, lfw_dir: Path) -> None:
    cpu_before = stage_cpu_seconds(api.get("/metrics").text)
    api.post("/v1/verify", files={"image_a": photo(lfw_dir, "Aaron_Peirsol", 1),
                                  "image_b": photo(lfw_dir, "Aaron_Peirsol", 2)})
    text = api.get("/metrics").text
    cpu_after = stage_cpu_seconds(text)
    for stage in ("decode", "detect", "landmarks", "align", "embed"):  # each stage's thread spent CPU on it
        assert cpu_after.get(stage, 0.0) > cpu_before.get(stage, 0.0), stage
    assert 'anyface_http_requests_total{method="POST",route="/v1/verify",status="200"}' in text
    for stage in ("decode", "detect", "align", "embed", "search"):
        assert f'anyface_stage_duration_seconds_count{{stage="{stage}"}}' in text, stage
    assert 'anyface_faces_embedded_total{branch="112"}' in text
    assert "anyface_embed_batch_size_bucket" in text and "anyface_faces_per_request_bucket" in text
    staff = api.get("/v1/galleries/staff").json()  # the gauges follow the gallery, on either engine
    assert f'anyface_gallery_faces{{gallery="staff"}} {float(staff["faces"])}' in text
    assert f'anyface_gallery_subjects{{gallery="staff"}} {float(staff["subjects"])}' in text
    assert 'anyface_errors_total{code="no_face"}' in text


def test_api_keys(model_dir: Path, lfw_dir: Path, tmp_path: Path) -> None:
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps([
        {"key": "reader-key-123", "read_only": True},
        {"key": "team-a-key-123", "galleries": ["team-a"]},
    ]))
    settings = Settings(model_dir=model_dir, store=f"sqlite:///{tmp_path / 'g.sqlite3'}",
                        api_keys="admin-key-1234", api_keys_file=keys)  # type: ignore[arg-type]
    with TestClient(create_app(settings)) as client:
        url = "/v1/galleries/team-a/subjects/x/faces"
        files = [("images", photo(lfw_dir, "Abdullah_Gul"))]
        assert error_code(client.get("/v1/galleries")) == "unauthorized"
        assert client.get("/v1/galleries", headers={"X-API-Key": "wrong-key-000"}).status_code == 401
        assert client.get("/healthz").status_code == 200  # probes need no key
        denied = client.post(url, files=files, headers={"X-API-Key": "reader-key-123"})
        assert (denied.status_code, error_code(denied)) == (403, "forbidden")
        assert client.post(url, files=files, headers={"X-API-Key": "team-a-key-123"}).status_code == 201
        other = client.post("/v1/galleries/team-b/subjects/x/faces", files=files,
                            headers={"X-API-Key": "team-a-key-123"})
        assert other.status_code == 403
        listed = client.get("/v1/galleries", headers={"X-API-Key": "reader-key-123"}).json()["galleries"]
        assert [g["name"] for g in listed] == ["team-a"]
        assert client.get("/v1/galleries/team-a", headers={"X-API-Key": "admin-key-1234"}).status_code == 200


def test_overload_is_shed_with_503(model_dir: Path, lfw_dir: Path, tmp_path: Path) -> None:
    """Beyond `max_inflight_requests` a worker answers 503 `overloaded` at once instead of queueing."""
    from concurrent.futures import ThreadPoolExecutor

    settings = Settings(model_dir=model_dir, store=f"sqlite:///{tmp_path / 'g.sqlite3'}", max_inflight_requests=1)
    files = {"image_a": photo(lfw_dir, "Aaron_Peirsol", 1), "image_b": photo(lfw_dir, "Aaron_Peirsol", 2)}
    with TestClient(create_app(settings)) as client, ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: client.post("/v1/verify", files=files), range(24)))
        assert client.get("/readyz").status_code == 200  # probes are never shed
    codes = [r.status_code for r in responses]
    assert set(codes) == {200, 503}, codes
    shed = [r for r in responses if r.status_code == 503]
    assert all(error_code(r) == "overloaded" and r.headers["retry-after"] == "1" for r in shed)


def test_scrfd_detector_and_flip_test(model_dir: Path, lfw_dir: Path, tmp_path: Path) -> None:
    """The SCRFD option with mirrored-crop embedding: same answers on real pairs, its own score threshold."""
    settings = Settings(model_dir=model_dir, store=f"sqlite:///{tmp_path / 'g.sqlite3'}",
                        detection=DetectionSettings(detector="scrfd"), flip_test=True)
    assert settings.detection.score_threshold == 0.5
    with TestClient(create_app(settings)) as client:
        faces = client.post("/v1/detect", files={"image": photo(lfw_dir, "Aaron_Peirsol")}).json()["faces"]
        assert len(faces) == 1 and 80 < faces[0]["size"] < 180
        same = client.post("/v1/verify", files={"image_a": photo(lfw_dir, "Aaron_Peirsol", 1),
                                                "image_b": photo(lfw_dir, "Aaron_Peirsol", 2)}).json()
        other = client.post("/v1/verify", files={"image_a": photo(lfw_dir, "Aaron_Peirsol", 1),
                                                 "image_b": photo(lfw_dir, "Abdullah_Gul", 1)}).json()
    assert same["match"] is True and other["match"] is False

"""Input validation (issue "Hardening"): subject metadata and names, and numeric path, query and form parameters.

Metadata and names follow one rule in the core (`service/core/metadata.py`), checked before anything is written, for
enrolment and PATCH alike; whatever a store holds (written before that rule, or by hand) can still be read, listed,
replaced and deleted. Numeric parameters out of range are 422 `invalid_parameter`, never 500.

The unit tests need nothing; the API tests run the real models on LFW photos (`ANYFACE_MODEL_MIRROR`,
`ANYFACE_DATA_DIR`).
"""

from __future__ import annotations

import json
import math
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.errors import FaceNotFound, InvalidParameter
from service.gallery.sqlite_store import SqliteStore
from service.gallery.store import NewFace, Subject
from service.settings import DecodeLimits, Settings
from tests.conftest import lfw_photo

MAX_METADATA_BYTES = 16_384
MAX_METADATA_DEPTH = 16
MAX_ID = 2**63 - 1


def nested(depth: int, leaf: Any = 1) -> dict[str, Any]:
    """A metadata object `depth` containers deep: the object itself, then lists."""
    value: Any = leaf
    for _ in range(depth - 1):
        value = [value]
    return {"a": value}


def compact_size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8"))


def of_size(size: int) -> dict[str, str]:
    """An object whose compact JSON is exactly `size` bytes."""
    return {"k": "x" * (size - len('{"k":""}'))}


# -- the validator, without models ------------------------------------------------------------------------------
def limits(**overrides: int) -> Any:
    from service.core.metadata import SubjectLimits

    return SubjectLimits(**({"max_name_chars": 256, "max_metadata_bytes": MAX_METADATA_BYTES,
                             "max_metadata_depth": MAX_METADATA_DEPTH} | overrides))


def refusal(value: Any, **overrides: int) -> str:
    from service.core.metadata import check_metadata

    with pytest.raises(InvalidParameter) as caught:
        check_metadata(value, limits(**overrides))
    assert caught.value.code == "invalid_metadata"
    return caught.value.message


def test_validator_accepts_what_fits_exactly() -> None:
    from service.core.metadata import check_metadata

    assert check_metadata(None, limits()) is None
    mixed = {"a": None, "b": [True, False, 1, -2.5, 1e300, "é😀\n\"\\\x01\u2028"]}
    for value in ({}, mixed, nested(MAX_METADATA_DEPTH), of_size(MAX_METADATA_BYTES),
                  {"k" * (MAX_METADATA_BYTES - 6): 1}, {"n": 10**4000}):
        assert check_metadata(value, limits()) is value


def test_validator_counts_bytes_as_compact_json() -> None:
    from service.core.metadata import metadata_problem

    rng = np.random.default_rng(7)
    alphabet = ["a", "é", "😀", '"', "\\", "\n", "\x01", "\u2028", "/", " "]
    for _ in range(200):
        value: dict[str, Any] = {}
        for i in range(int(rng.integers(0, 6))):
            text = "".join(rng.choice(alphabet, size=int(rng.integers(0, 12))))
            value[f"{text}{i}"] = [text, float(rng.normal()) * 10.0 ** int(rng.integers(-30, 30)),
                                   int(rng.integers(-(10**9), 10**9)), {"t": text, "n": None, "b": True}]
        size = compact_size(value)
        assert metadata_problem(value, limits(max_metadata_bytes=size)) is None, value
        assert "bytes" in str(metadata_problem(value, limits(max_metadata_bytes=size - 1))), value


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ([1, 2], "object"),
        ("{}", "object"),
        (nested(MAX_METADATA_DEPTH + 1), "deeper"),
        (nested(300), "deeper"),
        (nested(100_000), "deeper"),  # no recursion: a Python caller may hand over anything
        ({"a": [1, {"b": float("nan")}]}, "metadata.a[1].b"),
        ({"a": float("inf")}, "finite"),
        ({"a": -float("inf")}, "finite"),
        ({"a": "\ud800"}, "surrogate"),
        ({"\udfff": 1}, "surrogate"),
        ({1: "x"}, "string"),
        ({"a": (1, 2)}, "tuple"),
        ({"a": b"x"}, "bytes"),
        ({"a": {1, 2}}, "set"),
        (of_size(MAX_METADATA_BYTES + 1), "bytes"),
        ({"k" * (MAX_METADATA_BYTES - 4): 1}, "bytes"),  # a long key counts too
        ({"k": "x" * 5_000_000}, "bytes"),
        ({str(i): i for i in range(200_000)}, "bytes"),
        ({"a": "é" * (MAX_METADATA_BYTES // 2)}, "bytes"),  # bytes, not characters
    ],
)
def test_validator_refuses(value: Any, words: str) -> None:
    assert words in refusal(value)


def test_name_rule() -> None:
    from service.core.metadata import check_name

    assert check_name(None, limits()) is None
    assert check_name("n" * 256, limits()) == "n" * 256
    assert check_name("", limits()) == ""
    for bad in ("n" * 257, "a\ud800b", 5):
        with pytest.raises(InvalidParameter) as caught:
            check_name(bad, limits())
        assert caught.value.code == "invalid_parameter" and caught.value.message.startswith("name")


def test_stored_subjects_are_always_presentable() -> None:
    from service.core.metadata import presentable

    good = Subject("g", "s", "Ann", {"team": 1}, 0.0, 0.0)
    assert presentable(good, limits()) is good
    for bad in (nested(300), {"x": float("nan")}, {"x": "\ud800"}, of_size(MAX_METADATA_BYTES + 1)):
        shown = presentable(Subject("g", "s", "Ann", bad, 0.0, 0.0), limits())
        assert shown.metadata == {} and shown.name == "Ann"
        assert "cannot be shown" in getattr(shown.metadata, "reason", "")
    renamed = presentable(Subject("g", "s", "A\ud800", {}, 0.0, 0.0), limits())
    assert renamed.name == "A\ufffd" and renamed.metadata == {}


def test_form_metadata_parse_errors_are_invalid_metadata() -> None:
    from service.api.params import parse_metadata

    assert parse_metadata(None, 65_536) is None and parse_metadata("", 65_536) is None
    assert math.isnan(parse_metadata('{"a": NaN}', 65_536)["a"])  # JSON syntax here; the core refuses the value
    for text in ("{not json", "[" * 100_000, '{"a": ' + "9" * 5000 + "}", " " * 65_537 + "{}"):
        with pytest.raises(InvalidParameter) as caught:
            parse_metadata(text, 65_536)
        assert caught.value.code == "invalid_metadata", text[:20]


def test_core_checks_name_and_metadata_before_anything_is_written(tmp_path: Path) -> None:
    """Whatever the HTTP edge lets through (the request guard caps JSON bodies at `max_json_body_bytes`), the core
    refuses it before it reads a photo or writes: the pipeline here is None, so reaching it would fail otherwise."""
    import anyio

    from service.core.galleries import Galleries
    from service.core.inputs import BytesImage
    from service.gallery.faiss_manager import FaissGalleryManager
    from service.gallery.store import EmbedderCheck
    from service.settings import IndexSettings

    store = SqliteStore(tmp_path / "g.sqlite3")
    _fill(store)
    settings = Settings(max_metadata_bytes=MAX_METADATA_BYTES, max_metadata_depth=MAX_METADATA_DEPTH)
    galleries = Galleries(settings, FaissGalleryManager(store, 8, IndexSettings(faiss_gpu=False)), None,  # type: ignore[arg-type]
                          EmbedderCheck("mobilefacenet@test", extends_unrecorded=True))
    photo = [BytesImage(b"not read")]

    async def refused(call: Any) -> str:
        with pytest.raises(InvalidParameter) as caught:
            await call()
        return caught.value.code

    async def scenario() -> None:
        for metadata in ({"blob": "x" * 5_000_000}, nested(300), {"a": float("nan")}, {"a": "\ud800"}):
            assert await refused(lambda m=metadata: galleries.update_subject("g", "alice", None, m)) == \
                "invalid_metadata"
            assert await refused(lambda m=metadata: galleries.enroll("g", "alice", photo, None, m)) == \
                "invalid_metadata"
            assert await refused(lambda m=metadata: galleries.enroll("g", "carol", photo, None, m)) == \
                "invalid_metadata"
        for name in ("x" * 257, "\udc00"):
            assert await refused(lambda n=name: galleries.update_subject("g", "alice", n, None)) == \
                "invalid_parameter"
            assert await refused(lambda n=name: galleries.enroll("g", "alice", photo, n, None)) == \
                "invalid_parameter"
        subject = await galleries.require_subject("g", "alice")
        assert (subject.name, subject.metadata, subject.face_count) == ("Alice", {"a": 1}, 1)
        assert store.get_subject("g", "carol") is None
        for face_id in (0, -1, 2**63, 2**70):
            with pytest.raises(FaceNotFound):
                await galleries.delete_face("g", "alice", face_id)

    anyio.run(scenario)
    store.close()


# -- stores: what is stored can always be read ------------------------------------------------------------------
def _fill(store: Any) -> None:
    store.add_faces("g", "alice", "Alice", {"a": 1}, [NewFace(np.ones(8, dtype=np.float32), None, "112")])
    store.add_faces("g", "bob", "Bob", None, [NewFace(np.ones(8, dtype=np.float32), None, "112")])


def test_sqlite_store_reads_undecodable_metadata(tmp_path: Path) -> None:
    path = tmp_path / "g.sqlite3"
    store = SqliteStore(path)
    _fill(store)
    with sqlite3.connect(path) as db:
        for text in ("{not json", "[1, 2]", "null", "[" * 100_000 + "]" * 100_000, '{"a": ' + "9" * 5000 + "}"):
            db.execute("UPDATE subjects SET metadata = ? WHERE subject_id = 'alice'", (text,))
            db.commit()
            subject = store.get_subject("g", "alice")
            assert subject is not None and subject.metadata == {} and subject.face_count == 1
            page, _ = store.list_subjects("g", None, 10)
            assert [(s.subject_id, s.metadata) for s in page] == [("alice", {}), ("bob", {})]
    assert store.delete_subject("g", "alice") is not None
    store.close()


def test_redis_store_reads_undecodable_metadata(request: pytest.FixtureRequest) -> None:
    from service.gallery.redis_store import RedisStore

    server = request.getfixturevalue("redis_server")
    prefix = f"t{uuid.uuid4().hex[:12]}:"
    store = RedisStore(f"{server.url}?prefix={prefix}")
    _fill(store)
    import redis

    client = redis.Redis(port=server.port)
    for text in ("{not json", "[1, 2]", "null", "[" * 100_000 + "]" * 100_000):
        client.hset(f"{prefix}s:g:alice", "metadata", text)
        subject = store.get_subject("g", "alice")
        assert subject is not None and subject.metadata == {} and subject.face_count == 1
        page, _ = store.list_subjects("g", None, 10)
        assert [(s.subject_id, s.metadata) for s in page] == [("alice", {}), ("bob", {})]
    client.hdel(f"{prefix}s:g:alice", "metadata")
    subject = store.get_subject("g", "alice")
    assert subject is not None and subject.metadata == {}
    assert store.delete_subject("g", "alice") is not None
    store.close()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    import shutil

    from tests.gallery.test_redis_store import _RedisServer

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (Debian/Ubuntu: apt-get install redis-server)")
    server = _RedisServer(binary, tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


# -- the API, with real models ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("store") / "gallery.sqlite3"


@pytest.fixture(scope="module")
def api(model_dir: Path, lfw_dir: Path, store_path: Path) -> Iterator[TestClient]:
    settings = Settings(model_dir=model_dir, store=f"sqlite:///{store_path}", max_top_k=50,
                        max_metadata_bytes=MAX_METADATA_BYTES, max_metadata_depth=MAX_METADATA_DEPTH,
                        decode=DecodeLimits(max_image_bytes=300_000))
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def photo(lfw: Path, name: str = "Aaron_Peirsol", number: int = 1) -> tuple[str, bytes, str]:
    return (f"{name}_{number}.jpg", lfw_photo(lfw, name, number).read_bytes(), "image/jpeg")


def enroll(api: TestClient, lfw: Path, gallery: str, subject: str, **form: str) -> Any:
    return api.post(f"/v1/galleries/{gallery}/subjects/{subject}/faces", files=[("images", photo(lfw))], data=form)


def patch(api: TestClient, gallery: str, subject: str, body: str) -> Any:
    return api.patch(f"/v1/galleries/{gallery}/subjects/{subject}", content=body,
                     headers={"content-type": "application/json"})


def status(response: Any) -> tuple[int, str | None]:
    code = response.json().get("error", {}).get("code") if response.status_code >= 400 else None
    return response.status_code, code


def face_count(api: TestClient, gallery: str, subject: str) -> int:
    response = api.get(f"/v1/galleries/{gallery}/subjects/{subject}")
    assert response.status_code == 200, response.text
    return int(response.json()["face_count"])


BAD_METADATA = [
    json.dumps(nested(300)),  # 1.8 KB: the poisoned subjects of the issue
    json.dumps(nested(MAX_METADATA_DEPTH + 1)),
    '{"a": NaN}',
    '{"a": [Infinity]}',
    '{"a": {"b": -Infinity}}',
    '{"a": "\\ud800"}',
    '{"\\udfff": 1}',
    json.dumps(of_size(MAX_METADATA_BYTES + 1)),
    json.dumps({"k" * MAX_METADATA_BYTES: 1}),
]


@pytest.mark.parametrize("text", BAD_METADATA, ids=lambda t: t[:24])
def test_enrolment_refuses_bad_metadata_before_writing(api: TestClient, lfw_dir: Path, text: str) -> None:
    new = enroll(api, lfw_dir, "poison", "fresh", metadata=text)
    assert status(new) == (422, "invalid_metadata"), new.text
    assert api.get("/v1/galleries/poison/subjects/fresh").status_code == 404  # nothing written
    assert enroll(api, lfw_dir, "poison", "kept", metadata='{"ok": 1}').status_code == 201
    before = face_count(api, "poison", "kept")
    again = enroll(api, lfw_dir, "poison", "kept", metadata=text)
    assert status(again) == (422, "invalid_metadata"), again.text
    assert face_count(api, "poison", "kept") == before  # no face written by a refused enrolment
    assert api.get("/v1/galleries/poison/subjects/kept").json()["metadata"] == {"ok": 1}
    assert api.get("/v1/galleries/poison/subjects").status_code == 200


@pytest.mark.parametrize("text", BAD_METADATA, ids=lambda t: t[:24])
def test_patch_refuses_bad_metadata_before_writing(api: TestClient, lfw_dir: Path, text: str) -> None:
    assert enroll(api, lfw_dir, "poison-patch", "p", name="P", metadata='{"ok": 1}').status_code == 201
    refused = patch(api, "poison-patch", "p", '{"name": "Q", "metadata": ' + text + "}")
    assert status(refused) == (422, "invalid_metadata"), refused.text
    subject = api.get("/v1/galleries/poison-patch/subjects/p").json()
    assert (subject["name"], subject["metadata"]) == ("P", {"ok": 1})  # neither field written
    assert api.get("/v1/galleries/poison-patch/subjects").status_code == 200


def test_metadata_at_the_caps_is_accepted_in_both_places(api: TestClient, lfw_dir: Path) -> None:
    for value in (of_size(MAX_METADATA_BYTES), nested(MAX_METADATA_DEPTH), {"é": "😀" * 4000}):
        assert compact_size(value) <= MAX_METADATA_BYTES
        created = enroll(api, lfw_dir, "caps", "c", metadata=json.dumps(value))
        assert created.status_code == 201 and created.json()["subject"]["metadata"] == value
        patched = patch(api, "caps", "c", json.dumps({"metadata": value}))
        assert patched.status_code == 200 and patched.json()["metadata"] == value
        assert api.get("/v1/galleries/caps/subjects/c").json()["metadata"] == value


def test_large_patch_is_refused(api: TestClient, lfw_dir: Path) -> None:
    """A multi-megabyte PATCH was accepted and stored; the same cap as enrolment applies (the request guard may
    refuse it earlier, with 413, while it is read)."""
    assert enroll(api, lfw_dir, "big", "b", metadata='{"ok": 1}').status_code == 201
    for value in ({"blob": "x" * 5_000_000}, {str(i): i for i in range(300_000)}):
        refused = patch(api, "big", "b", json.dumps({"metadata": value}))
        assert status(refused) in {(413, "request_too_large"), (422, "invalid_metadata")}, refused.text[:200]
    assert api.get("/v1/galleries/big/subjects/b").json()["metadata"] == {"ok": 1}


def test_name_rule_is_the_same_for_enrolment_and_patch(api: TestClient, lfw_dir: Path) -> None:
    assert enroll(api, lfw_dir, "names", "n", name="n" * 256).status_code == 201
    assert patch(api, "names", "n", json.dumps({"name": "m" * 256})).status_code == 200
    for name in ("x" * 257, "a\ud800b"):
        body = json.dumps({"name": name})  # escapes the lone surrogate as \ud800
        refused = patch(api, "names", "n", body)
        assert status(refused) == (422, "invalid_parameter"), refused.text
        if "\ud800" not in name:  # a form field cannot carry a lone surrogate (its bytes are UTF-8)
            refused = enroll(api, lfw_dir, "names", "n", name=name)
            assert status(refused) == (422, "invalid_parameter"), refused.text
    assert api.get("/v1/galleries/names/subjects/n").json()["name"] == "m" * 256
    assert face_count(api, "names", "n") == 1


def test_form_metadata_that_json_cannot_parse_is_422(api: TestClient, lfw_dir: Path) -> None:
    for text in ('{"a": ' + "9" * 5000 + "}", "[" * 50_000, "{not json", "[1]"):
        refused = enroll(api, lfw_dir, "unparsable", "u", metadata=text)
        assert status(refused) == (422, "invalid_metadata"), refused.text
    assert api.get("/v1/galleries/unparsable").status_code == 404


LEGACY: dict[str, Any] = {
    "deep": nested(300),
    "nan": {"x": float("nan"), "y": float("inf")},
    "surrogate": {"x": "\ud800"},
    "oversize": of_size(200_000),
}
LEGACY_TEXT = {"undecodable": "{not json", "not-an-object": "[1, 2]"}


def test_subjects_stored_before_the_rule_are_still_served(api: TestClient, lfw_dir: Path, store_path: Path) -> None:
    """Rows written by the old code (or by hand) are read, listed, re-enrolled, replaced and deleted without a 500."""
    subjects = [*LEGACY, *LEGACY_TEXT]
    for sid in subjects:
        assert enroll(api, lfw_dir, "legacy", sid, name=sid).status_code == 201
    writer = SqliteStore(store_path)  # the store as the old code used it: no validation
    for sid, value in LEGACY.items():
        assert writer.update_subject("legacy", sid, None, value) is not None
    writer.close()
    with sqlite3.connect(store_path) as db:
        for sid, text in LEGACY_TEXT.items():
            db.execute("UPDATE subjects SET metadata = ? WHERE gallery = 'legacy' AND subject_id = ?", (text, sid))
    for sid in subjects:
        shown = api.get(f"/v1/galleries/legacy/subjects/{sid}")
        assert shown.status_code == 200, (sid, shown.text[:300])
        assert shown.json()["metadata"] == {} and shown.json()["name"] == sid
        if sid in LEGACY:
            assert "cannot be shown" in shown.json()["metadata_error"], sid
    listing = api.get("/v1/galleries/legacy/subjects", params={"limit": 100})
    assert listing.status_code == 200, listing.text[:300]
    assert sorted(s["subject_id"] for s in listing.json()["subjects"]) == sorted(subjects)
    for sid in subjects:  # a later enrolment answers 201 and writes exactly one face
        again = enroll(api, lfw_dir, "legacy", sid)
        assert again.status_code == 201, (sid, again.text[:300])
        assert face_count(api, "legacy", sid) == 2
    probe = api.post("/v1/verify", files={"image": photo(lfw_dir, "Aaron_Peirsol", 2)},
                     data={"gallery": "legacy", "subject_id": "deep"})
    assert probe.status_code == 200 and probe.json()["subject"]["name"] == "deep"
    repaired = patch(api, "legacy", "deep", json.dumps({"metadata": {"fixed": True}}))
    assert repaired.status_code == 200 and repaired.json()["metadata"] == {"fixed": True}
    assert repaired.json()["metadata_error"] is None
    for sid in subjects:
        assert api.delete(f"/v1/galleries/legacy/subjects/{sid}").status_code == 200, sid
    assert api.get("/v1/galleries/legacy").json()["subjects"] == 0


# -- numeric parameters -----------------------------------------------------------------------------------------
def test_face_id_is_bounded(api: TestClient, lfw_dir: Path) -> None:
    created = enroll(api, lfw_dir, "ids", "i")
    assert created.status_code == 201
    url = "/v1/galleries/ids/subjects/i/faces/"
    for face_id in (2**63, 2**64, 10**30, 0, -1, -(2**63) - 1):
        response = api.delete(f"{url}{face_id}")
        assert status(response) == (422, "invalid_parameter"), (face_id, response.text[:200])
    assert status(api.delete(f"{url}{MAX_ID}")) == (404, "face_not_found")
    assert status(api.delete(f"{url}abc")) == (422, "invalid_parameter")
    face_id = created.json()["faces"][0]["face_id"]
    assert api.delete(f"{url}{face_id}").json() == {"deleted": True}


FORM_CASES = [
    ("/v1/detect", "min_face_size", ["-1", "nan", "inf", "-inf", "1e400", "1e7"]),
    ("/v1/detect", "det_score_threshold", ["-0.1", "1.5", "nan", "inf"]),
    ("/v1/detect", "max_faces", ["0", "-1", str(2**31), str(2**70)]),
    ("/v1/identify", "top_k", ["0", "51", str(2**31), str(2**70), "1.5"]),
    ("/v1/identify", "threshold", ["-1.5", "2", "nan", "inf", "-inf"]),
    ("/v1/identify", "min_face_size", ["nan", "inf", "1e400"]),
    ("/v1/identify", "det_score_threshold", ["nan", "2"]),
    ("/v1/identify", "max_faces", ["0", str(2**70)]),
    ("/v1/verify", "threshold", ["nan", "inf", "2"]),
    ("/v1/verify", "min_face_size", ["nan", "inf", "-1"]),
    ("/v1/verify", "det_score_threshold", ["nan", "-1"]),
    ("/v1/galleries/numbers/subjects/n/faces", "min_face_size", ["nan", "inf", "-1", "1e7"]),
    ("/v1/galleries/numbers/subjects/n/faces", "det_score_threshold", ["nan", "inf", "2"]),
]


@pytest.mark.parametrize(("route", "field", "values"), FORM_CASES, ids=lambda v: str(v)[:30])
def test_numeric_form_fields_out_of_range_are_422(api: TestClient, lfw_dir: Path, route: str, field: str,
                                                  values: list[str]) -> None:
    api.delete("/v1/galleries/numbers")  # a fresh gallery for each case
    assert enroll(api, lfw_dir, "numbers", "n").status_code == 201
    files: list[tuple[str, tuple[str, bytes, str]]]
    extra: dict[str, str] = {}
    if route == "/v1/verify":
        files = [("image_a", photo(lfw_dir)), ("image_b", photo(lfw_dir, number=2))]
    elif route.startswith("/v1/galleries"):
        files = [("images", photo(lfw_dir))]
    else:
        files = [("image", photo(lfw_dir))]
        extra = {"gallery": "numbers"} if route == "/v1/identify" else {}
    for value in values:
        response = api.post(route, files=files, data={**extra, field: value})
        assert status(response) == (422, "invalid_parameter"), (field, value, response.text[:200])
    assert face_count(api, "numbers", "n") == 1  # no refused enrolment wrote a face


def test_page_limit_is_bounded(api: TestClient, lfw_dir: Path) -> None:
    assert enroll(api, lfw_dir, "pages", "p").status_code == 201
    for limit in ("0", "-1", "501", str(2**31), str(2**63), str(2**70), "nan", "1.5"):
        response = api.get("/v1/galleries/pages/subjects", params={"limit": limit})
        assert status(response) == (422, "invalid_parameter"), (limit, response.text[:200])
    assert api.get("/v1/galleries/pages/subjects", params={"limit": "500"}).status_code == 200

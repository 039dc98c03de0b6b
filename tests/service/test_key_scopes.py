"""API-key scopes, as a matrix: every kind of key x every /v1 operation x a gallery it may and may not touch.

A key is full-access, read-only, or limited to some galleries (read-write or read-only); a request without a key,
or with an unknown one, is 401; a known key outside its scope is 403 `forbidden`; inside it, the operation's own
success status (200, or 201 for an enrolment). Runs in process on the real models and a real LFW photo.
"""

from __future__ import annotations

import io
import itertools
import json
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.settings import ApiKey, Settings
from tests.conftest import lfw_photo

ADMIN = "admin-key-0001"
KEYS = {  # name -> the key as configured (None: no X-API-Key header; "unknown": a key the service does not know)
    "admin": ApiKey(key=ADMIN),
    "reader": ApiKey(key="reader-key-0001", read_only=True),
    "team-a": ApiKey(key="team-a-key-0001", galleries=["team-a"]),
    "team-a-reader": ApiKey(key="team-a-reader-01", galleries=["team-a"], read_only=True),
    "team-ab": ApiKey(key="team-ab-key-0001", galleries=["team-a", "team-b"]),
}
CALLERS = [*KEYS, "none", "unknown"]
GALLERIES = ["team-a", "team-b"]


@dataclass(frozen=True)
class Op:
    name: str
    route: str  # "METHOD /path/template" as the OpenAPI schema has it
    write: bool
    gallery_scoped: bool  # False: the operation names no gallery (any valid key may call it)
    success: int
    call: Callable[[TestClient, str, dict[str, str], Fixtures], httpx.Response]


@dataclass
class Fixtures:
    photo: tuple[str, bytes, str]
    admin: dict[str, str]
    made: int = 0

    def enrol(self, client: TestClient, gallery: str, subject: str) -> int:
        """Enrol `subject` with the admin key; return its face id."""
        response = client.post(f"/v1/galleries/{gallery}/subjects/{subject}/faces", files=[("images", self.photo)],
                               headers=self.admin)
        assert response.status_code == 201, response.text
        return int(response.json()["faces"][0]["face_id"])

    def archive(self) -> bytes:
        """A zip of one subject folder with the photo."""
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("zipped/1.jpg", self.photo[1])
        return buf.getvalue()

    def job(self, client: TestClient, gallery: str) -> str:
        """A job submitted with the admin key into the gallery; its id."""
        response = client.post(f"/v1/galleries/{gallery}/jobs", files={"archive": ("a.zip", self.archive())},
                               headers=self.admin)
        assert response.status_code == 202, response.text
        return str(response.json()["job_id"])

    def victim(self, client: TestClient, gallery: str) -> tuple[str, int]:
        """A subject made for one destructive call."""
        self.made += 1
        subject = f"victim-{self.made}"
        return subject, self.enrol(client, gallery, subject)


def _base(g: str) -> str:
    return f"/v1/galleries/{g}/subjects/base"


OPS = [
    Op("list_galleries", "GET /v1/galleries",
       False, False, 200, lambda c, g, h, f: c.get("/v1/galleries", headers=h)),
    Op("detect", "POST /v1/detect",
       False, False, 200, lambda c, g, h, f: c.post("/v1/detect", files={"image": f.photo}, headers=h)),
    Op("verify_photos", "POST /v1/verify",
       False, False, 200,
       lambda c, g, h, f: c.post("/v1/verify", files={"image_a": f.photo, "image_b": f.photo}, headers=h)),
    Op("get_gallery", "GET /v1/galleries/{gallery}",
       False, True, 200, lambda c, g, h, f: c.get(f"/v1/galleries/{g}", headers=h)),
    Op("list_subjects", "GET /v1/galleries/{gallery}/subjects",
       False, True, 200, lambda c, g, h, f: c.get(f"/v1/galleries/{g}/subjects", headers=h)),
    Op("get_subject", "GET /v1/galleries/{gallery}/subjects/{subject_id}",
       False, True, 200, lambda c, g, h, f: c.get(_base(g), headers=h)),
    Op("identify", "POST /v1/identify",
       False, True, 200,
       lambda c, g, h, f: c.post("/v1/identify", files={"image": f.photo}, data={"gallery": g}, headers=h)),
    Op("verify_subject", "POST /v1/verify",
       False, True, 200,
       lambda c, g, h, f: c.post("/v1/verify", files={"image": f.photo}, data={"gallery": g, "subject_id": "base"},
                                 headers=h)),
    Op("enroll", "POST /v1/galleries/{gallery}/subjects/{subject_id}/faces",
       True, True, 201,
       lambda c, g, h, f: c.post(f"/v1/galleries/{g}/subjects/new/faces", files=[("images", f.photo)], headers=h)),
    Op("update_subject", "PATCH /v1/galleries/{gallery}/subjects/{subject_id}",
       True, True, 200,
       lambda c, g, h, f: c.patch(_base(g), json={"name": "renamed", "metadata": {"by": "test"}}, headers=h)),
    Op("delete_face", "DELETE /v1/galleries/{gallery}/subjects/{subject_id}/faces/{face_id}",
       True, True, 200,
       lambda c, g, h, f: (lambda s, face: c.delete(f"/v1/galleries/{g}/subjects/{s}/faces/{face}", headers=h))(
           *f.victim(c, g))),
    Op("delete_subject", "DELETE /v1/galleries/{gallery}/subjects/{subject_id}",
       True, True, 200,
       lambda c, g, h, f: c.delete(f"/v1/galleries/{g}/subjects/{f.victim(c, g)[0]}", headers=h)),
    Op("verify_batch_photos", "POST /v1/verify/batch",
       False, False, 200,
       lambda c, g, h, f: c.post("/v1/verify/batch", files=[("image", f.photo), ("photos", f.photo)], headers=h)),
    Op("verify_batch_subjects", "POST /v1/verify/batch",
       False, True, 200,
       lambda c, g, h, f: c.post("/v1/verify/batch", files=[("image", f.photo)], headers=h,
                                 data={"subjects": json.dumps([{"gallery": g, "subject_id": "base"}])})),
    Op("submit_job", "POST /v1/galleries/{gallery}/jobs",
       True, True, 202, lambda c, g, h, f: c.post(f"/v1/galleries/{g}/jobs", files={"archive": ("a.zip", f.archive())},
                                                  headers=h)),
    Op("get_job", "GET /v1/jobs/{job_id}",
       False, True, 200, lambda c, g, h, f: c.get(f"/v1/jobs/{f.job(c, g)}", headers=h)),
    Op("job_results", "GET /v1/jobs/{job_id}/results",
       False, True, 200, lambda c, g, h, f: c.get(f"/v1/jobs/{f.job(c, g)}/results", headers=h)),
    Op("me", "GET /v1/me", False, False, 200, lambda c, g, h, f: c.get("/v1/me", headers=h)),
    Op("thumbnail", "GET /v1/galleries/{gallery}/subjects/{subject_id}/faces/{face_id}/thumbnail",
       False, True, 200,
       lambda c, g, h, f: c.get(f"{_base(g)}/faces/{c.get(_base(g), headers=f.admin).json()['first_face_id']}"
                                "/thumbnail", headers=h)),
    Op("export", "GET /v1/galleries/{gallery}/export",
       False, True, 200, lambda c, g, h, f: c.get(f"/v1/galleries/{g}/export", headers=h)),
    Op("import", "POST /v1/galleries/{gallery}/import",  # the gallery's own export: adds nothing
       True, True, 200,
       lambda c, g, h, f: c.post(f"/v1/galleries/{g}/import", headers=h, files={
           "file": ("g.jsonl", c.get(f"/v1/galleries/{g}/export", headers=f.admin).content)})),
    Op("create_gallery", "PUT /v1/galleries/{gallery}",  # it exists: answered as it is
       True, True, 200, lambda c, g, h, f: c.put(f"/v1/galleries/{g}", headers=h)),
    Op("delete_gallery", "DELETE /v1/galleries/{gallery}",
       True, True, 200, lambda c, g, h, f: c.delete(f"/v1/galleries/{g}", headers=h)),
]


def expected(caller: str, op: Op, gallery: str) -> int:
    if caller in ("none", "unknown"):
        return 401
    return op.success if KEYS[caller].allows(gallery if op.gallery_scoped else None, op.write) else 403


def headers(caller: str) -> dict[str, str]:
    if caller == "none":
        return {}
    if caller == "unknown":
        return {"X-API-Key": "not-a-configured-key"}
    return {"X-API-Key": KEYS[caller].key}


@pytest.fixture(scope="module")
def api(model_dir: Path, lfw_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    tmp = tmp_path_factory.mktemp("scopes")
    keys = tmp / "keys.json"
    keys.write_text(json.dumps([k.model_dump() for name, k in KEYS.items() if name != "admin"]))
    settings = Settings(model_dir=model_dir, store=f"sqlite:///{tmp / 'g.sqlite3'}", api_keys=ADMIN,  # type: ignore[arg-type]
                        api_keys_file=keys, jobs_dir=tmp / "jobs")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="module")
def fixtures(lfw_dir: Path) -> Fixtures:
    path = lfw_photo(lfw_dir, "Aaron_Peirsol", 1)
    return Fixtures((path.name, path.read_bytes(), "image/jpeg"), {"X-API-Key": ADMIN})


CASES = [(caller, op, gallery) for caller, op, gallery in itertools.product(CALLERS, OPS, GALLERIES)
         if op.gallery_scoped or gallery == GALLERIES[0]]


@pytest.mark.parametrize(("caller", "op", "gallery"), CASES,
                         ids=[f"{c}-{o.name}" + (f"-{g}" if o.gallery_scoped else "") for c, o, g in CASES])
def test_key_scope(api: TestClient, fixtures: Fixtures, caller: str, op: Op, gallery: str) -> None:
    for g in GALLERIES:  # both galleries exist, each with a subject `base` (a delete_gallery case removes one)
        if api.get(_base(g), headers=fixtures.admin).status_code != 200:
            fixtures.enrol(api, g, "base")
    response = op.call(api, gallery, headers(caller), fixtures)
    want = expected(caller, op, gallery)
    assert response.status_code == want, f"{caller} {op.name} {gallery}: {response.status_code} {response.text}"
    if want in (401, 403):
        assert response.json()["error"]["code"] == ("unauthorized" if want == 401 else "forbidden")
    if op.name == "list_galleries" and want == 200:  # a scoped key sees only its galleries
        names = {g["name"] for g in response.json()["galleries"]}
        scope = KEYS[caller].galleries
        assert names == (set(GALLERIES) if scope is None else set(GALLERIES) & set(scope)), names


def test_the_matrix_covers_every_v1_operation(api: TestClient) -> None:
    """Each /v1 operation of the OpenAPI schema is in the matrix (a new route needs a row)."""
    paths = api.get("/openapi.json").json()["paths"]
    declared = {f"{method.upper()} {path}" for path, item in paths.items() if path.startswith("/v1/")
                for method in item if method in ("get", "post", "put", "patch", "delete")}
    assert declared == {op.route for op in OPS}

"""Bulk enrolment jobs on real models and LFW photos: a zip of subject folders enrolled in the background with a
result per photo; bad archives (not a zip, a zip bomb, names that leave their folder, files that are no images,
too many entries); and a job that survives the service being killed, without losing or duplicating a face."""

from __future__ import annotations

import io
import signal
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.settings import Settings
from tests.conftest import ServiceProcess, lfw_photo, people_with_photos
from tests.images import blank


def _zip(files: dict[str, bytes], top: str | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(f"{top}/{name}" if top else name, data)
    return buf.getvalue()


def _people_zip(lfw: Path, count: int, photos: int = 2, top: str | None = None) -> tuple[bytes, list[str]]:
    people = people_with_photos(lfw, minimum=photos, limit=count)
    files = {f"{p}/{n}.jpg": lfw_photo(lfw, p, n).read_bytes() for p in people for n in range(1, photos + 1)}
    return _zip(files, top), people


@pytest.fixture(scope="module")
def api(model_dir: Path, lfw_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    tmp = tmp_path_factory.mktemp("jobs")
    settings = Settings(model_dir=model_dir, store=f"sqlite:///{tmp / 'g.sqlite3'}", jobs_dir=tmp / "jobs",
                        max_archive_entries=50, job_scan_interval_s=0.2)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def _wait(client: TestClient | httpx.Client, job_id: str, timeout: float = 120) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("done", "failed"):
            return job  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, job
        time.sleep(0.2)


def _results(client: TestClient | httpx.Client, job_id: str) -> list[dict]:  # type: ignore[type-arg]
    found, offset = [], 0
    while offset is not None:
        page = client.get(f"/v1/jobs/{job_id}/results", params={"offset": offset, "limit": 7}).json()
        found += page["results"]
        offset = page["next_offset"]
    return found


def test_a_zip_is_enrolled_with_a_result_per_photo(api: TestClient, lfw_dir: Path) -> None:
    archive, people = _people_zip(lfw_dir, 6, top="people")  # a zipped folder: its top folder is left out
    extra = {"people/nobody/wall.png": blank(), "people/nobody/notes.jpg": b"not an image",
             "people/../../etc/passwd": b"x", "people/loose.jpg": b"x"}
    buf = io.BytesIO(archive)
    with zipfile.ZipFile(buf, "a") as z:
        for name, data in extra.items():
            z.writestr(name, data)
    submitted = api.post("/v1/galleries/bulk/jobs", files={"archive": ("people.zip", buf.getvalue())},
                         data={"allow_multiple": "true"})
    assert submitted.status_code == 202, submitted.text
    job = _wait(api, submitted.json()["job_id"])
    assert (job["status"], job["photos"], job["handled"]) == ("done", 16, 16)
    assert (job["enrolled"], job["skipped"], job["refused"]) == (12, 0, 4)
    results = {r["name"]: r for r in _results(api, job["job_id"])}
    assert len(results) == 16
    assert results["people/nobody/wall.png"]["code"] == "no_face"
    assert results["people/nobody/notes.jpg"]["code"] == "invalid_image"
    assert results["people/../../etc/passwd"]["code"] == "unsafe_path"
    assert results["people/loose.jpg"]["code"] == "bad_layout"
    assert api.get("/v1/galleries/bulk").json()["faces"] == 12
    assert api.get(f"/v1/galleries/bulk/subjects/{people[0]}").json()["face_count"] == 2
    # the same archive again: every photo is there already
    again = _wait(api, api.post("/v1/galleries/bulk/jobs", files={"archive": ("p.zip", buf.getvalue())},
                                data={"allow_multiple": "true"}).json()["job_id"])
    assert (again["enrolled"], again["skipped"], again["refused"]) == (0, 12, 4)
    assert api.get("/v1/galleries/bulk").json()["faces"] == 12


def test_bad_archives(api: TestClient) -> None:
    def submit(data: bytes) -> httpx.Response:
        return api.post("/v1/galleries/bad/jobs", files={"archive": ("a.zip", data)})

    not_zip = submit(b"PK\x03\x04 but not really a zip")
    assert not_zip.status_code == 422 and not_zip.json()["error"]["code"] == "invalid_archive"
    assert submit(_zip({})).json()["error"]["code"] == "invalid_archive"  # empty
    too_many = submit(_zip({f"s{i}/{i}.jpg": b"x" for i in range(51)}))
    assert too_many.status_code == 422 and "at most 50" in too_many.json()["error"]["message"]
    missing = api.post("/v1/galleries/bad/jobs", data={"allow_multiple": "false"})
    assert missing.status_code == 422 and missing.json()["error"]["code"] == "missing_field"
    # a zip bomb: 64 MiB of zeros that compress to some KiB; it is read at most max_image_bytes and refused
    bomb = _zip({"victim/bomb.jpg": b"\0" * (64 * 1024 * 1024)})
    assert len(bomb) < 200_000
    job = _wait(api, submit(bomb).json()["job_id"])
    assert (job["status"], job["refused"]) == ("done", 1)
    assert _results(api, job["job_id"])[0]["code"] == "image_too_large"
    assert api.get("/v1/galleries/bad").status_code == 404  # nothing enrolled
    assert api.get("/v1/jobs/0123456789abcdef0123456789abcdef").json()["error"]["code"] == "job_not_found"
    assert api.get("/v1/jobs/not-a-job").status_code == 422


def test_a_job_survives_the_service_being_killed(model_dir: Path, lfw_dir: Path, tmp_path: Path,
                                                 service_factory: type[ServiceProcess]) -> None:
    env = {"ANYFACE_STORE": f"sqlite:///{tmp_path / 'g.sqlite3'}", "ANYFACE_JOBS_DIR": str(tmp_path / "jobs"),
           "ANYFACE_JOB_CONCURRENCY": "1", "ANYFACE_JOB_SCAN_INTERVAL_S": "0.5"}
    archive, _ = _people_zip(lfw_dir, 20)
    first = service_factory(env).start(timeout=120)
    with first.client() as c:
        job_id = c.post("/v1/galleries/g/jobs", files={"archive": ("a.zip", archive)},
                        data={"allow_multiple": "true"}).json()["job_id"]
        deadline = time.monotonic() + 60
        while c.get(f"/v1/jobs/{job_id}").json()["handled"] < 5:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert first.proc is not None
    first.proc.send_signal(signal.SIGKILL)  # mid-job, no shutdown
    first.proc.wait(10)
    second = service_factory(env, port=first.port).start(timeout=120)
    with second.client() as c:
        job = _wait(c, job_id)
        assert (job["status"], job["handled"], job["refused"]) == ("done", 40, 0)
        assert job["enrolled"] + job["skipped"] == 40
        assert c.get("/v1/galleries/g").json()["faces"] == 40  # every photo once: none lost, none twice
        assert len({r["index"] for r in _results(c, job_id)}) == 40

"""Durability of the embedded SQLite store with real service processes: restarts and `kill -9`."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import httpx

from tests.conftest import ServiceProcess, lfw_photo, people_with_photos


def _enroll(client: httpx.Client, lfw: Path, gallery: str, subject: str, person: str) -> httpx.Response:
    photo = lfw_photo(lfw, person, 1)
    return client.post(f"/v1/galleries/{gallery}/subjects/{subject}/faces",
                       files=[("images", (photo.name, photo.read_bytes(), "image/jpeg"))],
                       data={"name": person, "allow_multiple": "true"})


def _identify(client: httpx.Client, lfw: Path, gallery: str, person: str, number: int) -> list[dict]:
    photo = lfw_photo(lfw, person, number)
    response = client.post("/v1/identify", files={"image": (photo.name, photo.read_bytes(), "image/jpeg")},
                           data={"gallery": gallery, "top_k": "1"})
    assert response.status_code == 200, response.text
    return list(response.json()["faces"][0]["candidates"])


def test_enrollment_survives_restart(model_dir: Path, lfw_dir: Path, tmp_path: Path,
                                     service_factory: type[ServiceProcess]) -> None:
    env = {"ANYFACE_STORE": f"sqlite:///{tmp_path / 'gallery.sqlite3'}"}
    people = people_with_photos(lfw_dir, minimum=2, limit=3)
    first = service_factory(env).start()
    with first.client() as client:
        for i, person in enumerate(people):
            assert _enroll(client, lfw_dir, "restart", f"p{i}", person).status_code == 201
    first.stop()
    second = service_factory(env, port=first.port).start()
    with second.client() as client:
        info = client.get("/v1/galleries/restart").json()
        assert info["subjects"] == 3 and info["indexed_faces"] == 3
        for i, person in enumerate(people):
            candidates = _identify(client, lfw_dir, "restart", person, 2)
            assert candidates and candidates[0]["subject_id"] == f"p{i}"


def test_acknowledged_enrollments_survive_kill_9(model_dir: Path, lfw_dir: Path, tmp_path: Path,
                                                 service_factory: type[ServiceProcess]) -> None:
    """Enrol in a loop from two clients, SIGKILL the server mid-stream: every 201 is still there afterwards."""
    db = tmp_path / "gallery.sqlite3"
    env = {"ANYFACE_STORE": f"sqlite:///{db}"}
    people = people_with_photos(lfw_dir, minimum=2, limit=40, split="peopleDevTrain.txt")
    server = service_factory(env).start()
    acknowledged: list[tuple[str, str]] = []
    lock = threading.Lock()

    def writer(offset: int) -> None:
        with server.client(timeout=10.0) as client:
            for i in range(offset, len(people), 2):
                try:
                    response = _enroll(client, lfw_dir, "crash", f"s{i}", people[i])
                except httpx.HTTPError:
                    return  # the server died under us: this one was never acknowledged
                if response.status_code == 201:
                    with lock:
                        acknowledged.append((f"s{i}", people[i]))

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(2)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    while len(acknowledged) < 8 and time.monotonic() < deadline:
        time.sleep(0.01)
    server.kill()  # SIGKILL while requests are in flight
    for thread in threads:
        thread.join(30)
    assert 8 <= len(acknowledged) < len(people), "the kill must land in the middle of the enrolments"

    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    restarted = service_factory(env).start()
    with restarted.client() as client:
        info = client.get("/v1/galleries/crash").json()
        assert info["indexed_faces"] == info["faces"] >= len(acknowledged)
        for subject_id, _ in acknowledged:
            subject = client.get(f"/v1/galleries/crash/subjects/{subject_id}")
            assert subject.status_code == 200 and subject.json()["face_count"] == 1
        # and they are searchable: a second photo of an acknowledged person finds them
        subject_id, person = acknowledged[0]
        candidates = _identify(client, lfw_dir, "crash", person, 2)
        assert candidates and candidates[0]["subject_id"] == subject_id

"""A full disk: writes answer 503 `storage_full` (not 500), are rolled back whole, `/readyz` says
`store_writable: false` until there is room again, and every acknowledged enrolment stays intact.

Two ways to fill the store for real, without faking SQLite:
- `PRAGMA max_page_count` on the service's own connection: SQLite then answers SQLITE_FULL ("database or disk is
  full") exactly as on a full disk; raising it again frees the space. Works everywhere.
- a small tmpfs with a ballast file that takes every free byte: the kernel's ENOSPC. Needs a mount (root with
  CAP_SYS_ADMIN); skips with the reason otherwise.
The Redis store's counterpart is `maxmemory` with `noeviction` (OOM replies), on a real redis-server.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.gallery.redis_store import RedisStore
from service.gallery.sqlite_store import SqliteStore
from service.gallery.store import NewFace, StoreFull
from service.settings import Settings
from tests.conftest import free_port, lfw_photo, people_with_photos

DIM = 128


def _faces(n: int, seed: int = 0) -> list[NewFace]:
    rng = np.random.default_rng(seed)
    return [NewFace(rng.standard_normal(DIM).astype(np.float32), [1.0, 2.0, 30.0, 40.0], "112") for _ in range(n)]


def _integrity(db: Path) -> str:
    with sqlite3.connect(db) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def _counts(db: Path) -> tuple[int, int, int]:
    with sqlite3.connect(db) as conn:
        return tuple(conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]  # type: ignore[return-value]
                     for t in ("subjects", "faces", "changes"))


# -- the store alone (no models) ----------------------------------------------------------------------------------
def _limit_pages(store: SqliteStore, extra: int) -> int:
    """Let the store's file grow by at most `extra` pages; return the limit."""
    with store._lock:
        pages = int(store._db.execute("PRAGMA page_count").fetchone()[0])
        return int(store._db.execute(f"PRAGMA max_page_count = {pages + extra}").fetchone()[0])


def test_sqlite_full_write_is_rolled_back_whole_and_the_store_recovers(tmp_path: Path) -> None:
    db = tmp_path / "g.sqlite3"
    store = SqliteStore(db)
    store.add_faces("g", "kept", "Kept", {"a": 1}, _faces(2))
    before = _counts(db)
    seq = store.last_seq()
    _limit_pages(store, 0)  # not one page more
    assert store.writable()  # nothing has failed yet: no probe, no I/O
    with pytest.raises(StoreFull, match="database or disk is full"):
        store.add_faces("g", "big", None, None, _faces(64, seed=1))  # many faces: fails part-way through
    assert store.out_of_space and not store.writable()  # the probe write does not fit either
    # nothing of the failed write is there, not even its first rows or change-feed entries
    assert _counts(db) == before and store.last_seq() == seq and store.get_subject("g", "big") is None
    assert _integrity(db) == "ok"
    # the connection is usable (no transaction left open): reads work, a write that fits commits
    kept = store.get_subject("g", "kept")
    assert kept is not None and kept.face_count == 2 and kept.metadata == {"a": 1}
    with pytest.raises(StoreFull):
        store.update_subject("g", "kept", None, {"notes": "x" * 6000})  # needs overflow pages
    assert store.get_subject("g", "kept").metadata == {"a": 1}  # type: ignore[union-attr]
    # room again: the probe succeeds, then the big write does
    with store._lock:
        store._db.execute("PRAGMA max_page_count = 1000000")
    assert store.writable() and not store.out_of_space
    store.add_faces("g", "big", None, None, _faces(64, seed=1))
    assert store.get_subject("g", "big").face_count == 64  # type: ignore[union-attr]
    # a write that commits clears the mark too (without a probe)
    store.out_of_space = True
    store.add_faces("g", "more", None, None, _faces(1))
    assert not store.out_of_space
    store.close()


def test_redis_out_of_memory_is_storage_full_and_atomic(tmp_path: Path) -> None:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (Debian/Ubuntu: apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path),
                             "--save", "", "--appendonly", "no", "--maxmemory-policy", "noeviction"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = redis.Redis(port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.exceptions.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        store = RedisStore(f"redis://127.0.0.1:{port}/0")
        store.add_faces("g", "kept", "Kept", None, _faces(2))
        used = int(client.info("memory")["used_memory"])
        client.config_set("maxmemory", used + 256 * 1024)
        seq = store.last_seq()
        refused = 0
        for i in range(2000):
            try:
                store.add_faces("g", f"s{i}", None, None, _faces(8, seed=i))
            except StoreFull as exc:
                assert "maxmemory" in str(exc)
                refused = i
                break
        assert refused, "maxmemory was never reached"
        assert store.out_of_space and not store.writable()
        # reads still work under OOM (Redis refuses MULTI then; the store reads with a script instead)
        assert store.get_subject("g", f"s{refused}") is None  # the refused write left nothing
        assert store.last_seq() == seq + 8 * refused  # and no change-feed entry
        assert len(store.changes_since(seq)) == 8 * refused
        assert store.get_subject("g", "kept").face_count == 2  # type: ignore[union-attr]
        assert store.get_gallery("g").subjects == refused + 1  # type: ignore[union-attr]
        assert len(store.list_subjects("g", None, 1000)[0]) == refused + 1
        client.config_set("maxmemory", 0)
        assert store.writable() and not store.out_of_space
        store.add_faces("g", f"s{refused}", None, None, _faces(8))
        store.close()
    finally:
        proc.kill()
        proc.wait(10)


# -- through the API, on real models and photos ------------------------------------------------------------------
@pytest.fixture
def api(model_dir: Path, tmp_path: Path) -> Iterator[tuple[TestClient, Path]]:
    db = tmp_path / "store" / "gallery.sqlite3"
    settings = Settings(model_dir=model_dir, store=f"sqlite:///{db}")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client, db


def _enrol(client: TestClient, lfw: Path, subject: str, person: str) -> httpx.Response:
    photo = lfw_photo(lfw, person, 1)
    return client.post(f"/v1/galleries/full/subjects/{subject}/faces",
                       files=[("images", (photo.name, photo.read_bytes(), "image/jpeg"))],
                       data={"name": person, "allow_multiple": "true"})


def _error(response: httpx.Response) -> tuple[int, str | None]:
    return response.status_code, (response.json().get("error") or {}).get("code")


def _ready(client: TestClient) -> tuple[int, dict[str, bool]]:
    response = client.get("/readyz")
    return response.status_code, response.json()["checks"]


def _check_acknowledged(client: TestClient, acknowledged: dict[str, str]) -> None:
    info = client.get("/v1/galleries/full").json()
    assert info["subjects"] == info["faces"] == info["indexed_faces"] == len(acknowledged), info
    for subject, person in acknowledged.items():
        got = client.get(f"/v1/galleries/full/subjects/{subject}")
        assert got.status_code == 200 and got.json()["name"] == person and got.json()["face_count"] == 1


def test_disk_full_answers_503_storage_full_keeps_data_and_recovers(api: tuple[TestClient, Path],
                                                                    lfw_dir: Path) -> None:
    client, db = api
    store = client.app.state.ctx.core.manager.store  # type: ignore[attr-defined]
    people = people_with_photos(lfw_dir, minimum=1, limit=80, split="peopleDevTrain.txt")
    acknowledged: dict[str, str] = {}
    for i in range(3):
        assert _enrol(client, lfw_dir, f"p{i}", people[i]).status_code == 201
        acknowledged[f"p{i}"] = people[i]
    _limit_pages(store, 3)  # the "disk" has room for a few more enrolments

    refused = None
    for i in range(3, len(people)):
        response = _enrol(client, lfw_dir, f"p{i}", people[i])
        if response.status_code == 201:
            acknowledged[f"p{i}"] = people[i]
            continue
        if response.status_code == 422:  # a photo the detector does not take: next person
            continue
        refused = (f"p{i}", response)
        break
    assert refused is not None, "the store never filled up"
    subject, response = refused
    assert _error(response) == (503, "storage_full"), response.text
    assert len(acknowledged) > 3  # it filled up part-way, as a disk does

    status, checks = _ready(client)
    assert status == 503 and checks["store"] is True and checks["store_writable"] is False, checks
    assert "store_writable" in client.get("/readyz").json()["error"]["message"]
    assert client.get(f"/v1/galleries/full/subjects/{subject}").status_code == 404  # rolled back whole
    _check_acknowledged(client, acknowledged)
    # a PATCH that needs room is refused the same way and changes nothing
    patched = client.patch("/v1/galleries/full/subjects/p0", json={"metadata": {"notes": "x" * 6000}})
    assert _error(patched) == (503, "storage_full"), patched.text
    assert client.get("/v1/galleries/full/subjects/p0").json()["metadata"] == {}
    # a DELETE frees pages and may fit; either it is done, or refused with nothing changed: never a 500
    deleted = client.delete("/v1/galleries/full/subjects/p1")
    assert deleted.status_code == 200 or _error(deleted) == (503, "storage_full"), deleted.text
    if deleted.status_code == 200:
        del acknowledged["p1"]
    _check_acknowledged(client, acknowledged)
    assert _integrity(db) == "ok"

    # free space: the readiness probe sees it, and writes work again
    with store._lock:
        store._db.execute("PRAGMA max_page_count = 1000000")
    assert _ready(client) == (200, {"models": True, "embedding_backend": True, "store": True,
                                    "store_writable": True, "gallery_index": True})
    assert _enrol(client, lfw_dir, subject, people[int(subject[1:])]).status_code == 201
    acknowledged[subject] = people[int(subject[1:])]
    assert client.patch("/v1/galleries/full/subjects/p0", json={"metadata": {"notes": "x" * 6000}}).status_code == 200
    _check_acknowledged(client, acknowledged)
    assert _integrity(db) == "ok"


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs (SQLite's WAL alone grows to a few MiB before a checkpoint)."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    if not shutil.which("mount"):
        pytest.skip("no mount command: the tmpfs disk-full test needs one (the max_page_count test covers it)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode}): needs root with "
                    "CAP_SYS_ADMIN; the max_page_count test covers disk full")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(directory: Path) -> Path:
    """Take every free byte of the filesystem with a ballast file."""
    ballast = directory / f"ballast-{uuid.uuid4().hex}"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT)
    chunk = b"\0" * 65536
    try:
        while True:
            os.write(fd, chunk)
    except OSError:
        pass
    try:
        while True:
            os.write(fd, b"\0")
    except OSError:
        pass
    os.close(fd)
    return ballast


def test_real_full_filesystem_answers_storage_full_and_recovers(model_dir: Path, lfw_dir: Path,
                                                                tiny_fs: Path) -> None:
    db = tiny_fs / "gallery.sqlite3"
    people = people_with_photos(lfw_dir, minimum=1, limit=4, split="peopleDevTrain.txt")
    settings = Settings(model_dir=model_dir, store=f"sqlite:///{db}")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        acknowledged = {}
        for i in range(2):
            assert _enrol(client, lfw_dir, f"p{i}", people[i]).status_code == 201
            acknowledged[f"p{i}"] = people[i]
        ballast = _fill(tiny_fs)
        assert shutil.disk_usage(tiny_fs).free == 0
        assert _error(_enrol(client, lfw_dir, "p2", people[2])) == (503, "storage_full")
        patched = client.patch("/v1/galleries/full/subjects/p0", json={"name": "renamed"})
        assert _error(patched) == (503, "storage_full")
        assert _error(client.delete("/v1/galleries/full/subjects/p1")) == (503, "storage_full")
        status, checks = _ready(client)
        assert status == 503 and checks["store_writable"] is False and checks["store"] is True
        _check_acknowledged(client, acknowledged)
        assert client.get("/v1/galleries/full/subjects/p0").json()["name"] == people[0]

        ballast.unlink()
        assert _ready(client)[0] == 200
        assert _enrol(client, lfw_dir, "p2", people[2]).status_code == 201
        acknowledged["p2"] = people[2]
        _check_acknowledged(client, acknowledged)
    assert _integrity(db) == "ok"

"""The Redis gallery store: the same scenarios as the SQLite store, and two real service replicas on one real Redis.

Needs `redis-server` on PATH (Debian/Ubuntu: `apt-get install redis-server`); the tests start their own servers on
free loopback ports with AOF on (`appendfsync always`). The replica tests also need the models
(`ANYFACE_MODEL_MIRROR`) and LFW (`ANYFACE_DATA_DIR`).
"""

from __future__ import annotations

import shutil
import signal
import statistics
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis

from service.gallery.faiss_manager import FaissGalleryManager
from service.gallery.redis_store import RedisStore
from service.gallery.sqlite_store import SqliteStore
from service.gallery.store import (
    EmbedderCheck,
    EmbedderConflict,
    FeedTruncated,
    GalleryStore,
    NewFace,
    StoreUnavailable,
)
from service.settings import IndexSettings
from tests.conftest import ManagedProcess, ServiceProcess, free_port, lfw_photo, people_with_photos

DIM = 8


# -- a real redis-server ---------------------------------------------------------------------------------------
class _RedisServer(ManagedProcess):
    """`redis-server` on a free loopback port, AOF on with fsync on every write, data in `directory`."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        self.dir = directory
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15.0) -> _RedisServer:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no",
             "--logfile", str(self.dir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5, socket_timeout=0.5)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {(self.dir / 'redis.log').read_text()[-2000:]}")
            try:
                if client.ping():
                    return self
            except redis.exceptions.ConnectionError:  # not listening yet, or still loading the AOF
                time.sleep(0.05)
        raise TimeoutError(f"redis-server on port {self.port} not up after {timeout} s")


@pytest.fixture(scope="session")
def redis_server_bin() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (Debian/Ubuntu: apt-get install redis-server)")
    return binary


@pytest.fixture(scope="session")
def redis_server(redis_server_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[_RedisServer]:
    server = _RedisServer(redis_server_bin, tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


def _redis_url(server: _RedisServer) -> str:
    """A fresh key prefix per store: tests do not see each other's data."""
    return f"{server.url}?prefix=t{uuid.uuid4().hex[:12]}:"


# -- conformance: the same scenarios on both stores -------------------------------------------------------------
@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[GalleryStore]:
    if request.param == "sqlite":
        made: GalleryStore = SqliteStore(tmp_path / "gallery.sqlite3")
    else:
        made = RedisStore(_redis_url(request.getfixturevalue("redis_server")))
    yield made
    made.close()


def _vec(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def _faces(*seeds: int) -> list[NewFace]:
    return [NewFace(_vec(s), [10.0, 20.0, 30.5, 40.25], "112") for s in seeds]


def _feed(store: GalleryStore, since: int = 0) -> list[tuple[str, str, int, str]]:
    """The index-relevant part of the feed (Redis also publishes `update` entries for renames)."""
    return [(c.kind, c.gallery, c.face_id, c.subject_id) for c in store.changes_since(since) if c.kind != "update"]


def test_add_faces_creates_gallery_and_subject(store: GalleryStore) -> None:
    store.ping()
    assert store.list_galleries() == [] and store.get_gallery("g") is None
    subject, records = store.add_faces("g", "alice", "Alice", {"team": "a"}, _faces(1, 2))
    assert (subject.subject_id, subject.name, subject.metadata, subject.face_count) == ("alice", "Alice",
                                                                                        {"team": "a"}, 2)
    assert [r.subject_id for r in records] == ["alice", "alice"]
    assert records[0].face_id < records[1].face_id
    assert records[0].box == [10.0, 20.0, 30.5, 40.25] and records[0].branch == "112"
    # a new face for the same subject: name and metadata kept when not given
    subject, more = store.add_faces("g", "alice", None, None, [NewFace(_vec(3))])
    assert (subject.name, subject.metadata, subject.face_count) == ("Alice", {"team": "a"}, 3)
    assert more[0].face_id > records[1].face_id and more[0].box is None and more[0].branch is None
    subject, _ = store.add_faces("g", "alice", "Alice B.", {"team": "b"}, [NewFace(_vec(4))])
    assert (subject.name, subject.metadata, subject.face_count) == ("Alice B.", {"team": "b"}, 4)

    store.add_faces("h", "bob", None, None, _faces(5))
    infos = store.list_galleries()
    assert [(i.name, i.subjects, i.faces) for i in infos] == [("g", 1, 4), ("h", 1, 1)]
    info = store.get_gallery("g")
    assert info is not None and (info.subjects, info.faces) == (1, 4)

    got = store.get_subject("g", "alice")
    assert got is not None and [f.face_id for f in got.faces] == [r.face_id for r in records] + [more[0].face_id,
                                                                                                 more[0].face_id + 1]
    assert got.face_count == 4 and got.faces[0].box == [10.0, 20.0, 30.5, 40.25]
    bare = store.get_subject("g", "alice", with_faces=False)
    assert bare is not None and bare.faces == [] and bare.face_count == 4
    assert store.get_subject("g", "nobody") is None and store.get_subject("zzz", "alice") is None


def test_galleries_record_their_embedder_and_refuse_another(store: GalleryStore) -> None:
    trunk = EmbedderCheck("mobilefacenet@aaaa", extends_unrecorded=True)
    variant = EmbedderCheck("sranet@bbbb", extends_unrecorded=False)
    store.add_faces("g", "alice", None, None, _faces(1), trunk)
    assert store.gallery_embedder("g") == (True, "mobilefacenet@aaaa")
    assert store.gallery_embedder("nope") == (False, None)
    seq = store.last_seq()
    with pytest.raises(EmbedderConflict) as refused:
        store.add_faces("g", "bob", "Bob", None, _faces(2), variant)
    assert refused.value.recorded == "mobilefacenet@aaaa"
    # nothing of the refused write was kept: no subject, no face, no change
    assert store.get_subject("g", "bob") is None and store.last_seq() == seq
    info = store.get_gallery("g")
    assert info is not None and (info.faces, info.embedder) == (1, "mobilefacenet@aaaa")
    store.add_faces("g", "alice", None, None, _faces(3), trunk)  # the same embedder extends it
    assert [i.embedder for i in store.list_galleries()] == ["mobilefacenet@aaaa"]

    # a gallery written without an embedder (made before they were recorded): only the trunk may extend it
    store.add_faces("old", "carol", None, None, _faces(4))
    assert store.gallery_embedder("old") == (True, None)
    with pytest.raises(EmbedderConflict) as unrecorded:
        store.add_faces("old", "dan", None, None, _faces(5), variant)
    assert unrecorded.value.recorded is None
    store.add_faces("old", "dan", None, None, _faces(5), trunk)
    assert store.gallery_embedder("old") == (True, None)

    # deleting a gallery forgets its embedder: the name may be filled again by another
    assert store.delete_gallery("g") is not None
    store.add_faces("g", "erin", None, None, _faces(6), variant)
    assert store.gallery_embedder("g") == (True, "sranet@bbbb")


def test_sqlite_store_made_before_embedders_were_recorded_opens(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.executescript("CREATE TABLE galleries (name TEXT PRIMARY KEY, created_at REAL NOT NULL);"
                     "INSERT INTO galleries VALUES ('legacy', 1.0);")
    db.commit()
    db.close()
    store = SqliteStore(path)
    try:
        assert store.gallery_embedder("legacy") == (True, None)
        info = store.get_gallery("legacy")
        assert info is not None and info.embedder is None
    finally:
        store.close()


def test_list_subjects_pages_in_id_order(store: GalleryStore) -> None:
    ids = ["zed", "Bob", "alice", "a:1", "a@x", "m-2", "m.1"]
    for i, sid in enumerate(ids):
        store.add_faces("g", sid, f"name {sid}", None, _faces(i))
    store.add_faces("g", "alice", None, None, _faces(99))
    seen, cursor, pages = [], None, 0
    while True:
        page, cursor = store.list_subjects("g", cursor, 3)
        seen += [(s.subject_id, s.face_count, s.name) for s in page]
        pages += 1
        if cursor is None:
            break
    assert [s for s, _, _ in seen] == sorted(ids) and pages == 3
    assert dict((s, n) for s, n, _ in seen)["alice"] == 2
    page, cursor = store.list_subjects("g", None, len(ids))
    assert len(page) == len(ids) and cursor is None
    assert store.list_subjects("g", "zed", 10) == ([], None)
    assert store.list_subjects("missing", None, 10) == ([], None)


def test_update_subject(store: GalleryStore) -> None:
    store.add_faces("g", "alice", "Alice", {"a": 1}, _faces(1))
    updated = store.update_subject("g", "alice", "Alicia", None)
    assert updated is not None and (updated.name, updated.metadata, updated.face_count) == ("Alicia", {"a": 1}, 1)
    assert len(updated.faces) == 1 and updated.updated_at >= updated.created_at
    updated = store.update_subject("g", "alice", None, {"b": [1, 2]})
    assert updated is not None and (updated.name, updated.metadata) == ("Alicia", {"b": [1, 2]})
    assert store.update_subject("g", "nobody", "X", None) is None
    assert store.subject_names("g", ["alice", "nobody"]) == {"alice": "Alicia"}
    assert store.subject_names("g", []) == {}


def test_delete_face_subject_and_gallery(store: GalleryStore) -> None:
    _, a = store.add_faces("g", "alice", None, None, _faces(1, 2))
    _, b = store.add_faces("g", "bob", None, None, _faces(3))
    _, c = store.add_faces("h", "carol", None, None, _faces(4))

    assert store.delete_face("g", "alice", a[0].face_id) is True
    assert store.delete_face("g", "alice", a[0].face_id) is False
    assert store.delete_face("g", "bob", a[1].face_id) is False  # not bob's face
    subject = store.get_subject("g", "alice")
    assert subject is not None and [f.face_id for f in subject.faces] == [a[1].face_id]

    assert store.delete_subject("g", "alice") == [a[1].face_id]
    assert store.delete_subject("g", "alice") is None
    assert store.get_subject("g", "alice") is None
    info = store.get_gallery("g")
    assert info is not None and (info.subjects, info.faces) == (1, 1)

    assert store.delete_gallery("g") == [b[0].face_id]
    assert store.delete_gallery("g") is None
    assert store.get_gallery("g") is None and store.get_subject("g", "bob") is None
    assert store.list_subjects("g", None, 10) == ([], None)
    assert [i.name for i in store.list_galleries()] == ["h"]
    assert [f.face_id for f in store.iter_faces()] == [c[0].face_id]
    # names are free again: a new gallery of the same name starts empty
    store.add_faces("g", "dave", None, None, _faces(5))
    info = store.get_gallery("g")
    assert info is not None and (info.subjects, info.faces) == (1, 1)


def test_change_feed_contents_and_order(store: GalleryStore) -> None:
    assert store.last_seq() == 0 and store.changes_since(0) == []
    _, a = store.add_faces("g", "alice", "Alice", None, _faces(1, 2))
    _, b = store.add_faces("g", "bob", None, None, _faces(3))
    mid = store.last_seq()
    store.update_subject("g", "bob", "Bob", None)
    store.delete_face("g", "alice", a[0].face_id)
    _, c = store.add_faces("h", "carol", None, None, _faces(4))
    store.delete_gallery("g")
    a1, b1, c1 = a[1].face_id, b[0].face_id, c[0].face_id
    assert _feed(store) == [
        ("add", "g", a[0].face_id, "alice"), ("add", "g", a1, "alice"), ("add", "g", b1, "bob"),
        ("remove", "g", a[0].face_id, "alice"), ("add", "h", c1, "carol"),
        ("remove", "g", a1, "alice"), ("remove", "g", b1, "bob"),
    ]
    changes = store.changes_since(0)
    seqs = [c.seq for c in changes]
    assert seqs == sorted(set(seqs)) and seqs[-1] == store.last_seq()
    assert _feed(store, mid)[0] == ("remove", "g", a[0].face_id, "alice")
    assert [c.seq for c in store.changes_since(0, limit=2)] == seqs[:2]
    assert store.changes_since(store.last_seq()) == []


def test_embeddings_and_faces_for_the_index(store: GalleryStore) -> None:
    _, a = store.add_faces("g", "alice", None, None, _faces(1, 2))
    _, b = store.add_faces("h", "bob", None, None, _faces(3))
    emb = store.subject_embeddings("g", "alice")
    assert emb.shape == (2, DIM) and emb.dtype == np.float32
    np.testing.assert_array_equal(emb, np.vstack([_vec(1), _vec(2)]))
    assert store.subject_embeddings("g", "nobody").shape[0] == 0
    every = list(store.iter_faces())
    assert [(f.gallery, f.face_id, f.subject_id) for f in every] == [
        ("g", a[0].face_id, "alice"), ("g", a[1].face_id, "alice"), ("h", b[0].face_id, "bob")]
    np.testing.assert_array_equal(every[2].embedding, _vec(3))
    assert [f.face_id for f in store.iter_faces("h")] == [b[0].face_id]
    got = store.get_faces([b[0].face_id, 10_000, a[0].face_id])
    assert sorted(f.face_id for f in got) == sorted([a[0].face_id, b[0].face_id])
    assert store.get_faces([]) == []


def test_manager_follows_another_writer(store: GalleryStore, tmp_path: Path) -> None:
    """A second process's index picks up this store's writes through the change feed."""
    other: GalleryStore
    if isinstance(store, SqliteStore):
        other = SqliteStore(store.path)
    else:
        assert isinstance(store, RedisStore)
        other = _same_redis(store)
    follower = FaissGalleryManager(other, DIM, IndexSettings(), follow_interval_s=0.05)
    follower.load()
    assert follower.ready
    follower.start_following()
    try:
        _, a = store.add_faces("g", "alice", None, None, _faces(1))
        _wait(lambda: follower.index_size("g") == 1)
        hit = follower.search("g", _vec(1)[None, :], 1)[0][0]
        assert (hit.face_id, hit.subject_id) == (a[0].face_id, "alice") and hit.similarity > 0.99
        store.delete_subject("g", "alice")
        _wait(lambda: follower.index_size("g") == 0)
    finally:
        follower.stop()
        other.close()


def _same_redis(store: RedisStore) -> RedisStore:
    kwargs = store._r.get_connection_kwargs()
    return RedisStore(f"redis://{kwargs['host']}:{kwargs['port']}/{kwargs.get('db', 0)}", prefix=store.prefix)


def _wait(condition: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.01)
    raise AssertionError(f"condition not met within {timeout} s")


# -- Redis only -------------------------------------------------------------------------------------------------
def test_redis_feed_publishes_renames_and_writes_are_atomic(redis_server: _RedisServer) -> None:
    store = RedisStore(_redis_url(redis_server))
    store.add_faces("g", "alice", "Alice", None, _faces(1))
    store.add_faces("g", "alice", "Alicia", None, _faces(2))  # rename through enrolment
    store.update_subject("g", "alice", None, {"x": 1})
    assert [(c.seq, c.kind) for c in store.changes_since(0)] == [(1, "add"), (2, "update"), (3, "add"), (4, "update")]

    # concurrent writers: unique face ids, contiguous sequence numbers, one feed entry per face
    def enrol(worker: int) -> None:
        for i in range(10):
            store.add_faces("c", f"w{worker}-{i}", None, None, _faces(worker * 100 + i, worker * 100 + i + 50))

    threads = [threading.Thread(target=enrol, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    changes = store.changes_since(4)
    assert [c.seq for c in changes] == list(range(5, 5 + 80))
    assert len({c.face_id for c in changes}) == 80 and {c.kind for c in changes} == {"add"}
    info = store.get_gallery("c")
    assert info is not None and (info.subjects, info.faces) == (40, 80)
    store.close()


def test_redis_retried_write_is_applied_once(redis_server: _RedisServer) -> None:
    store = RedisStore(_redis_url(redis_server))
    args = [store.prefix, "token-1", "epoch", 1000, "g", "alice", "0", "null", "0", "{}", "1.0", 1,
            "mobilefacenet@test", "1", _vec(1).tobytes(), "null", "null", b"", b""]
    first = store._scripts["add"](args=args)
    second = store._scripts["add"](args=args)  # the same operation sent again after a lost reply
    assert first == second == b"1"
    assert store.get_subject("g", "alice", with_faces=False).face_count == 1  # type: ignore[union-attr]
    assert store.last_seq() == 1
    store.close()


def test_redis_truncated_feed_makes_the_follower_reload(redis_server: _RedisServer) -> None:
    url = _redis_url(redis_server)
    writer = RedisStore(url, stream_maxlen=10)  # MAXLEN ~ trims whole stream nodes (100 entries each)
    writer.add_faces("g", "first", None, None, _faces(0))
    follower = FaissGalleryManager(RedisStore(url), DIM, IndexSettings(), follow_interval_s=0.05)
    follower.load()
    assert follower.index_size("g") == 1
    for i in range(1, 301):
        writer.add_faces("g", f"s{i}", None, None, _faces(i))
    with pytest.raises(FeedTruncated):
        follower.catch_up()
    follower.start_following()
    try:
        _wait(lambda: follower.ready and follower.index_size("g") == 301)
        assert follower.applied_seq == writer.last_seq() == 301
    finally:
        follower.stop()

    # the data went back in time (e.g. a Redis restored from an older backup): reload too
    reader = RedisStore(url)
    assert reader.last_seq() == 301
    keys = writer._r.keys(writer.prefix + "*")
    writer._r.delete(*keys)
    with pytest.raises(FeedTruncated):
        reader.changes_since(301)
    writer.close()
    reader.close()


def test_redis_unreachable_raises_store_unavailable_quickly() -> None:
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there; construction does not connect
    for call in (store.ping, store.list_galleries, lambda: store.add_faces("g", "a", None, None, _faces(1)),
                 lambda: store.changes_since(0), lambda: list(store.iter_faces())):
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            call()
        assert time.monotonic() - started < 3.0
    store.close()


def test_redis_hung_raises_store_unavailable_within_the_read_timeout(redis_server: _RedisServer) -> None:
    store = RedisStore(_redis_url(redis_server))
    store.add_faces("g", "alice", None, None, _faces(1))
    assert redis_server.proc is not None
    redis_server.proc.send_signal(signal.SIGSTOP)  # accepts connections, answers nothing
    try:
        for call in (store.ping, lambda: store.get_subject("g", "alice"),
                     lambda: store.add_faces("g", "bob", None, None, _faces(2))):
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                call()
            assert time.monotonic() - started < 2.5
    finally:
        redis_server.proc.send_signal(signal.SIGCONT)
    store.ping()
    subject = store.get_subject("g", "alice")
    assert subject is not None and subject.face_count == 1
    store.close()


def test_follower_started_while_redis_is_down_becomes_ready_when_it_is_back(redis_server_bin: str,
                                                                           tmp_path: Path) -> None:
    server = _RedisServer(redis_server_bin, tmp_path / "late")  # not started yet
    manager = FaissGalleryManager(RedisStore(server.url), DIM, IndexSettings(), follow_interval_s=0.05)
    with pytest.raises(StoreUnavailable):
        manager.load()
    manager.start_following()
    try:
        time.sleep(0.3)
        assert not manager.ready
        server.start()
        RedisStore(server.url).add_faces("g", "alice", None, None, _faces(1))
        _wait(lambda: manager.ready and manager.index_size("g") == 1)
        server.kill()
        _wait(lambda: not manager.ready)  # a failed round makes it not ready
        server.start()  # AOF: the data is back
        _wait(lambda: manager.ready)
        assert manager.index_size("g") == 1
    finally:
        manager.stop()
        server.stop()


# -- two real service replicas on one real Redis ----------------------------------------------------------------
class _Replica(ServiceProcess):
    """A service process whose log goes to a known file (the base class writes it to a file, never a pipe)."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        super().__init__(env)
        self.log = log


class _Cluster:
    def __init__(self, server: _RedisServer, env: dict[str, str], a: _Replica, b: _Replica, lfw: Path) -> None:
        self.redis, self.env, self.a, self.b, self.lfw = server, env, a, b, lfw
        self.ca = httpx.Client(base_url=a.url, timeout=10.0)
        self.cb = httpx.Client(base_url=b.url, timeout=10.0)

    def enrol(self, client: httpx.Client, gallery: str, subject: str, person: str, number: int = 1) -> httpx.Response:
        photo = lfw_photo(self.lfw, person, number)
        return client.post(f"/v1/galleries/{gallery}/subjects/{subject}/faces",
                           files=[("images", (photo.name, photo.read_bytes(), "image/jpeg"))],
                           data={"name": person, "allow_multiple": "true"})

    def identify(self, client: httpx.Client, gallery: str, person: str, number: int = 2) -> httpx.Response:
        photo = lfw_photo(self.lfw, person, number)
        return client.post("/v1/identify", files={"image": (photo.name, photo.read_bytes(), "image/jpeg")},
                           data={"gallery": gallery, "top_k": "3"})


def _top(response: httpx.Response) -> str | None:
    assert response.status_code == 200, response.text
    candidates = response.json()["faces"][0]["candidates"]
    return candidates[0]["subject_id"] if candidates else None


@pytest.fixture(scope="module")
def cluster(redis_server_bin: str, model_dir: Path, lfw_dir: Path,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Cluster]:
    base = tmp_path_factory.mktemp("replicas")
    server = _RedisServer(redis_server_bin, base / "redis").start()
    env = {"ANYFACE_STORE": server.url, "ANYFACE_MODEL_DIR": str(model_dir), "ANYFACE_INTRA_OP_THREADS": "1",
           "ANYFACE_FAISS_THREADS": "1"}
    a = _Replica(env, base / "a.log")
    b = _Replica(env, base / "b.log")
    try:
        a.start()
        b.start()
        made = _Cluster(server, env, a, b, lfw_dir)
        yield made
        made.ca.close()
        made.cb.close()
    finally:
        a.stop()
        b.stop()
        server.stop()


def test_enrol_on_one_replica_identify_on_the_other(cluster: _Cluster, lfw_dir: Path) -> None:
    people = people_with_photos(lfw_dir, 2, 5)
    delays = []
    for i, person in enumerate(people):
        enrolled = cluster.enrol(cluster.ca, "shared", f"p{i}", person)
        acked = time.monotonic()
        assert enrolled.status_code == 201, enrolled.text
        found = None
        while time.monotonic() - acked < 1.0 and found is None:
            # another photo of the same person, searched on the other replica
            if _top(cluster.identify(cluster.cb, "shared", person)) == f"p{i}":
                found = time.monotonic() - acked
        assert found is not None, f"{person} enrolled on A was not identifiable on B within 1 s"
        delays.append(found)
    print(f"\npropagation A -> B (enrol acknowledged -> identified on B): "
          f"median {statistics.median(delays) * 1000:.0f} ms, max {max(delays) * 1000:.0f} ms, n={len(delays)}")
    assert cluster.cb.get("/v1/galleries/shared/subjects/p0").json()["name"] == people[0]

    deleted = cluster.ca.delete("/v1/galleries/shared/subjects/p0")
    assert deleted.status_code == 200, deleted.text
    gone = time.monotonic()
    while _top(cluster.identify(cluster.cb, "shared", people[0])) == "p0":
        assert time.monotonic() - gone < 1.0, "a subject deleted on A was still identified on B after 1 s"
    assert cluster.cb.get("/v1/galleries/shared/subjects/p0").status_code == 404


def test_redis_outage_answers_503_keeps_acknowledged_enrolments_and_recovers(cluster: _Cluster,
                                                                             lfw_dir: Path) -> None:
    people = people_with_photos(lfw_dir, 2, 40)[5:]
    acknowledged: dict[str, str] = {}
    outcomes: list[tuple[str, int, str | None, float]] = []
    stop = threading.Event()

    def traffic(client: httpx.Client, kind: str) -> None:
        i = 0
        while not stop.is_set():
            person = people[i % len(people)]
            started = time.monotonic()
            if kind == "enrol":
                subject = f"o{i}"
                response = cluster.enrol(client, "outage", subject, person)
                if response.status_code == 201:
                    acknowledged[subject] = person
            else:
                response = client.get("/readyz") if i % 2 else cluster.identify(client, "outage", people[0])
            code = response.json().get("error", {}).get("code") if response.status_code >= 400 else None
            outcomes.append((kind, response.status_code, code, time.monotonic() - started))
            i += 1
            time.sleep(0.05)

    # a few enrolments first, so that identification has something to find
    for i in range(2):
        assert cluster.enrol(cluster.ca, "outage", f"o-pre{i}", people[i]).status_code == 201
        acknowledged[f"o-pre{i}"] = people[i]
    threads = [threading.Thread(target=traffic, args=(cluster.ca, "enrol")),
               threading.Thread(target=traffic, args=(cluster.cb, "read"))]
    for t in threads:
        t.start()
    time.sleep(1.0)
    before = len(acknowledged)
    cluster.redis.kill()  # a crash, not a clean shutdown: only fsynced writes survive
    down_at = time.monotonic()
    time.sleep(0.5)
    ready_a, ready_b = cluster.ca.get("/readyz"), cluster.cb.get("/readyz")
    assert ready_a.status_code == ready_b.status_code == 503
    assert ready_a.json()["checks"]["store"] is False and ready_a.json()["error"]["code"] == "not_ready"
    refused = cluster.enrol(cluster.ca, "outage", "refused", people[3])
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "store_unavailable", refused.text
    time.sleep(max(0.0, 3.0 - (time.monotonic() - down_at)))
    cluster.redis.start()  # same port, same AOF directory
    restarted = time.monotonic()

    recovered = {}
    for name, client in (("a", cluster.ca), ("b", cluster.cb)):
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() - restarted < 10.0, f"replica {name} not ready 10 s after Redis came back"
            time.sleep(0.05)
        recovered[name] = time.monotonic() - restarted
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join(30)

    during = [o for o in outcomes if o[1] != 200 and o[1] != 201]
    print(f"\noutage: {len(outcomes)} requests, {before} enrolments acknowledged before the crash, "
          f"{len(acknowledged)} in all; answers during the outage: "
          f"{sorted({(s, c) for _, s, c, _ in during})}; slowest answer {max(o[3] for o in outcomes):.2f} s; "
          f"ready again after Redis restart: A {recovered['a']:.2f} s, B {recovered['b']:.2f} s")
    assert during, "no request noticed the outage"
    assert all(s == 503 and c in ("store_unavailable", "not_ready") for _, s, c, _ in during), during
    assert any(k == "enrol" and c == "store_unavailable" for k, _, c, _ in during)
    assert max(o[3] for o in outcomes) < 5.0, "a request hung during the outage"

    # every acknowledged enrolment survived the crash, and both replicas find them
    for subject, person in acknowledged.items():
        got = cluster.cb.get(f"/v1/galleries/outage/subjects/{subject}")
        assert got.status_code == 200, f"acknowledged enrolment {subject} lost: {got.text}"
        assert got.json()["name"] == person
    for subject, person in acknowledged.items():
        for client in (cluster.ca, cluster.cb):
            response = cluster.identify(client, "outage", person, number=1)  # the enrolled photo
            top = response.json()["faces"][0]["candidates"]
            assert any(c["subject_id"] == subject or acknowledged.get(c["subject_id"]) == person for c in top)
    # and writes work again, and propagate
    assert cluster.enrol(cluster.ca, "outage", "after", people[-1]).status_code == 201
    deadline = time.monotonic() + 1.0
    while _top(cluster.identify(cluster.cb, "outage", people[-1], number=1)) not in ("after", *[
            s for s, p in acknowledged.items() if p == people[-1]]):
        assert time.monotonic() < deadline


def test_a_replica_started_later_is_ready_only_once_it_has_the_gallery(cluster: _Cluster, lfw_dir: Path,
                                                                        tmp_path: Path) -> None:
    people = people_with_photos(lfw_dir, 2, 48)[45:]
    for i, person in enumerate(people):
        assert cluster.enrol(cluster.ca, "late", f"l{i}", person).status_code == 201
    late = _Replica(cluster.env, tmp_path / "c.log")
    try:
        late.start()  # returns at the first /readyz 200
        with httpx.Client(base_url=late.url, timeout=10.0) as client:
            for i, person in enumerate(people):  # no waiting: ready means loaded and caught up
                assert _top(cluster.identify(client, "late", person, number=1)) == f"l{i}"  # the enrolled photo
    finally:
        late.stop()

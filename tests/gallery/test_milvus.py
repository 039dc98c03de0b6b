"""Milvus as the galleries' vector engine, against a real engine: a milvus-lite server process (the Milvus API over
gRPC, file-backed). Search and deletes, a restart that needs no index rebuild, Milvus going down (503, nothing
acknowledged lost, recovery without a restart) and the repair that reconciles Milvus with the store; then the
REST API on real models and LFW photos."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.gallery.milvus import MilvusEngine, MilvusGalleryManager, repair
from service.gallery.sqlite_store import SqliteStore
from service.gallery.store import NewFace, VectorEngineUnavailable
from service.settings import MilvusSettings, Settings
from tests.conftest import lfw_photo
from tests.milvus_server import DIM, MilvusLite


@pytest.fixture
def milvus(tmp_path: Path) -> Iterator[MilvusLite]:
    server = MilvusLite(tmp_path / "milvus").start()
    yield server
    server.stop()


def _vec(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def _manager(milvus: MilvusLite, tmp_path: Path, **settings: object) -> MilvusGalleryManager:
    engine = MilvusEngine(MilvusSettings(milvus_uri=milvus.uri, milvus_timeout_s=3, **settings), DIM)  # type: ignore[arg-type]
    manager = MilvusGalleryManager(SqliteStore(tmp_path / "g.sqlite3"), DIM, engine)
    manager.load()
    return manager


@pytest.mark.parametrize("index", ["HNSW", "FLAT", "IVF_FLAT"])
def test_search_and_deletes(milvus: MilvusLite, tmp_path: Path, index: str) -> None:
    params = {"HNSW": '{"M": 16, "efConstruction": 100}', "FLAT": "{}", "IVF_FLAT": '{"nlist": 16}'}[index]
    m = _manager(milvus, tmp_path, milvus_index_type=index, milvus_index_params=params,
                 milvus_search_params='{"ef": 64}' if index == "HNSW" else "{}")
    for i in range(20):
        m.enroll("g", f"s{i}", None, None, [NewFace(_vec(i)), NewFace(_vec(1000 + i))])
    m.enroll("other", "s0", None, None, [NewFace(_vec(0))])
    assert m.index_kind("g") == f"milvus-{index.lower()}" and m.index_size("g") == 40
    [hits] = m.search("g", _vec(7)[None], 5)
    assert hits[0].subject_id == "s7" and hits[0].similarity > 0.99
    assert len({h.subject_id for h in hits}) == len(hits) == 5  # the best face of each subject
    assert m.delete_subject("g", "s7")
    assert m.search("g", _vec(7)[None], 1)[0][0].subject_id != "s7"
    subject = m.store.get_subject("g", "s3")
    assert subject is not None and m.delete_face("g", "s3", subject.faces[0].face_id)
    assert m.search("g", _vec(3)[None], 1)[0][0].subject_id != "s3"  # that face is gone
    assert m.delete_gallery("g") and m.index_size("g") == 0 and m.index_size("other") == 1
    # a new process: no index to rebuild, the galleries are searchable at once
    again = _manager(milvus, tmp_path, milvus_index_type=index, milvus_index_params=params)
    assert again.ready and again.search("other", _vec(0)[None], 1)[0][0].subject_id == "s0"
    assert again.index_params("other")["index_type"] == index  # the collection's own index, as Milvus describes it


def test_a_collection_keeps_the_index_it_was_made_with(milvus: MilvusLite, tmp_path: Path) -> None:
    """Index settings apply to a new collection: a service restarted with other ones reports (and warns about)
    the index the collection has, not the one it was asked for."""
    m = _manager(milvus, tmp_path, milvus_index_type="FLAT", milvus_index_params="{}", milvus_search_params="{}")
    m.enroll("g", "alice", None, None, [NewFace(_vec(1))])
    again = _manager(milvus, tmp_path, milvus_index_type="HNSW")
    assert again.index_kind("g") == "milvus-flat" and again.index_params("g")["index_type"] == "FLAT"
    assert again.search("g", _vec(1)[None], 1)[0][0].subject_id == "alice"


def test_milvus_down_then_back_loses_nothing(milvus: MilvusLite, tmp_path: Path) -> None:
    m = _manager(milvus, tmp_path)
    m.enroll("g", "alice", None, None, [NewFace(_vec(1), source="a1")])
    milvus.kill()
    assert not m.ready
    with pytest.raises(VectorEngineUnavailable):  # answered 503: the face is in the store, not yet searchable
        m.enroll("g", "bob", None, None, [NewFace(_vec(2), source="b1")])
    with pytest.raises(VectorEngineUnavailable):
        m.search("g", _vec(1)[None], 1)
    milvus.start()  # the same data, on the same port: no restart of ours
    assert m.ready
    assert m.search("g", _vec(1)[None], 1)[0][0].subject_id == "alice"  # acknowledged: still there
    # the client retries bob's enrolment with the same source: nothing is added twice, and bob becomes searchable
    _, records = m.store.add_faces("g", "bob", None, None, [NewFace(_vec(2), source="b1")])
    assert records[0].existing
    m.ensure_indexed("g", [records[0].face_id])
    assert m.search("g", _vec(2)[None], 1)[0][0].subject_id == "bob"
    assert m.store.get_gallery("g").faces == 2  # type: ignore[union-attr]


def test_repair_reconciles_milvus_with_the_store(milvus: MilvusLite, tmp_path: Path) -> None:
    m = _manager(milvus, tmp_path)
    for i in range(5):
        m.enroll("g", f"s{i}", None, None, [NewFace(_vec(i))])
    m.store.add_faces("g", "missing", None, None, [NewFace(_vec(50))])  # in the store only
    gone = m.store.get_subject("g", "s4")
    assert gone is not None
    m.store.delete_subject("g", "s4")  # in Milvus only
    assert m.search("g", _vec(50)[None], 1)[0][0].subject_id != "missing"
    assert "s4" not in {h.subject_id for h in m.search("g", _vec(4)[None], 3)[0]}  # hits checked against the store
    assert repair(m.store, m.engine) == {"upserted": 5, "removed": 1}
    assert m.search("g", _vec(50)[None], 1)[0][0].subject_id == "missing"
    assert m.index_size("g") == 5


def test_repair_keeps_a_face_enrolled_while_it_runs(milvus: MilvusLite, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The repair reads the store, then Milvus: a face enrolled in between is in Milvus but not in what it read.
    It asks the store again before deleting, so the face stays searchable."""
    m = _manager(milvus, tmp_path)
    m.enroll("g", "alice", None, None, [NewFace(_vec(1))])
    m.enroll("g", "bob", None, None, [NewFace(_vec(2))])
    snapshot = [f for f in m.store.iter_faces() if f.subject_id == "alice"]  # bob came after the store was read
    monkeypatch.setattr(m.store, "iter_faces", lambda gallery=None: iter(snapshot))
    assert repair(m.store, m.engine) == {"upserted": 1, "removed": 0}
    assert m.search("g", _vec(2)[None], 1)[0][0].subject_id == "bob"


def test_repair_lists_more_faces_than_one_query_answers(milvus: MilvusLite, tmp_path: Path) -> None:
    """A Milvus query answers at most 16,384 rows: the repair pages through the collection, so that every one of
    20,000 stray vectors (a gallery deleted from the store whose Milvus half failed) is found and removed."""
    m = _manager(milvus, tmp_path, milvus_index_type="FLAT", milvus_index_params="{}", milvus_search_params="{}")
    m.enroll("kept", "alice", None, None, [NewFace(_vec(1))])
    stray = np.random.default_rng(0).standard_normal((20_000, DIM)).astype(np.float32)
    m.engine.upsert("gone", list(range(10**6, 10**6 + len(stray))), ["x"] * len(stray), stray)
    assert m.index_size("gone") == 20_000
    assert repair(m.store, m.engine) == {"upserted": 1, "removed": 20_000}
    assert m.index_size("gone") == 0 and m.index_size("kept") == 1
    assert m.search("kept", _vec(1)[None], 1)[0][0].subject_id == "alice"


@pytest.fixture
def api(milvus: MilvusLite, model_dir: Path, lfw_dir: Path, tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(model_dir=model_dir, store=f"sqlite:///{tmp_path / 'api.sqlite3'}", vector_engine="milvus",
                        milvus=MilvusSettings(milvus_uri=milvus.uri, milvus_collection="api", milvus_timeout_s=3))
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def _enrol(api: TestClient, lfw: Path, person: str, numbers: list[int]):  # type: ignore[no-untyped-def]
    files = [("images", (f"{n}.jpg", lfw_photo(lfw, person, n).read_bytes(), "image/jpeg")) for n in numbers]
    return api.post(f"/v1/galleries/g/subjects/{person}/faces", files=files,
                    data={"allow_multiple": "true", "sources": [f"{person}-{n}" for n in numbers]})


def test_the_api_on_milvus(api: TestClient, milvus: MilvusLite, lfw_dir: Path) -> None:
    people = ["Aaron_Peirsol", "Abdullah_Gul", "Adrien_Brody"]
    for person in people:
        assert _enrol(api, lfw_dir, person, [1, 2]).status_code == 201
    gallery = api.get("/v1/galleries/g").json()
    assert (gallery["index_type"], gallery["indexed_faces"], gallery["faces"]) == ("milvus-hnsw", 6, 6)
    assert gallery["index_params"] == {"index_type": "HNSW", "metric_type": "IP", "consistency": "Strong",
                                       "build": {"M": 32, "efConstruction": 200}, "search": {"ef": 1024}}
    probe = {"image": ("p.jpg", lfw_photo(lfw_dir, "Aaron_Peirsol", 3).read_bytes(), "image/jpeg")}
    found = api.post("/v1/identify", files=probe, data={"gallery": "g"}).json()
    assert found["faces"][0]["candidates"][0]["subject_id"] == "Aaron_Peirsol"  # right after enrolment (Strong)
    assert api.delete("/v1/galleries/g/subjects/Aaron_Peirsol").status_code == 200
    after = api.post("/v1/identify", files=probe, data={"gallery": "g"}).json()
    assert all(c["subject_id"] != "Aaron_Peirsol" for c in after["faces"][0]["candidates"])

    milvus.kill()
    down = _enrol(api, lfw_dir, "Al_Pacino", [1])
    assert down.status_code == 503 and down.json()["error"]["code"] == "vector_engine_unavailable"
    ready = api.get("/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["gallery_index"] is False
    milvus.start()
    assert api.get("/readyz").status_code == 200  # back without a restart
    retry = _enrol(api, lfw_dir, "Al_Pacino", [1])  # the same photo: not added twice, now searchable
    assert retry.status_code == 200 and retry.json()["faces"][0]["duplicate"] is True
    pacino = {"image": ("p.jpg", lfw_photo(lfw_dir, "Al_Pacino", 2).read_bytes(), "image/jpeg")}
    assert api.post("/v1/identify", files=pacino, data={"gallery": "g"}).json()["faces"][0]["candidates"][0][
        "subject_id"] == "Al_Pacino"
    assert api.get("/v1/galleries/g").json()["faces"] == 5


def test_a_restarted_service_searches_at_once(milvus: MilvusLite, model_dir: Path, lfw_dir: Path,
                                              tmp_path: Path) -> None:
    settings = Settings(model_dir=model_dir, store=f"sqlite:///{tmp_path / 'r.sqlite3'}", vector_engine="milvus",
                        milvus=MilvusSettings(milvus_uri=milvus.uri, milvus_collection="restart"))
    with TestClient(create_app(settings), raise_server_exceptions=False) as first:
        assert _enrol(first, lfw_dir, "Aaron_Peirsol", [1, 2]).status_code == 201
    with TestClient(create_app(settings), raise_server_exceptions=False) as second:  # a new process: no rebuild
        assert second.get("/readyz").status_code == 200
        probe = {"image": ("p.jpg", lfw_photo(lfw_dir, "Aaron_Peirsol", 3).read_bytes(), "image/jpeg")}
        found = second.post("/v1/identify", files=probe, data={"gallery": "g"}).json()
        assert found["faces"][0]["candidates"][0]["subject_id"] == "Aaron_Peirsol"
        assert second.get("/v1/galleries/g").json()["indexed_faces"] == 2

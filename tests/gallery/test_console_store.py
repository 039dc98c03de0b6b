"""What the web console needs from a store, in both stores: face thumbnails kept with the face and removed with it,
subject search by id or name, the subject's first face, and empty galleries."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

from service.gallery.sqlite_store import SqliteStore
from service.gallery.store import GalleryStore, NewFace
from tests.gallery.test_redis_store import _faces

JPEG_A, JPEG_B = b"\xff\xd8thumb-a\xff\xd9", b"\xff\xd8thumb-b\xff\xd9"


def _with_thumbnails(*pairs: tuple[int, bytes | None]) -> list[NewFace]:
    return [dataclasses.replace(face, thumbnail=jpeg) for face, (_, jpeg) in zip(_faces(*[s for s, _ in pairs]), pairs,
                                                                                   strict=True)]


def test_thumbnails_are_kept_with_their_face_and_removed_with_it(store: GalleryStore) -> None:
    _, (a1, a2) = store.add_faces("g", "alice", None, None, _with_thumbnails((1, JPEG_A), (2, None)))
    _, (b1,) = store.add_faces("g", "bob", None, None, _with_thumbnails((3, JPEG_B)))
    assert store.get_thumbnail("g", "alice", a1.face_id) == (True, JPEG_A)
    assert store.get_thumbnail("g", "alice", a2.face_id) == (True, None)  # enrolled without one
    assert store.get_thumbnail("g", "bob", b1.face_id) == (True, JPEG_B)
    assert store.get_thumbnail("g", "alice", b1.face_id) == (False, None)  # not alice's face
    assert store.get_thumbnail("h", "bob", b1.face_id) == (False, None)  # not that gallery
    # the thumbnail is not part of what the index reads
    assert {f.face_id for f in store.iter_faces("g")} == {a1.face_id, a2.face_id, b1.face_id}

    assert store.delete_face("g", "alice", a1.face_id)
    assert store.get_thumbnail("g", "alice", a1.face_id) == (False, None)
    assert store.delete_subject("g", "bob") == [b1.face_id]
    assert store.get_thumbnail("g", "bob", b1.face_id) == (False, None)
    _, (c1,) = store.add_faces("g", "carol", None, None, _with_thumbnails((4, JPEG_A)))
    assert store.delete_gallery("g") is not None
    assert store.get_thumbnail("g", "carol", c1.face_id) == (False, None)
    if hasattr(store, "_db"):  # SQLite: no thumbnail row outlives its face
        assert store._db.execute("SELECT COUNT(*) FROM thumbnails").fetchone()[0] == 0  # type: ignore[attr-defined]
    else:  # Redis: no face hash is left behind
        assert not list(store._r.scan_iter(store.prefix + "f:*"))  # type: ignore[attr-defined]


def test_subjects_are_searched_by_id_or_name_ignoring_case(store: GalleryStore) -> None:
    for i in range(30):
        store.add_faces("g", f"s{i:03d}", f"Person {'Ægir' if i % 10 == 3 else 'Bo'} {i}", None, _faces(i))
    store.add_faces("g", "zed", None, None, _faces(99))  # no name
    page, cursor = store.list_subjects("g", None, 2, "ægir")
    assert [s.subject_id for s in page] == ["s003", "s013"] and cursor == "s013"
    page, cursor = store.list_subjects("g", cursor, 2, "ÆGIR")
    assert [s.subject_id for s in page] == ["s023"] and cursor is None
    assert [s.subject_id for s in store.list_subjects("g", None, 10, "ZE")[0]] == ["zed"]  # by id
    assert [s.subject_id for s in store.list_subjects("g", None, 10, "s02")[0]] == [f"s02{i}" for i in range(10)]
    assert store.list_subjects("g", None, 10, "nobody") == ([], None)
    first = store.list_subjects("g", None, 1)[0][0]
    assert first.first_face_id is not None and first.face_count == 1


def test_first_face_id_is_the_subjects_oldest_face(store: GalleryStore) -> None:
    _, records = store.add_faces("g", "alice", None, None, _faces(1, 2, 3))
    store.delete_face("g", "alice", records[0].face_id)
    [listed], _ = store.list_subjects("g", None, 10)
    subject = store.get_subject("g", "alice", with_faces=False)
    assert subject is not None
    assert listed.first_face_id == subject.first_face_id == records[1].face_id


def test_empty_galleries_are_created_once_and_record_their_embedder(store: GalleryStore) -> None:
    assert store.create_gallery("g", "model@abc") is True
    assert store.create_gallery("g", "other@def") is False  # exists: nothing written
    info = store.get_gallery("g")
    assert info is not None and (info.subjects, info.faces, info.embedder) == (0, 0, "model@abc")
    assert store.gallery_embedder("g") == (True, "model@abc")
    assert [g.name for g in store.list_galleries()] == ["g"]
    assert store.list_subjects("g", None, 10) == ([], None)
    assert store.last_seq() == 0  # an empty gallery is no change to any index
    assert store.delete_gallery("g") == []
    assert store.get_gallery("g") is None


def test_a_store_made_before_thumbnails_opens_and_keeps_them(tmp_path: Path) -> None:
    size = 4096
    path = tmp_path / "old.sqlite3"
    old = SqliteStore(path)
    old.add_faces("g", "alice", None, None, _faces(1))
    old.close()
    with sqlite3.connect(path) as db:  # the store as it was before thumbnails
        db.execute("DROP TABLE thumbnails")
    store = SqliteStore(path)
    _, (face,) = store.add_faces("g", "bob", None, None, _with_thumbnails((2, b"x" * size)))
    assert store.get_thumbnail("g", "bob", face.face_id) == (True, b"x" * size)
    [alice] = store.list_subjects("g", None, 1)[0]
    assert store.get_thumbnail("g", "alice", alice.first_face_id or 0) == (True, None)
    store.close()

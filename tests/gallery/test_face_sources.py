"""Idempotent enrolment in both stores: a subject holds at most one face per source (the client's id of a photo),
so a retried or resumed enrolment adds each photo once; deleting the face frees its source."""

from __future__ import annotations

import dataclasses

from service.gallery.store import GalleryStore, NewFace
from tests.gallery.test_redis_store import _faces


def _sourced(*pairs: tuple[int, str | None]) -> list[NewFace]:
    return [dataclasses.replace(face, source=source)
            for face, (_, source) in zip(_faces(*[seed for seed, _ in pairs]), pairs, strict=True)]


def test_a_source_is_added_once_per_subject(store: GalleryStore) -> None:
    _, first = store.add_faces("g", "alice", None, None, _sourced((1, "sha-1"), (2, "sha-2"), (3, None)))
    assert [(r.source, r.existing) for r in first] == [("sha-1", False), ("sha-2", False), (None, False)]
    seq = store.last_seq()
    # the same photos again (a retry), plus a new one: only the new one is added
    _, again = store.add_faces("g", "alice", None, None, _sourced((1, "sha-1"), (4, "sha-4"), (2, "sha-2")))
    assert [r.existing for r in again] == [True, False, True]
    assert again[0].face_id == first[0].face_id and again[2].face_id == first[1].face_id
    assert again[0].box == first[0].box and again[0].created_at == first[0].created_at
    assert [c.face_id for c in store.changes_since(seq) if c.kind == "add"] == [again[1].face_id]
    subject = store.get_subject("g", "alice")
    assert subject is not None and subject.face_count == 4
    assert {f.source for f in subject.faces} == {"sha-1", "sha-2", "sha-4", None}
    # the same source in one write: added once
    _, twice = store.add_faces("g", "bob", None, None, _sourced((5, "sha-5"), (6, "sha-5")))
    assert [r.existing for r in twice] == [False, True] and twice[0].face_id == twice[1].face_id
    # sources are per subject: another subject may have the same photo
    _, other = store.add_faces("g", "carol", None, None, _sourced((1, "sha-1")))
    assert not other[0].existing
    assert set(store.find_sources("g", "alice", ["sha-1", "sha-4", "sha-9"])) == {"sha-1", "sha-4"}
    assert store.find_sources("g", "dave", ["sha-1"]) == {}


def test_deleting_frees_the_source(store: GalleryStore) -> None:
    _, (face,) = store.add_faces("g", "alice", None, None, _sourced((1, "sha-1")))
    assert store.delete_face("g", "alice", face.face_id)
    assert store.find_sources("g", "alice", ["sha-1"]) == {}
    _, (again,) = store.add_faces("g", "alice", None, None, _sourced((1, "sha-1")))
    assert not again.existing and again.face_id != face.face_id
    assert store.delete_subject("g", "alice") is not None
    _, (third,) = store.add_faces("g", "alice", None, None, _sourced((1, "sha-1")))
    assert not third.existing
    assert store.delete_gallery("g") is not None
    _, (fourth,) = store.add_faces("g", "alice", None, None, _sourced((1, "sha-1")))
    assert not fourth.existing

"""The embedded gallery store: one SQLite file in WAL mode with `synchronous=FULL`.

An enrolment is one transaction that is committed before the API answers, so an acknowledged enrolment survives
`kill -9`. The `changes` table is the change feed that other worker processes on the same file follow.

A write that fails is rolled back whole. SQLite's errors become `StoreUnavailable` (locked, I/O error), or
`StoreFull` when there is no room (`SQLITE_FULL`: the disk is full, or the file reached `PRAGMA max_page_count`).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from service.gallery.store import (
    Change,
    EmbedderCheck,
    EmbedderConflict,
    FaceRecord,
    GalleryInfo,
    GalleryStore,
    IndexedFace,
    NewFace,
    StoredFace,
    StoreFull,
    StoreUnavailable,
    Subject,
    matches,
    stored_metadata,
)

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS galleries (
    name TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    embedder TEXT
);
CREATE TABLE IF NOT EXISTS subjects (
    gallery TEXT NOT NULL REFERENCES galleries(name) ON DELETE CASCADE,
    subject_id TEXT NOT NULL,
    name TEXT,
    metadata TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (gallery, subject_id)
);
CREATE TABLE IF NOT EXISTS faces (
    face_id INTEGER PRIMARY KEY AUTOINCREMENT,
    gallery TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    embedding BLOB NOT NULL,
    box TEXT,
    branch TEXT,
    created_at REAL NOT NULL,
    source TEXT,
    FOREIGN KEY (gallery, subject_id) REFERENCES subjects(gallery, subject_id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS faces_by_subject ON faces(gallery, subject_id);
CREATE TABLE IF NOT EXISTS thumbnails (
    face_id INTEGER PRIMARY KEY REFERENCES faces(face_id) ON DELETE CASCADE,
    jpeg BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    gallery TEXT NOT NULL,
    face_id INTEGER NOT NULL,
    subject_id TEXT NOT NULL
);
"""


# `probe_write` commits a row of this size and deletes it in the same transaction: more than an enrolment of 16
# photos writes (a face is a 512-byte embedding, a thumbnail of at most ~8 KiB, its rows and its change-feed row),
# so that "the probe fits" means "an enrolment fits". Its table is created by the first probe: opening a store on a
# full disk writes nothing.
PROBE_BYTES = 192 * 1024
PROBE_SQL = "CREATE TABLE IF NOT EXISTS write_probe (pad BLOB NOT NULL)"


def store_error(exc: sqlite3.Error) -> StoreUnavailable:
    """The store error an SQLite error means: `StoreFull` for SQLITE_FULL, `StoreUnavailable` for the rest."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF == sqlite3.SQLITE_FULL:
        return StoreFull(f"sqlite: {exc}")
    return StoreUnavailable(f"sqlite: {exc}")


def path_from_url(url: str) -> Path:
    """`sqlite:///relative/path.db` or `sqlite:////absolute/path.db`."""
    if not url.startswith("sqlite:///"):
        raise ValueError(f"not a sqlite URL: {url!r}")
    return Path(url[len("sqlite:///"):])


class SqliteStore(GalleryStore):
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.create_function("subject_matches", 3, matches, deterministic=True)
        self._db.executescript(SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(galleries)")}
        if "embedder" not in columns:  # a store made before galleries recorded their embedder
            self._db.execute("ALTER TABLE galleries ADD COLUMN embedder TEXT")
        if "source" not in {row[1] for row in self._db.execute("PRAGMA table_info(faces)")}:  # before sources
            self._db.execute("ALTER TABLE faces ADD COLUMN source TEXT")
        self._db.execute("CREATE UNIQUE INDEX IF NOT EXISTS faces_by_source ON faces(gallery, subject_id, source)"
                         " WHERE source IS NOT NULL")

    # -- helpers -------------------------------------------------------------------------------------------
    def _failure(self, exc: sqlite3.Error) -> StoreUnavailable:
        error = store_error(exc)
        if isinstance(error, StoreFull):
            self.out_of_space = True
        return error

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.OperationalError as exc:
                raise self._failure(exc) from exc

    class _Txn:
        """`BEGIN IMMEDIATE` ... `COMMIT`, or `ROLLBACK` of the whole transaction when anything in it failed (also
        when the COMMIT itself failed); SQLite's operational errors leave as `StoreUnavailable`/`StoreFull`."""

        def __init__(self, store: SqliteStore) -> None:
            self.store = store

        def __enter__(self) -> sqlite3.Connection:
            self.store._lock.acquire()
            try:
                self.store._db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                self.store._lock.release()
                raise self.store._failure(exc) from exc
            return self.store._db

        def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
            store = self.store
            try:
                if exc is None:
                    try:
                        store._db.execute("COMMIT")
                    except sqlite3.OperationalError as err:
                        self._rollback()
                        raise store._failure(err) from err
                    store.out_of_space = False
                    return
                self._rollback()
                if isinstance(exc, sqlite3.OperationalError):
                    raise store._failure(exc) from exc
            finally:
                store._lock.release()

        def _rollback(self) -> None:
            # SQLite may have rolled the transaction back itself (it does on SQLITE_FULL): a second ROLLBACK would
            # fail with "no transaction is active" and hide the error that matters
            db = self.store._db
            if db.in_transaction:
                try:
                    db.execute("ROLLBACK")
                except sqlite3.Error:
                    log.exception("sqlite rollback failed")

    def _txn(self) -> SqliteStore._Txn:
        return SqliteStore._Txn(self)

    @staticmethod
    def _subject(row: tuple[Any, ...], face_count: int = 0, faces: list[FaceRecord] | None = None,
                 first_face_id: int | None = None) -> Subject:
        gallery, subject_id, name, metadata, created, updated = row
        return Subject(gallery, subject_id, name, stored_metadata(metadata, gallery, subject_id), created, updated,
                       faces or [], face_count, first_face_id)

    FACE_COLUMNS = "face_id, gallery, subject_id, box, branch, created_at, source"

    @staticmethod
    def _face(row: tuple[Any, ...], existing: bool = False) -> FaceRecord:
        face_id, gallery, subject_id, box, branch, created, source = row
        return FaceRecord(face_id, gallery, subject_id, json.loads(box) if box else None, branch, created, source,
                          existing)

    # -- interface -----------------------------------------------------------------------------------------
    def ping(self) -> None:
        self._query("SELECT 1")

    def probe_write(self) -> None:
        with self._txn() as db:
            db.execute(PROBE_SQL)
            db.execute("INSERT INTO write_probe(pad) VALUES (zeroblob(?))", (PROBE_BYTES,))
            db.execute("DELETE FROM write_probe")

    def list_galleries(self) -> list[GalleryInfo]:
        rows = self._query(
            "SELECT g.name, g.created_at,"
            " (SELECT COUNT(*) FROM subjects s WHERE s.gallery = g.name),"
            " (SELECT COUNT(*) FROM faces f WHERE f.gallery = g.name), g.embedder"
            " FROM galleries g ORDER BY g.name"
        )
        return [GalleryInfo(name, subjects, faces, created, embedder)
                for name, created, subjects, faces, embedder in rows]

    def get_gallery(self, gallery: str) -> GalleryInfo | None:
        rows = self._query(
            "SELECT g.created_at,"
            " (SELECT COUNT(*) FROM subjects s WHERE s.gallery = g.name),"
            " (SELECT COUNT(*) FROM faces f WHERE f.gallery = g.name), g.embedder"
            " FROM galleries g WHERE g.name = ?",
            (gallery,),
        )
        if not rows:
            return None
        created, subjects, faces, embedder = rows[0]
        return GalleryInfo(gallery, subjects, faces, created, embedder)

    def gallery_embedder(self, gallery: str) -> tuple[bool, str | None]:
        rows = self._query("SELECT embedder FROM galleries WHERE name = ?", (gallery,))
        return (True, rows[0][0]) if rows else (False, None)

    def create_gallery(self, gallery: str, embedder: str | None) -> bool:
        with self._txn() as db:
            cur = db.execute("INSERT OR IGNORE INTO galleries(name, created_at, embedder) VALUES (?, ?, ?)",
                             (gallery, time.time(), embedder))
            return cur.rowcount == 1

    def delete_gallery(self, gallery: str) -> list[int] | None:
        with self._txn() as db:
            if db.execute("SELECT 1 FROM galleries WHERE name = ?", (gallery,)).fetchone() is None:
                return None
            faces = db.execute("SELECT face_id, subject_id FROM faces WHERE gallery = ?", (gallery,)).fetchall()
            self._log_removals(db, gallery, faces)
            db.execute("DELETE FROM faces WHERE gallery = ?", (gallery,))
            db.execute("DELETE FROM subjects WHERE gallery = ?", (gallery,))
            db.execute("DELETE FROM galleries WHERE name = ?", (gallery,))
        return [face_id for face_id, _ in faces]

    @staticmethod
    def _log_removals(db: sqlite3.Connection, gallery: str, faces: list[tuple[int, str]]) -> None:
        db.executemany(
            "INSERT INTO changes(kind, gallery, face_id, subject_id) VALUES ('remove', ?, ?, ?)",
            [(gallery, face_id, subject_id) for face_id, subject_id in faces],
        )

    def add_faces(
        self, gallery: str, subject_id: str, name: str | None, metadata: dict[str, Any] | None, faces: list[NewFace],
        embedder: EmbedderCheck | None = None,
    ) -> tuple[Subject, list[FaceRecord]]:
        now = time.time()
        records: list[FaceRecord] = []
        with self._txn() as db:
            row = db.execute("SELECT embedder FROM galleries WHERE name = ?", (gallery,)).fetchone()
            if row is None:
                db.execute("INSERT INTO galleries(name, created_at, embedder) VALUES (?, ?, ?)",
                           (gallery, now, embedder.name if embedder else None))
            elif embedder is not None and row[0] != embedder.name and (row[0] is not None
                                                                       or not embedder.extends_unrecorded):
                raise EmbedderConflict(gallery, row[0])
            db.execute(
                "INSERT OR IGNORE INTO subjects(gallery, subject_id, name, metadata, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (gallery, subject_id, name, json.dumps(metadata or {}), now, now),
            )
            self._set_fields(db, gallery, subject_id, name, metadata, now)
            for face in faces:
                if face.source is not None:
                    row = db.execute(f"SELECT {self.FACE_COLUMNS} FROM faces WHERE gallery = ? AND subject_id = ?"
                                     " AND source = ?", (gallery, subject_id, face.source)).fetchone()
                    if row is not None:
                        records.append(self._face(row, existing=True))
                        continue
                box = json.dumps([round(float(v), 2) for v in face.box]) if face.box is not None else None
                blob = np.asarray(face.embedding, dtype=np.float32).tobytes()
                cur = db.execute(
                    "INSERT INTO faces(gallery, subject_id, embedding, box, branch, created_at, source)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (gallery, subject_id, blob, box, face.branch, now, face.source),
                )
                face_id = int(cur.lastrowid or 0)
                if face.thumbnail is not None:
                    db.execute("INSERT INTO thumbnails(face_id, jpeg) VALUES (?, ?)", (face_id, face.thumbnail))
                db.execute("INSERT INTO changes(kind, gallery, face_id, subject_id) VALUES ('add', ?, ?, ?)",
                           (gallery, face_id, subject_id))
                records.append(FaceRecord(face_id, gallery, subject_id, json.loads(box) if box else None,
                                          face.branch, now, face.source))
            subject = self._get_subject(db, gallery, subject_id, with_faces=False)
        assert subject is not None
        return subject, records

    @staticmethod
    def _set_fields(db: sqlite3.Connection, gallery: str, subject_id: str, name: str | None,
                    metadata: dict[str, Any] | None, now: float) -> None:
        """Update the name and/or metadata that are given (None leaves a field as it is)."""
        if name is not None:
            db.execute("UPDATE subjects SET name = ?, updated_at = ? WHERE gallery = ? AND subject_id = ?",
                       (name, now, gallery, subject_id))
        if metadata is not None:
            db.execute("UPDATE subjects SET metadata = ?, updated_at = ? WHERE gallery = ? AND subject_id = ?",
                       (json.dumps(metadata), now, gallery, subject_id))

    def _get_subject(self, db: sqlite3.Connection, gallery: str, subject_id: str, with_faces: bool) -> Subject | None:
        row = db.execute(
            "SELECT gallery, subject_id, name, metadata, created_at, updated_at FROM subjects"
            " WHERE gallery = ? AND subject_id = ?",
            (gallery, subject_id),
        ).fetchone()
        if row is None:
            return None
        faces = [
            self._face(r)
            for r in db.execute(
                f"SELECT {self.FACE_COLUMNS} FROM faces WHERE gallery = ? AND subject_id = ? ORDER BY face_id",
                (gallery, subject_id),
            ).fetchall()
        ]
        return self._subject(row, len(faces), faces if with_faces else [], faces[0].face_id if faces else None)

    def get_subject(self, gallery: str, subject_id: str, with_faces: bool = True) -> Subject | None:
        with self._lock:
            try:
                return self._get_subject(self._db, gallery, subject_id, with_faces)
            except sqlite3.OperationalError as exc:
                raise self._failure(exc) from exc

    def list_subjects(self, gallery: str, cursor: str | None, limit: int, query: str | None = None
                      ) -> tuple[list[Subject], str | None]:
        search = " AND subject_matches(?, s.subject_id, s.name)" if query else ""
        rows = self._query(
            "SELECT s.gallery, s.subject_id, s.name, s.metadata, s.created_at, s.updated_at,"
            " (SELECT COUNT(*) FROM faces f WHERE f.gallery = s.gallery AND f.subject_id = s.subject_id),"
            " (SELECT MIN(face_id) FROM faces f WHERE f.gallery = s.gallery AND f.subject_id = s.subject_id)"
            f" FROM subjects s WHERE s.gallery = ? AND s.subject_id > ?{search} ORDER BY s.subject_id LIMIT ?",
            (gallery, cursor or "", *([query.casefold()] if query else []), limit + 1),
        )
        subjects = [self._subject(tuple(r[:6]), r[6], first_face_id=r[7]) for r in rows[:limit]]
        next_cursor = subjects[-1].subject_id if len(rows) > limit else None
        return subjects, next_cursor

    def subject_faces(self, gallery: str, subject_id: str) -> list[StoredFace]:
        columns = ", ".join(f"f.{c.strip()}" for c in self.FACE_COLUMNS.split(","))
        rows = self._query(f"SELECT {columns}, f.embedding, t.jpeg FROM faces f LEFT JOIN thumbnails t"
                           " ON t.face_id = f.face_id WHERE f.gallery = ? AND f.subject_id = ? ORDER BY f.face_id",
                           (gallery, subject_id))
        return [StoredFace(self._face(tuple(r[:7])), np.frombuffer(r[7], dtype=np.float32), r[8]) for r in rows]

    def find_sources(self, gallery: str, subject_id: str, sources: list[str]) -> dict[str, FaceRecord]:
        if not sources:
            return {}
        marks = ",".join("?" * len(sources))
        rows = self._query(f"SELECT {self.FACE_COLUMNS} FROM faces WHERE gallery = ? AND subject_id = ?"
                           f" AND source IN ({marks})", (gallery, subject_id, *sources))
        return {r[6]: self._face(tuple(r)) for r in rows}

    def get_thumbnail(self, gallery: str, subject_id: str, face_id: int) -> tuple[bool, bytes | None]:
        rows = self._query("SELECT t.jpeg FROM faces f LEFT JOIN thumbnails t ON t.face_id = f.face_id"
                           " WHERE f.face_id = ? AND f.gallery = ? AND f.subject_id = ?",
                           (face_id, gallery, subject_id))
        return (True, rows[0][0]) if rows else (False, None)

    def update_subject(
        self, gallery: str, subject_id: str, name: str | None, metadata: dict[str, Any] | None
    ) -> Subject | None:
        now = time.time()
        with self._txn() as db:
            self._set_fields(db, gallery, subject_id, name, metadata, now)
            return self._get_subject(db, gallery, subject_id, with_faces=True)

    def delete_subject(self, gallery: str, subject_id: str) -> list[int] | None:
        with self._txn() as db:
            exists = db.execute("SELECT 1 FROM subjects WHERE gallery = ? AND subject_id = ?",
                                (gallery, subject_id)).fetchone()
            if exists is None:
                return None
            faces = db.execute("SELECT face_id, subject_id FROM faces WHERE gallery = ? AND subject_id = ?",
                               (gallery, subject_id)).fetchall()
            self._log_removals(db, gallery, faces)
            db.execute("DELETE FROM faces WHERE gallery = ? AND subject_id = ?", (gallery, subject_id))
            db.execute("DELETE FROM subjects WHERE gallery = ? AND subject_id = ?", (gallery, subject_id))
        return [face_id for face_id, _ in faces]

    def delete_face(self, gallery: str, subject_id: str, face_id: int) -> bool:
        with self._txn() as db:
            cur = db.execute("DELETE FROM faces WHERE gallery = ? AND subject_id = ? AND face_id = ?",
                             (gallery, subject_id, face_id))
            if cur.rowcount == 0:
                return False
            self._log_removals(db, gallery, [(face_id, subject_id)])
        return True

    def subject_embeddings(self, gallery: str, subject_id: str) -> np.ndarray:
        rows = self._query("SELECT embedding FROM faces WHERE gallery = ? AND subject_id = ? ORDER BY face_id",
                           (gallery, subject_id))
        if not rows:
            return np.zeros((0, 0), dtype=np.float32)
        return np.vstack([np.frombuffer(r[0], dtype=np.float32) for r in rows])

    def subject_names(self, gallery: str, subject_ids: list[str]) -> dict[str, str | None]:
        if not subject_ids:
            return {}
        marks = ",".join("?" * len(subject_ids))
        rows = self._query(f"SELECT subject_id, name FROM subjects WHERE gallery = ? AND subject_id IN ({marks})",
                           (gallery, *subject_ids))
        return {sid: name for sid, name in rows}

    def iter_faces(self, gallery: str | None = None) -> Iterator[IndexedFace]:
        sql = "SELECT gallery, face_id, subject_id, embedding FROM faces"
        params: tuple[Any, ...] = ()
        if gallery is not None:
            sql += " WHERE gallery = ?"
            params = (gallery,)
        for g, face_id, subject_id, blob in self._query(sql + " ORDER BY face_id", params):
            yield IndexedFace(g, face_id, subject_id, np.frombuffer(blob, dtype=np.float32))

    def get_faces(self, face_ids: list[int]) -> list[IndexedFace]:
        if not face_ids:
            return []
        marks = ",".join("?" * len(face_ids))
        rows = self._query(f"SELECT gallery, face_id, subject_id, embedding FROM faces WHERE face_id IN ({marks})",
                           tuple(face_ids))
        return [IndexedFace(g, f, s, np.frombuffer(b, dtype=np.float32)) for g, f, s, b in rows]

    def last_seq(self) -> int:
        rows = self._query("SELECT COALESCE(MAX(seq), 0) FROM changes")
        return int(rows[0][0])

    def changes_since(self, seq: int, limit: int = 10_000) -> list[Change]:
        rows = self._query("SELECT seq, kind, gallery, face_id, subject_id FROM changes WHERE seq > ? ORDER BY seq"
                           " LIMIT ?", (seq, limit))
        return [Change(s, k, g, f, sid) for s, k, g, f, sid in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()

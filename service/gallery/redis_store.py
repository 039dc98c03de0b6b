"""The shared gallery store: subjects, faces and embeddings in Redis, with the change feed in a Redis Stream.

Several API replicas use one Redis; each keeps its own FAISS index and follows the stream (`FaissGalleryManager`).

Key layout (prefix `anyface:` by default, `?prefix=...` in the URL changes it):

    galleries                HASH    gallery -> created_at
    gallery_embedder         HASH    gallery -> the embedder that filled it (`model@checksum`; absent: unrecorded)
    g:<gallery>:subjects     ZSET    subject ids, all with score 0 (ZRANGEBYLEX gives id order and cursors)
    g:<gallery>:faces        SET     face ids of the gallery
    s:<gallery>:<subject>    HASH    name (JSON), metadata (JSON), created_at, updated_at
    sf:<gallery>:<subject>   ZSET    the subject's face ids, scored by face id
    f:<face_id>              HASH    gallery, subject_id, embedding (float32 bytes), box (JSON), branch (JSON),
                                     created_at, thumbnail (JPEG bytes; absent when enrolled without),
                                     source (the photo's id, when given)
    src:<gallery>:<subject>  HASH    source -> face id: at most one face per source and subject
    next_face_id             STRING  INCR counter of face ids
    seq                      STRING  INCR counter of change sequence numbers
    epoch                    STRING  random id written with the first change; a new one means the data was reset
    changes                  STREAM  entry id `<seq>-0`; fields kind (add/remove/update), gallery, face_id,
                                     subject_id; trimmed with `MAXLEN ~ <stream_maxlen>`
    op:<token>               STRING  result of a write, kept a minute so that a retried write is not applied twice

Every write is one Lua script (`redis_scripts.py`): Redis runs it atomically, so the data and the stream never
disagree, and the sequence numbers are contiguous (the script checks everything before it writes anything). The
stream entry id is the sequence number, so `changes_since(seq)` is an `XRANGE` from `seq + 1`.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from service.gallery.redis_scripts import WRITE_SCRIPTS
from service.gallery.store import (
    Change,
    EmbedderCheck,
    EmbedderConflict,
    FaceRecord,
    FeedTruncated,
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

DEFAULT_PREFIX = "anyface:"
DEFAULT_STREAM_MAXLEN = 100_000
CHUNK = 500
# Replies that mean "Redis cannot serve right now" rather than "the request is wrong".
_UNAVAILABLE_REPLIES = ("LOADING", "MISCONF", "OOM", "READONLY", "MASTERDOWN", "TRYAGAIN", "BUSY", "NOREPLICAS")
# redis-py turns some of those replies into exception classes and strips the prefix from the message: match those
# by class.
_UNAVAILABLE_ERRORS = (redis.exceptions.ReadOnlyError, redis.exceptions.TryAgainError,
                       redis.exceptions.MasterDownError)
_OUT_OF_MEMORY = getattr(redis.exceptions, "OutOfMemoryError", ())  # redis-py >= 4.4; the stubs lack it
# `probe_write` sets (and deletes) a value of this size: about what an enrolment of a few photos writes (a face is
# ~2 KiB with its records and feed entry, plus its thumbnail of ~3-4 KiB), so that "the probe fits" means "an
# enrolment fits" once Redis has refused a write for lack of memory.
PROBE_BYTES = 16 * 1024
# Several read commands as one script: atomic like MULTI/EXEC, but a script that only reads runs when Redis is out
# of memory, where Redis refuses every MULTI. ARGV: for each command, its number of words, then the words.
_READ_SCRIPT = """
local out = {}
local i = 1
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  out[#out + 1] = redis.call(unpack(ARGV, i + 1, i + n))
  i = i + n + 1
end
return out
"""


def _no_room(exc: redis.exceptions.ResponseError) -> bool:
    """No room: `maxmemory` reached with `noeviction` (OOM), or persistence failing on a full disk (MISCONF). Redis
    refuses a script at its first write, so nothing of a refused write is kept. Under OOM Redis also refuses every
    MULTI, which some reads use."""
    reply = str(exc)
    return isinstance(exc, _OUT_OF_MEMORY) or reply.startswith("OOM") or (
        reply.startswith("MISCONF") and "No space left" in reply)


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def _ids(result: bytes | str) -> list[int] | None:
    text = _text(result) or ""
    if text == "-":
        return None
    return [int(v) for v in text.split(",") if v]


def _split_url(url: str) -> tuple[str, str]:
    """Take our own `prefix` query parameter out of the URL; redis-py parses the rest."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = next((v for k, v in query if k == "prefix"), DEFAULT_PREFIX)
    rest = urlencode([(k, v) for k, v in query if k != "prefix"])
    return urlunsplit(parts._replace(query=rest)), prefix


class RedisStore(GalleryStore):
    """A `GalleryStore` in Redis. Connection failures and timeouts raise `StoreUnavailable` within a bounded time:
    connect and read timeouts are short (1 s, 1.5 s), and a command that failed on a broken connection is retried
    once, at once, on a fresh one (writes carry an operation token, so a retried write is applied at most once)."""

    def __init__(self, url: str, *, prefix: str | None = None, stream_maxlen: int = DEFAULT_STREAM_MAXLEN,
                 connect_timeout_s: float = 1.0, timeout_s: float = 1.5) -> None:
        redis_url, url_prefix = _split_url(url)
        self.prefix = prefix if prefix is not None else url_prefix
        self.stream_maxlen = stream_maxlen
        # from_url does not connect: the service starts (not ready) while Redis is down
        self._r = redis.Redis.from_url(
            redis_url,
            socket_connect_timeout=connect_timeout_s,
            socket_timeout=timeout_s,
            socket_keepalive=True,
            health_check_interval=5,
            # one immediate retry on a fresh connection for a broken one (e.g. after a Redis restart); timeouts
            # are not retried, so that a hung Redis answers within `timeout_s`
            retry=Retry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,)),
            decode_responses=False,
        )
        self._block_limit_s = timeout_s / 2  # a blocking read must end well before the socket timeout
        self._epoch: str | None = None  # of the data the last `last_seq`/`changes_since` saw
        self._scripts = {
            name: self._r.register_script(source)
            for name, source in WRITE_SCRIPTS.items()
        }
        self._read_script = self._r.register_script(_READ_SCRIPT)

    # -- helpers -------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc
        except redis.exceptions.ResponseError as exc:
            if _no_room(exc):
                self.out_of_space = True
                raise StoreFull(f"redis: {exc}") from exc
            if isinstance(exc, _UNAVAILABLE_ERRORS) or str(exc).startswith(_UNAVAILABLE_REPLIES):
                raise StoreUnavailable(f"redis: {exc}") from exc
            raise

    def _k(self, *parts: str | int) -> str:
        return self.prefix + ":".join(str(p) for p in parts)

    def _read(self, *commands: tuple[str | int, ...]) -> list[Any]:
        """The raw replies of several read commands run atomically (`_READ_SCRIPT`): HGETALL gives a flat list, a
        missing value None."""
        args: list[str | int] = []
        for command in commands:
            args += [len(command), *command]
        return list(self._read_script(args=args)) if commands else []

    @staticmethod
    def _hash(flat: list[bytes]) -> dict[bytes, bytes]:
        return dict(zip(flat[::2], flat[1::2], strict=True))

    def _write(self, script: str, *args: Any) -> bytes:
        token = uuid.uuid4().hex
        with self._guard():
            result = self._scripts[script](
                args=[self.prefix, token, uuid.uuid4().hex, self.stream_maxlen, *args])
        self.out_of_space = False
        return result

    @staticmethod
    def _subject_args(name: str | None, metadata: dict[str, Any] | None) -> list[str]:
        return ["1" if name is not None else "0", json.dumps(name),
                "1" if metadata is not None else "0", json.dumps(metadata if metadata is not None else {})]

    @staticmethod
    def _subject(gallery: str, subject_id: str, row: dict[bytes, bytes], face_count: int,
                 faces: list[FaceRecord] | None = None, first_face_id: int | None = None) -> Subject:
        metadata = stored_metadata(row.get(b"metadata"), gallery, subject_id)
        return Subject(gallery, subject_id, json.loads(row[b"name"]), metadata, float(row[b"created_at"]),
                       float(row[b"updated_at"]), faces or [], face_count, first_face_id)

    # -- interface -----------------------------------------------------------------------------------------
    def ping(self) -> None:
        with self._guard():
            self._r.ping()

    def probe_write(self) -> None:
        with self._guard():
            self._r.set(self._k("write_probe"), b"\0" * PROBE_BYTES, ex=60)
            self._r.delete(self._k("write_probe"))

    def list_galleries(self) -> list[GalleryInfo]:
        with self._guard():
            galleries = {k.decode(): float(v) for k, v in self._r.hgetall(self._k("galleries")).items()}
            embedders = {k.decode(): v.decode() for k, v in self._r.hgetall(self._k("gallery_embedder")).items()}
            names = sorted(galleries)
            pipe = self._r.pipeline(transaction=False)
            for name in names:
                pipe.zcard(self._k("g", name, "subjects"))
                pipe.scard(self._k("g", name, "faces"))
            counts = pipe.execute()
        return [GalleryInfo(name, int(counts[2 * i]), int(counts[2 * i + 1]), galleries[name], embedders.get(name))
                for i, name in enumerate(names)]

    def get_gallery(self, gallery: str) -> GalleryInfo | None:
        with self._guard():
            created, subjects, faces, embedder = self._read(("HGET", self._k("galleries"), gallery),
                                                            ("ZCARD", self._k("g", gallery, "subjects")),
                                                            ("SCARD", self._k("g", gallery, "faces")),
                                                            ("HGET", self._k("gallery_embedder"), gallery))
        if created is None:
            return None
        return GalleryInfo(gallery, int(subjects), int(faces), float(created),
                           embedder.decode() if embedder is not None else None)

    def gallery_embedder(self, gallery: str) -> tuple[bool, str | None]:
        with self._guard():
            created, embedder = self._read(("HGET", self._k("galleries"), gallery),
                                           ("HGET", self._k("gallery_embedder"), gallery))
        return created is not None, embedder.decode() if embedder is not None else None

    def create_gallery(self, gallery: str, embedder: str | None) -> bool:
        return self._write("create", gallery, repr(time.time()), embedder or "") == b"1"

    def delete_gallery(self, gallery: str) -> list[int] | None:
        return _ids(self._write("del_gallery", gallery))

    def add_faces(
        self, gallery: str, subject_id: str, name: str | None, metadata: dict[str, Any] | None, faces: list[NewFace],
        embedder: EmbedderCheck | None = None,
    ) -> tuple[Subject, list[FaceRecord]]:
        now = time.time()
        face_args: list[bytes | str] = []
        boxes: list[list[float] | None] = []
        for face in faces:
            box = [round(float(v), 2) for v in face.box] if face.box is not None else None
            boxes.append(box)
            face_args += [np.asarray(face.embedding, dtype=np.float32).tobytes(), json.dumps(box),
                          json.dumps(face.branch), face.thumbnail or b"", face.source or ""]
        check = [embedder.name, "1" if embedder.extends_unrecorded else "0"] if embedder else ["", "0"]
        result = self._write("add", gallery, subject_id, *self._subject_args(name, metadata), repr(now), len(faces),
                             *check, *face_args)
        if result.startswith(b"!"):
            raise EmbedderConflict(gallery, result[1:].decode() or None)
        items = (_text(result) or "").split(",") if result else []
        existing_ids = [int(item[1:]) for item in items if item.startswith("=")]
        with self._guard():
            stored = {r.face_id: r for r in self._face_records(existing_ids)}
        records = []
        for item, box, face in zip(items, boxes, faces, strict=True):
            if item.startswith("="):
                known = stored.get(int(item[1:]))
                records.append(replace(known, existing=True) if known is not None else
                               FaceRecord(int(item[1:]), gallery, subject_id, box, face.branch, now, face.source, True))
            else:
                records.append(FaceRecord(int(item), gallery, subject_id, box, face.branch, now, face.source))
        subject = self.get_subject(gallery, subject_id, with_faces=False)
        if subject is None:  # deleted by another client right after: report what was written
            meta = metadata or {}
            subject = Subject(gallery, subject_id, name, meta, now, now, [], len(records))
        return subject, records

    def _face_records(self, face_ids: list[int]) -> list[FaceRecord]:
        pipe = self._r.pipeline(transaction=False)
        for face_id in face_ids:
            pipe.hmget(self._k("f", face_id), ["gallery", "subject_id", "box", "branch", "created_at", "source"])
        records = []
        for face_id, (gallery, subject_id, box, branch, created, source) in zip(face_ids, pipe.execute(),
                                                                                   strict=True):
            if gallery is None:
                continue  # removed meanwhile
            records.append(FaceRecord(face_id, gallery.decode(), subject_id.decode(), json.loads(box),
                                      json.loads(branch), float(created), _text(source)))
        return records

    def get_subject(self, gallery: str, subject_id: str, with_faces: bool = True) -> Subject | None:
        with self._guard():
            flat, face_ids = self._read(("HGETALL", self._k("s", gallery, subject_id)),
                                        ("ZRANGE", self._k("sf", gallery, subject_id), 0, -1))
            row = self._hash(flat)
            if not row:
                return None
            ids = [int(f) for f in face_ids]
            faces = self._face_records(ids) if with_faces else []
        return self._subject(gallery, subject_id, row, len(faces) if with_faces else len(ids), faces,
                             ids[0] if ids else None)

    def _subject_ids(self, gallery: str, cursor: str | None, limit: int, query: str | None) -> list[str]:
        """Up to `limit` subject ids after `cursor`, in id order; with `query` (case-folded), only those that
        match it. A search reads the names of the gallery's subjects in chunks until the page is full: its cost
        grows with the gallery, which suits a console's search box."""
        key = self._k("g", gallery, "subjects")
        if not query:
            return [s.decode() for s in self._r.zrangebylex(key, f"({cursor}" if cursor else "-", "+", start=0,
                                                            num=limit)]
        found: list[str] = []
        after = cursor
        while len(found) < limit:
            chunk = [s.decode() for s in self._r.zrangebylex(key, f"({after}" if after else "-", "+", start=0,
                                                             num=CHUNK)]
            if not chunk:
                break
            pipe = self._r.pipeline(transaction=False)
            for subject_id in chunk:
                pipe.hget(self._k("s", gallery, subject_id), "name")
            for subject_id, name in zip(chunk, pipe.execute(), strict=True):
                if name is not None and matches(query, subject_id, json.loads(name)):
                    found.append(subject_id)
            after = chunk[-1]
        return found[:limit]

    def list_subjects(self, gallery: str, cursor: str | None, limit: int, query: str | None = None
                      ) -> tuple[list[Subject], str | None]:
        with self._guard():
            ids = self._subject_ids(gallery, cursor, limit + 1, query.casefold() if query else None)
            rows = self._read(*[command for subject_id in ids[:limit]
                                for command in (("HGETALL", self._k("s", gallery, subject_id)),
                                                ("ZCARD", self._k("sf", gallery, subject_id)),
                                                ("ZRANGE", self._k("sf", gallery, subject_id), 0, 0))])
        subjects = [self._subject(gallery, subject_id, self._hash(rows[3 * i]), int(rows[3 * i + 1]),
                                  first_face_id=int(rows[3 * i + 2][0]) if rows[3 * i + 2] else None)
                    for i, subject_id in enumerate(ids[:limit]) if rows[3 * i]]
        next_cursor = ids[limit - 1] if len(ids) > limit else None
        return subjects, next_cursor

    def subject_faces(self, gallery: str, subject_id: str) -> list[StoredFace]:
        with self._guard():
            ids = [int(f) for f in self._r.zrange(self._k("sf", gallery, subject_id), 0, -1)]
            records = {r.face_id: r for r in self._face_records(ids)}
            pipe = self._r.pipeline(transaction=False)
            for face_id in records:
                pipe.hmget(self._k("f", face_id), ["embedding", "thumbnail"])
            blobs = pipe.execute()
        return [StoredFace(record, np.frombuffer(embedding, dtype=np.float32), thumbnail)
                for record, (embedding, thumbnail) in zip(records.values(), blobs, strict=True)
                if embedding is not None]

    def find_sources(self, gallery: str, subject_id: str, sources: list[str]) -> dict[str, FaceRecord]:
        if not sources:
            return {}
        with self._guard():
            fids = self._r.hmget(self._k("src", gallery, subject_id), sources)
            records = self._face_records([int(f) for f in fids if f is not None])
        return {r.source: r for r in records if r.source is not None}

    def get_thumbnail(self, gallery: str, subject_id: str, face_id: int) -> tuple[bool, bytes | None]:
        with self._guard():
            owner_gallery, owner, jpeg = self._r.hmget(self._k("f", face_id), ["gallery", "subject_id", "thumbnail"])
        if owner_gallery is None or owner is None or owner_gallery.decode() != gallery or owner.decode() != subject_id:
            return False, None
        return True, jpeg

    def update_subject(
        self, gallery: str, subject_id: str, name: str | None, metadata: dict[str, Any] | None
    ) -> Subject | None:
        result = self._write("update", gallery, subject_id, *self._subject_args(name, metadata), repr(time.time()))
        if _ids(result) is None:
            return None
        return self.get_subject(gallery, subject_id, with_faces=True)

    def delete_subject(self, gallery: str, subject_id: str) -> list[int] | None:
        return _ids(self._write("del_subject", gallery, subject_id))

    def delete_face(self, gallery: str, subject_id: str, face_id: int) -> bool:
        return _ids(self._write("del_face", gallery, subject_id, face_id)) is not None

    def subject_embeddings(self, gallery: str, subject_id: str) -> np.ndarray:
        with self._guard():
            face_ids = self._r.zrange(self._k("sf", gallery, subject_id), 0, -1)
            pipe = self._r.pipeline(transaction=False)
            for face_id in face_ids:
                pipe.hget(self._k("f", int(face_id)), "embedding")
            blobs = [b for b in pipe.execute() if b is not None]
        if not blobs:
            return np.zeros((0, 0), dtype=np.float32)
        return np.vstack([np.frombuffer(b, dtype=np.float32) for b in blobs])

    def subject_names(self, gallery: str, subject_ids: list[str]) -> dict[str, str | None]:
        if not subject_ids:
            return {}
        with self._guard():
            pipe = self._r.pipeline(transaction=False)
            for subject_id in subject_ids:
                pipe.hget(self._k("s", gallery, subject_id), "name")
            names = pipe.execute()
        return {sid: json.loads(name) for sid, name in zip(subject_ids, names, strict=True) if name is not None}

    def _indexed(self, face_ids: list[int]) -> list[IndexedFace]:
        pipe = self._r.pipeline(transaction=False)
        for face_id in face_ids:
            pipe.hmget(self._k("f", face_id), ["gallery", "subject_id", "embedding"])
        return [IndexedFace(g.decode(), face_id, s.decode(), np.frombuffer(e, dtype=np.float32))
                for face_id, (g, s, e) in zip(face_ids, pipe.execute(), strict=True) if g is not None]

    def iter_faces(self, gallery: str | None = None) -> Iterator[IndexedFace]:
        with self._guard():
            galleries = [gallery] if gallery is not None else [g.decode() for g in self._r.hkeys(self._k("galleries"))]
            pipe = self._r.pipeline(transaction=False)
            for name in galleries:
                pipe.smembers(self._k("g", name, "faces"))
            face_ids = sorted(int(f) for members in pipe.execute() for f in members)
        for start in range(0, len(face_ids), CHUNK):
            with self._guard():
                chunk = self._indexed(face_ids[start:start + CHUNK])
            yield from chunk

    def get_faces(self, face_ids: list[int]) -> list[IndexedFace]:
        if not face_ids:
            return []
        with self._guard():
            return self._indexed(list(face_ids))

    def last_seq(self) -> int:
        with self._guard():
            seq, epoch = self._read(("GET", self._k("seq")), ("GET", self._k("epoch")))
        self._epoch = _text(epoch)
        return int(seq or 0)

    def changes_since(self, seq: int, limit: int = 10_000) -> list[Change]:
        with self._guard():
            entries, last, epoch_raw = self._read(
                ("XRANGE", self._k("changes"), f"{seq + 1}-0", "+", "COUNT", limit),
                ("GET", self._k("seq")), ("GET", self._k("epoch")))
        last, epoch = int(last or 0), _text(epoch_raw)
        if self._epoch is not None and epoch is not None and epoch != self._epoch:
            raise FeedTruncated(f"the Redis data was replaced (epoch {self._epoch} -> {epoch})")
        if last < seq:
            raise FeedTruncated(f"the Redis data went back from change {seq} to {last}")
        first = int(entries[0][0].split(b"-")[0]) if entries else last + 1
        if first > seq + 1 and last > seq:
            raise FeedTruncated(f"changes {seq + 1}..{first - 1} were trimmed from the stream")
        self._epoch = epoch if epoch is not None else self._epoch
        changes = []
        for entry_id, flat in entries:
            fields: dict[bytes, Any] = self._hash(flat)
            changes.append(Change(int(entry_id.split(b"-")[0]), fields[b"kind"].decode(),
                                  fields[b"gallery"].decode(), int(fields[b"face_id"]),
                                  fields[b"subject_id"].decode()))
        return changes

    def wait_for_changes(self, seq: int, timeout_s: float) -> bool:
        """`XREAD BLOCK` on the stream after `seq`: returns as soon as a change is written, or after `timeout_s`."""
        block_ms = max(1, min(int(timeout_s * 1000), int(self._block_limit_s * 1000)))
        with self._guard():
            self._r.xread({self._k("changes"): f"{seq}-0"}, count=1, block=block_ms)
        return True

    def oldest_seq(self) -> int:
        """The sequence number of the oldest change the stream still holds (`last_seq() + 1` when it is empty)."""
        with self._guard():
            entries = self._r.xrange(self._k("changes"), count=1)
            if entries:
                return int(entries[0][0].split(b"-")[0])
            return int(self._r.get(self._k("seq")) or 0) + 1

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._r.close()

"""Gallery export and import as JSON Lines: the backup format, and the way a gallery moves between stores (SQLite
and Redis) or services.

The file is one JSON object per line:
- first, the header `{"kind": "gallery", "format": "anyface-gallery/1", "name", "embedder", "dim", ...}`;
- then one line per subject: `{"kind": "subject", "subject_id", "name", "metadata", "faces": [...]}`. Each face
  carries `face_id`, `box`, `branch`, `created_at`, `source`, its `embedding` (float32 little-endian, base64) and
  its `thumbnail` (JPEG, base64, or null);
- last, `{"kind": "end", "subjects": n, "faces": m}`, so that a cut-off file is told apart from a whole one.

An export pages through the store while enrolment may go on; it is not a snapshot. An import refuses a file made
by another embedder (409 `embedder_mismatch`: its embeddings are not comparable) before it writes anything. Then
it writes subject by subject, each in one store transaction. Every imported face carries a source (its own, or
`import:<gallery>:<face_id>`), so running an import again, or after it was cut off, adds nothing twice.
Embeddings are copied bit for bit, so search answers are the same before and after.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from service.core.galleries import SOURCE_PATTERN, SUBJECT_ID, embedder_mismatch
from service.core.metadata import SubjectLimits, check_metadata, check_name
from service.errors import InvalidParameter
from service.gallery.manager import GalleryManager
from service.gallery.store import EmbedderCheck, EmbedderConflict, NewFace, StoredFace, Subject

FORMAT = "anyface-gallery/1"
PAGE = 200
MAX_THUMBNAIL_BYTES = 64 * 1024


class InvalidImport(InvalidParameter):
    code = "invalid_import"


@dataclass(frozen=True)
class ImportResult:
    subjects: int
    faces_added: int
    faces_existing: int


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def face_entry(face: StoredFace) -> dict[str, Any]:
    r = face.record
    return {"face_id": r.face_id, "box": r.box, "branch": r.branch, "created_at": r.created_at, "source": r.source,
            "embedding": _b64(np.asarray(face.embedding, dtype="<f4").tobytes()),
            "thumbnail": _b64(face.thumbnail) if face.thumbnail is not None else None}


def subject_entry(subject: Subject, faces: list[StoredFace]) -> dict[str, Any]:
    return {"kind": "subject", "subject_id": subject.subject_id, "name": subject.name, "metadata": subject.metadata,
            "created_at": subject.created_at, "updated_at": subject.updated_at,
            "faces": [face_entry(f) for f in faces]}


class GalleryTransfer:
    """Export and import of whole galleries (blocking: run from a worker thread)."""

    def __init__(self, manager: GalleryManager, embedder: EmbedderCheck, dim: int, limits: SubjectLimits,
                 keep_thumbnails: bool, max_line_bytes: int) -> None:
        self.manager, self.embedder, self.dim, self.limits = manager, embedder, dim, limits
        self.keep_thumbnails, self.max_line_bytes = keep_thumbnails, max_line_bytes

    # -- export ---------------------------------------------------------------------------------------------------
    def export_lines(self, gallery: str) -> Iterator[bytes]:
        store = self.manager.store
        info = store.get_gallery(gallery)
        if info is None:
            return
        yield self._line({"kind": "gallery", "format": FORMAT, "name": gallery, "embedder": info.embedder,
                          "dim": self.dim, "created_at": info.created_at, "exported_at": time.time(),
                          "subjects": info.subjects, "faces": info.faces})
        subjects = faces = 0
        cursor: str | None = None
        while True:
            page, cursor = store.list_subjects(gallery, cursor, PAGE)
            for subject in page:
                stored = store.subject_faces(gallery, subject.subject_id)
                subjects, faces = subjects + 1, faces + len(stored)
                yield self._line(subject_entry(subject, stored))
            if cursor is None:
                break
        yield self._line({"kind": "end", "subjects": subjects, "faces": faces})

    @staticmethod
    def _line(entry: dict[str, Any]) -> bytes:
        return json.dumps(entry, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"

    # -- import ---------------------------------------------------------------------------------------------------
    def import_file(self, gallery: str, stream: IO[bytes]) -> ImportResult:
        lines = self._lines(stream)
        number, header = next(lines, (0, None))
        self._check_header(header)
        origin = str(header["name"]) if header else gallery
        subjects = added = existing = 0
        ended = False
        for number, entry in lines:
            if ended:
                raise InvalidImport(f"line {number}: nothing may follow the end line")
            kind = entry.get("kind")
            if kind == "end":
                ended = True
                continue
            if kind != "subject":
                raise InvalidImport(f"line {number}: kind must be subject or end, not {kind!r}")
            subject_id, name, metadata, faces = self._subject(entry, number, origin)
            try:
                _, records = self.manager.enroll(gallery, subject_id, name, metadata, faces, self.embedder)
            except EmbedderConflict as exc:
                raise embedder_mismatch(gallery, exc.recorded, self.embedder.name) from exc
            subjects += 1
            added += sum(not r.existing for r in records)
            existing += sum(r.existing for r in records)
        if not ended:
            raise InvalidImport(f"the file ends after line {number} without its end line: it was cut off. The "
                                f"{subjects} subjects before are imported; importing the whole file again adds "
                                "nothing twice")
        return ImportResult(subjects, added, existing)

    def _lines(self, stream: IO[bytes]) -> Iterator[tuple[int, dict[str, Any]]]:
        number = 0
        while True:
            raw = stream.readline(self.max_line_bytes + 1)
            if not raw:
                return
            number += 1
            if len(raw) > self.max_line_bytes:
                raise InvalidImport(f"line {number}: longer than {self.max_line_bytes} bytes "
                                    "(ANYFACE_MAX_IMPORT_LINE_BYTES)")
            if not raw.strip():
                continue
            try:
                entry = json.loads(raw)
            except (ValueError, RecursionError) as exc:
                raise InvalidImport(f"line {number}: not JSON ({str(exc)[:120]})") from exc
            if not isinstance(entry, dict):
                raise InvalidImport(f"line {number}: not a JSON object")
            yield number, entry

    def _check_header(self, header: dict[str, Any] | None) -> None:
        if header is None or header.get("kind") != "gallery":
            raise InvalidImport("line 1 must be the gallery header of an AnyFace export")
        if header.get("format") != FORMAT:
            raise InvalidImport(f"format {header.get('format')!r} is not {FORMAT!r}")
        if header.get("dim") != self.dim:
            raise InvalidImport(f"embeddings of {header.get('dim')} dimensions; this service's have {self.dim}")
        recorded = header.get("embedder")
        if not (recorded == self.embedder.name or (recorded is None and self.embedder.extends_unrecorded)):
            raise embedder_mismatch(str(header.get("name")), recorded if isinstance(recorded, str) else None,
                                    self.embedder.name)
        if not isinstance(header.get("name"), str):
            raise InvalidImport("the header has no gallery name")

    def _subject(self, entry: dict[str, Any], number: int, origin: str
                 ) -> tuple[str, str | None, dict[str, Any] | None, list[NewFace]]:
        subject_id = entry.get("subject_id")
        if not isinstance(subject_id, str) or not SUBJECT_ID.fullmatch(subject_id):
            raise InvalidImport(f"line {number}: subject_id must be 1-128 letters, digits, . _ : @ -")
        try:
            name = check_name(entry.get("name"), self.limits)
            metadata = check_metadata(entry.get("metadata") or {}, self.limits)
        except InvalidParameter as exc:
            raise InvalidImport(f"line {number}: {exc.message}") from exc
        faces = entry.get("faces")
        if not isinstance(faces, list):
            raise InvalidImport(f"line {number}: faces must be a list")
        return subject_id, name, metadata, [self._face(f, number, origin) for f in faces]

    def _face(self, face: Any, number: int, origin: str) -> NewFace:
        if not isinstance(face, dict):
            raise InvalidImport(f"line {number}: each face is an object")
        try:
            vector = np.frombuffer(base64.b64decode(face["embedding"], validate=True), dtype="<f4")
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise InvalidImport(f"line {number}: a face's embedding is not base64 float32") from exc
        if vector.shape != (self.dim,) or not np.isfinite(vector).all():
            raise InvalidImport(f"line {number}: a face's embedding must be {self.dim} finite float32 values")
        box = face.get("box")
        if box is not None and not (isinstance(box, list) and len(box) == 4
                                    and all(isinstance(v, int | float) and math.isfinite(v) for v in box)):
            raise InvalidImport(f"line {number}: a face's box is null or 4 finite numbers")
        branch = face.get("branch")
        if branch is not None and not (isinstance(branch, str) and len(branch) <= 64):
            raise InvalidImport(f"line {number}: a face's branch is null or a short string")
        source = face.get("source")
        if source is None:
            face_id = face.get("face_id")
            source = f"import:{origin}:{face_id}" if isinstance(face_id, int) else None
        if source is not None and not (isinstance(source, str) and SOURCE_PATTERN.fullmatch(source)):
            source = None  # an origin name that makes no valid source: imported without one
        thumbnail = None
        if face.get("thumbnail") is not None and self.keep_thumbnails:
            try:
                thumbnail = base64.b64decode(face["thumbnail"], validate=True)
            except (TypeError, ValueError, binascii.Error) as exc:
                raise InvalidImport(f"line {number}: a face's thumbnail is not base64") from exc
            if len(thumbnail) > MAX_THUMBNAIL_BYTES or not thumbnail.startswith(b"\xff\xd8"):
                raise InvalidImport(f"line {number}: a face's thumbnail must be a JPEG of at most "
                                    f"{MAX_THUMBNAIL_BYTES} bytes")
        return NewFace(vector.astype(np.float32), [float(v) for v in box] if box else None, branch, thumbnail, source)

"""Enrolment archives: a zip laid out like the command line's folder (one folder per subject, named by its id,
holding its photos), read safely.

Nothing is ever extracted to disk: each photo is read from the archive into memory, at most `max_image_bytes`
of it, so a zip bomb (a tiny entry that claims or inflates to gigabytes) costs one bounded read and is refused
as `image_too_large`. A name that could escape a folder (absolute, `..`, a drive, a backslash, NUL) is refused as
`unsafe_path` rather than interpreted, and so is a name that is not `<subject>/<photo>`. If every entry sits
under one common top folder (a zipped folder), that folder is left out. The number of entries and their claimed
total size are bounded before anything is enrolled.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from service.core.galleries import SUBJECT_ID
from service.errors import InvalidParameter


class InvalidArchive(InvalidParameter):
    code = "invalid_archive"


@dataclass(frozen=True)
class Entry:
    """One photo of the archive, or why it will not be enrolled (`refusal` = (code, message))."""

    index: int
    name: str
    subject_id: str | None
    refusal: tuple[str, str] | None = None


@dataclass(frozen=True)
class ArchiveLimits:
    max_entries: int
    max_total_bytes: int  # the entries' claimed uncompressed sizes together
    max_photo_bytes: int


def _unsafe(name: str) -> bool:
    parts = PurePosixPath(name).parts
    return (name.startswith(("/", "\\")) or "\\" in name or "\x00" in name or ".." in parts
            or (len(name) > 1 and name[1] == ":"))


def read_entries(path: Path, limits: ArchiveLimits) -> list[Entry]:
    """The archive's photos in order, each with its subject or its refusal; `InvalidArchive` when the file is no
    zip, or passes the entry or size bounds."""
    try:
        with zipfile.ZipFile(path) as archive:
            infos = [i for i in archive.infolist() if not i.is_dir()]
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise InvalidArchive(f"archive: not a readable zip file ({exc})") from exc
    if not infos:
        raise InvalidArchive("archive: no files in it")
    if len(infos) > limits.max_entries:
        raise InvalidArchive(f"archive: {len(infos)} entries, at most {limits.max_entries} "
                             "(ANYFACE_MAX_ARCHIVE_ENTRIES)")
    claimed = sum(i.file_size for i in infos)
    if claimed > limits.max_total_bytes:
        raise InvalidArchive(f"archive: its entries claim {claimed} bytes uncompressed, at most "
                             f"{limits.max_total_bytes} (ANYFACE_MAX_ARCHIVE_BYTES)")
    names = [i.filename for i in infos]
    safe = [PurePosixPath(n).parts for n in names if not _unsafe(n)]
    # a zipped folder: every name under one top folder, some of them two levels below it
    top = safe[0][0] if (safe and all(len(p) >= 2 and p[0] == safe[0][0] for p in safe)
                         and any(len(p) == 3 for p in safe)) else None
    entries = []
    for index, name in enumerate(names):
        if _unsafe(name):
            entries.append(Entry(index, name, None, ("unsafe_path", f"{name!r}: a name that could leave its folder "
                                                                   "is not read")))
            continue
        parts = PurePosixPath(name).parts[1:] if top else PurePosixPath(name).parts
        if len(parts) != 2:
            entries.append(Entry(index, name, None, ("bad_layout", f"{name!r}: expected <subject id>/<photo>")))
        elif not SUBJECT_ID.fullmatch(parts[0]):
            entries.append(Entry(index, name, None, ("invalid_subject_id", f"{parts[0]!r}: a subject id is 1-128 "
                                                     "letters, digits, . _ : @ -")))
        else:
            entries.append(Entry(index, name, parts[0]))
    return entries


def read_photo(archive: zipfile.ZipFile, name: str, limit: int) -> bytes | None:
    """The photo's bytes, or None when it is longer than `limit` (whatever the archive claims)."""
    with archive.open(name) as f:
        data = f.read(limit + 1)
    return None if len(data) > limit else data

"""What `anyface enroll` will enrol: subjects with their photos, read from a folder (one sub-folder per subject,
named by its id) or a manifest (CSV or JSON Lines of path, subject_id, name, metadata)."""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
SUBJECT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")  # the service's subject id rule


class PlanError(ValueError):
    """The folder or manifest cannot be read as an enrolment."""


@dataclass
class SubjectPlan:
    subject_id: str
    photos: list[Path] = field(default_factory=list)
    name: str | None = None
    metadata: dict[str, Any] | None = None


def images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def from_folder(root: Path) -> list[SubjectPlan]:
    """One sub-folder per subject: its name is the subject id, its images are the photos."""
    plans = [SubjectPlan(d.name, images_in(d)) for d in sorted(root.iterdir()) if d.is_dir()]
    return [p for p in plans if p.photos]


def _row(raw: dict[str, Any], where: str, base: Path) -> tuple[Path, str, str | None, dict[str, Any] | None]:
    path, subject_id = raw.get("path"), raw.get("subject_id")
    if not path or not subject_id:
        raise PlanError(f"{where}: needs `path` and `subject_id`")
    metadata = raw.get("metadata") or None
    if isinstance(metadata, str):
        try:
            metadata = json.loads(metadata)
        except ValueError as exc:
            raise PlanError(f"{where}: metadata is not JSON ({exc})") from exc
    if metadata is not None and not isinstance(metadata, dict):
        raise PlanError(f"{where}: metadata must be a JSON object")
    photo = Path(str(path))
    return (photo if photo.is_absolute() else base / photo), str(subject_id), raw.get("name") or None, metadata


def from_manifest(manifest: Path) -> list[SubjectPlan]:
    """A CSV (header: path,subject_id[,name][,metadata]) or JSON Lines file of the same fields, one photo per row;
    relative paths are relative to the manifest's folder."""
    if manifest.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        rows = []
        for number, line in enumerate(manifest.read_text().splitlines(), 1):
            if line.strip():
                try:
                    rows.append((f"{manifest.name}:{number}", json.loads(line)))
                except ValueError as exc:
                    raise PlanError(f"{manifest.name}:{number}: not JSON ({exc})") from exc
    else:
        with manifest.open(newline="") as f:
            rows = [(f"{manifest.name}:{n}", r) for n, r in enumerate(csv.DictReader(f), 2)]
    plans: dict[str, SubjectPlan] = {}
    for where, raw in rows:
        if not isinstance(raw, dict):
            raise PlanError(f"{where}: each row is an object")
        photo, subject_id, name, metadata = _row(raw, where, manifest.parent)
        plan = plans.setdefault(subject_id, SubjectPlan(subject_id))
        plan.photos.append(photo)
        plan.name = plan.name or name
        plan.metadata = plan.metadata or metadata
    return list(plans.values())


def read_plan(source: Path) -> list[SubjectPlan]:
    if source.is_dir():
        return from_folder(source)
    if source.is_file():
        return from_manifest(source)
    raise PlanError(f"{source}: no such folder or manifest")

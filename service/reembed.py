"""Re-embed a gallery with the embedder a service runs now, from the subjects' photos.

A gallery keeps embeddings, not photos, and it records the embedder that filled it: a service started with
another embedder (`ANYFACE_EMBEDDER`) refuses to search or extend it (409 `embedder_mismatch`). This command
copies such a gallery into a new one through a running service: every subject keeps its id, name and metadata,
and its photos are enrolled again, so the new gallery is filled by the service's current embedder.

    python -m service.reembed --url http://localhost:8000 --gallery staff --into staff-sranet --photos /data/staff

`--photos` holds one folder per subject id with that subject's photos (`/data/staff/<subject_id>/*.jpg`, the
layout an enrolment desk keeps). Subjects already in the target gallery are skipped, so an interrupted run
resumes where it stopped. A subject without a photo folder, or whose photos the service refuses (no face, low
quality, ...), is reported and left out; the command exits with 1 when any was. `--api-key` (or
`ANYFACE_API_KEY`) is sent as `X-API-Key`. Once the new gallery is checked, delete the old one
(`DELETE /v1/galleries/<gallery>`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from tqdm import tqdm

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
PAGE = 100
PHOTOS_PER_REQUEST = 16  # the service's default ANYFACE_MAX_IMAGES_PER_REQUEST


@dataclass
class Outcome:
    enrolled: dict[str, int] = field(default_factory=dict)  # subject id -> faces enrolled
    skipped: list[str] = field(default_factory=list)  # already in the target gallery
    missing: list[str] = field(default_factory=list)  # no photo folder, or an empty one
    failed: dict[str, str] = field(default_factory=dict)  # subject id -> the service's error code and message

    def as_dict(self) -> dict[str, Any]:
        return {"enrolled_subjects": len(self.enrolled), "enrolled_faces": sum(self.enrolled.values()),
                "skipped": self.skipped, "missing": self.missing, "failed": self.failed}


class ServiceError(RuntimeError):
    def __init__(self, response: httpx.Response) -> None:
        try:
            error = response.json()["error"]
            text = f"{error['code']}: {error['message']}"
        except (ValueError, KeyError, TypeError):
            text = f"HTTP {response.status_code}: {response.text[:200]}"
        super().__init__(text)
        self.status = response.status_code


def _path(*parts: str) -> str:
    return "/v1/galleries/" + "/".join(quote(p, safe="") for p in parts)


def subjects(client: httpx.Client, gallery: str) -> Iterator[dict[str, Any]]:
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": PAGE, **({"cursor": cursor} if cursor else {})}
        response = client.get(_path(gallery, "subjects"), params=params)
        if response.status_code != 200:
            raise ServiceError(response)
        page = response.json()
        yield from page["subjects"]
        cursor = page["next_cursor"]
        if not cursor:
            return


def photos_of(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)


def enrol(client: httpx.Client, gallery: str, subject: dict[str, Any], photos: list[Path],
          allow_multiple: bool) -> int:
    """Enrol the photos (in requests of at most PHOTOS_PER_REQUEST); the first carries the name and metadata."""
    faces = 0
    for start in range(0, len(photos), PHOTOS_PER_REQUEST):
        chunk = photos[start:start + PHOTOS_PER_REQUEST]
        data: dict[str, str] = {"allow_multiple": "true" if allow_multiple else "false"}
        if start == 0:
            if subject.get("name") is not None:
                data["name"] = subject["name"]
            data["metadata"] = json.dumps(subject.get("metadata") or {})
        files = [("images", (p.name, p.read_bytes(), "application/octet-stream")) for p in chunk]
        response = client.post(_path(gallery, "subjects", subject["subject_id"], "faces"), data=data, files=files)
        if response.status_code != 201:
            raise ServiceError(response)
        faces += len(response.json()["faces"])
    return faces


def reembed(client: httpx.Client, gallery: str, into: str, photos: Path, allow_multiple: bool = False) -> Outcome:
    if gallery == into:
        raise ValueError("--into must name a new gallery: the old one keeps serving until the new one is checked")
    source = client.get(_path(gallery))
    if source.status_code != 200:
        raise ServiceError(source)
    target = client.get(_path(into))
    if target.status_code not in (200, 404):
        raise ServiceError(target)
    outcome = Outcome()
    for subject in tqdm(subjects(client, gallery), total=source.json()["subjects"], desc=f"re-embedding {gallery}",
                        unit="subject"):
        sid = subject["subject_id"]
        if client.get(_path(into, "subjects", sid)).status_code == 200:
            outcome.skipped.append(sid)
            continue
        files = photos_of(photos / sid)
        if not files:
            outcome.missing.append(sid)
            continue
        try:
            outcome.enrolled[sid] = enrol(client, into, subject, files, allow_multiple)
        except ServiceError as exc:
            if exc.status in (401, 403, 503):
                raise  # the whole run would fail the same way
            outcome.failed[sid] = str(exc)
    return outcome


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://localhost:8000", help="the service running the new embedder")
    p.add_argument("--gallery", required=True, help="the gallery to copy")
    p.add_argument("--into", required=True, help="the new gallery (created; subjects already there are skipped)")
    p.add_argument("--photos", type=Path, required=True, help="one folder of photos per subject id")
    p.add_argument("--api-key", default=os.environ.get("ANYFACE_API_KEY"))
    p.add_argument("--allow-multiple", action="store_true", help="enrol the largest face of a group photo")
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--report", type=Path, default=None, help="also write the outcome here as JSON")
    a = p.parse_args(argv)
    headers = {"X-API-Key": a.api_key} if a.api_key else {}
    with httpx.Client(base_url=a.url, headers=headers, timeout=a.timeout) as client:
        try:
            outcome = reembed(client, a.gallery, a.into, a.photos, a.allow_multiple)
        except (ServiceError, ValueError, httpx.HTTPError) as exc:
            sys.exit(f"re-embedding stopped: {exc}")
    summary = outcome.as_dict()
    print(json.dumps(summary, indent=2))
    if a.report:
        a.report.write_text(json.dumps(summary, indent=2))
    sys.exit(1 if outcome.missing or outcome.failed else 0)


if __name__ == "__main__":
    main()

"""`make bench-tiny`: tiny faces in whole photos, end to end through the HTTP API, written to docs/tiny_faces.md with
a plot (docs/tiny_faces.png).

Users send whole photos in which the face is tiny. This shrinks whole LFW photos so that their face is 12, 16, 24
or 32 pixels (and keeps the full-size photo as a reference row), sends them to `/v1/identify` and measures, per
named configuration of the service (`CONFIGS`: `Settings` overrides, one app each):

- detection recall: the share of probe photos in which the answer holds a face that is the true face (its box
  centre inside the true face's box). The true box is the main face that `/v1/detect` of an app with the default
  settings finds in the full-size photo, scaled by the shrink factor.
- rank-1 (closed set): the share of probe photos whose main face (the one a default identify request answers) is
  the true face and has the probe's identity as its best candidate. Requests send `threshold=-1` (the lowest the
  API takes: every subject is a candidate) with `top_k=1`, so the best candidate comes back whatever its
  similarity. A photo without a face is a miss.
- open-set hit rate: the same, and the candidate's similarity is at or above the service's default identify
  threshold (what a default request answers as a match; the threshold is read from one default request).

Protocol: the identities of `peopleDevTest.txt` (LFW View 1's identity-disjoint test split) with at least 2 photos;
each enrols its first photo at full size (POST /v1/galleries/{gallery}/subjects/{id}/faces, `allow_multiple` so a
photo with bystanders enrols its main face) and is probed with its other photos (`--max-probes`, default 800 of
1,997, caps them, taken round-robin across identities: every identity's 2nd photo, then every 3rd, ...). A probe
whose full-size photo has no face for `/v1/detect` is skipped and counted. Shrinking: the whole 250 x 250 photo,
decoded as the service decodes it, resized with cv2.INTER_AREA by target_px / (larger side of its main-face box at
full size), encoded as PNG (lossless: no JPEG artefacts on top of the shrinking). The full-size row sends the
original JPEG.

Every app runs in process (`fastapi.testclient.TestClient`) against its own temporary SQLite store.

Adding a configuration is one entry in `CONFIGS`: top-level `Settings` fields by name, a section's fields as a dict
under the section's name, e.g. `{"detection": {"min_face_size": 4}}`; unknown names are refused.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import math
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pydantic import BaseModel
from tqdm import tqdm

from bench.machine import machine
from evaluation.lfw import image_name, images_dir, lfw_root, read_people
from service.imaging.decode import decode_image
from service.models.manifest import load_manifest
from service.settings import Settings

DOCS = Path("docs")
TARGETS: tuple[int, ...] = (12, 16, 24, 32)  # face size (larger side of the box, pixels) after shrinking
FULL = "full"  # the row of the full-size photo
GALLERY = "lfw-devtest"
SPLIT = "peopleDevTest.txt"
MIN_PHOTOS = 2
MAX_PROBES = 800  # of 1,997: two configurations in ~10 minutes on 2 cores at load 8-10 (1,000 took 12.2)

# Named configurations: overrides of the environment's `Settings` (see `settings_for`). One entry each.
# "before": the face path before the face search, the landmark stage and the flip test by default.
BEFORE: dict[str, Any] = {"detection": {"landmarks": "detector", "det_upscale_below": 0, "det_pad_fallback": False},
                          "flip_test": False}
CONFIGS: dict[str, dict[str, Any]] = {
    "default": {},
    "trunk only": {"use_branches": False},
    "before": BEFORE,
    "before, trunk only": {**BEFORE, "use_branches": False},
}

READING_START = "<!-- reading: written by hand, kept when the script rewrites this file -->"
READING_END = "<!-- /reading -->"

Box = tuple[float, float, float, float]  # x1, y1, x2, y2
Size = int | str  # a target in pixels, or FULL


# -- the pure parts ---------------------------------------------------------------------------------------------
def shrink_factor(face_size: float, target_px: int) -> float:
    """The scale that makes a face whose box's larger side is `face_size` pixels `target_px` pixels."""
    if face_size <= 0 or target_px <= 0:
        raise ValueError(f"face size {face_size} and target {target_px} must be positive")
    return target_px / face_size


def shrunk_size(width: int, height: int, factor: float) -> tuple[int, int]:
    """The (width, height) of a `width` x `height` photo scaled by `factor`, rounded, at least 1 x 1."""
    return max(1, round(width * factor)), max(1, round(height * factor))


def shrink(pixels: np.ndarray, factor: float) -> tuple[np.ndarray, float, float]:
    """The photo resized by `factor` with cv2.INTER_AREA, and the scales it really got along x and y (the size is
    rounded to whole pixels)."""
    height, width = pixels.shape[:2]
    new_w, new_h = shrunk_size(width, height, factor)
    return cv2.resize(pixels, (new_w, new_h), interpolation=cv2.INTER_AREA), new_w / width, new_h / height


def scaled_box(box: Box, sx: float, sy: float) -> Box:
    return box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy


def centre_inside(box: Box, true_box: Box) -> bool:
    """The rule for "this detection is the true face": its box centre lies inside the true face's box."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return true_box[0] <= cx <= true_box[2] and true_box[1] <= cy <= true_box[3]


def true_face_index(boxes: Sequence[Box], true_box: Box) -> int | None:
    """The first of `boxes` (the answer's order: the main face first) that is the true face, or None."""
    return next((i for i, box in enumerate(boxes) if centre_inside(box, true_box)), None)


def round_robin(photos: Mapping[str, Sequence[str]]) -> list[str]:
    """Every identity's first photo, then every second one, ...: a prefix of this spreads over identities."""
    columns = itertools.zip_longest(*photos.values())
    return [p for column in columns for p in column if p is not None]


def settings_for(overrides: Mapping[str, Any], base: Settings) -> Settings:
    """`base` with a configuration's overrides: a top-level field by name, or a section's fields as a dict under
    the section's name (merged into that section). Unknown names raise ValueError (a typo must not silently
    benchmark the defaults); values are validated."""
    values = base.model_dump()
    for key, value in overrides.items():
        if key not in Settings.model_fields:
            raise ValueError(f"{key!r} is not a Settings field")
        current = getattr(base, key)
        if isinstance(current, BaseModel) and isinstance(value, Mapping):
            section = type(current)
            unknown = sorted(set(value) - set(section.model_fields))
            if unknown:
                raise ValueError(f"{', '.join(map(repr, unknown))}: not a field of {section.__name__} ({key})")
            values[key] = {**values[key], **value}
        else:
            values[key] = value
    return Settings.model_validate(values)


@dataclass(frozen=True)
class Answer:
    """What one identify request said about one probe photo (`threshold=-1`, `top_k=1`, every face)."""

    found: bool  # a face of the answer is the true face
    main_is_true: bool  # the main face (the first) is the true face
    top_subject: str | None = None  # the main face's best candidate
    similarity: float | None = None
    branch: str | None = None  # the embedder of the main face
    size: float | None = None  # the main face's detected size (larger side of its box)
    refused: str | None = None  # the error code when the request answered no face (no_face, image_too_small)

    @classmethod
    def of(cls, body: Mapping[str, Any], true_box: Box) -> Answer:
        faces = body["faces"]
        boxes = [(f["face"]["box"]["x1"], f["face"]["box"]["y1"], f["face"]["box"]["x2"], f["face"]["box"]["y2"])
                 for f in faces]
        index = true_face_index(boxes, true_box)
        if not faces:
            return cls(False, False)
        main = faces[0]
        best = main["candidates"][0] if main["candidates"] else None
        return cls(index is not None, index == 0, best["subject_id"] if best else None,
                   float(best["similarity"]) if best else None, main["face"].get("branch"), float(main["face"]["size"]))

    def rank1(self, identity: str) -> bool:
        return self.main_is_true and self.top_subject == identity

    def open_set(self, identity: str, threshold: float) -> bool:
        return self.rank1(identity) and self.similarity is not None and self.similarity >= threshold


@dataclass(frozen=True)
class Row:
    probes: int
    recall: float
    rank1: float
    open_set: float
    found_not_main: int  # true face found, but another face ranked as the main face
    refused: Counter[str] = field(default_factory=Counter)
    branches: Counter[str] = field(default_factory=Counter)  # embedder of the main face, when it is the true face
    median_size: float | None = None  # detected size of the main face, when it is the true face


def summarise(answers: Sequence[Answer], identities: Sequence[str], threshold: float) -> Row:
    """Detection recall, rank-1 and open-set hit rate of one configuration at one size."""
    n = len(answers)
    if n == 0 or n != len(identities):
        raise ValueError(f"{n} answers for {len(identities)} probes")
    pairs = list(zip(answers, identities, strict=True))
    sizes = [a.size for a in answers if a.main_is_true and a.size is not None]
    return Row(
        probes=n,
        recall=sum(a.found for a in answers) / n,
        rank1=sum(a.rank1(i) for a, i in pairs) / n,
        open_set=sum(a.open_set(i, threshold) for a, i in pairs) / n,
        found_not_main=sum(a.found and not a.main_is_true for a in answers),
        refused=Counter(a.refused for a in answers if a.refused),
        branches=Counter(a.branch for a in answers if a.main_is_true and a.branch),
        median_size=float(np.median(sizes)) if sizes else None,
    )


# -- the run ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Probe:
    person: str
    image: str  # relative to images_deepfunneled
    face_size: float  # the larger side of its main face's box at full size (default pipeline)
    photos: dict[Size, bytes]  # what is sent, per size
    true_boxes: dict[Size, Box]  # the true face's box in the photo sent at each size


@dataclass
class ConfigResult:
    name: str
    overrides: dict[str, Any]
    threshold: float
    enrolled: int
    enrol_failed: list[str]
    rows: dict[Size, Row]
    seconds: float


@dataclass
class Dataset:
    identities: int  # of the split with >= MIN_PHOTOS photos
    gallery: list[tuple[str, str]]  # (person, enrolment photo) whose photo has a face
    no_face_enrolment: list[str]  # persons whose first photo has no face (neither enrolled nor probed)
    probes: list[Probe]
    candidates: int  # probe photos of the gallery's identities
    examined: int  # of them, how many were looked at (stops at --max-probes)
    no_face: list[str]  # probe photos without a face at full size (skipped)
    too_small: list[str] = field(default_factory=list)  # face at full size not larger than the largest target


def _form(data: Mapping[str, object]) -> dict[str, str]:
    return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in data.items()}


def _png(pixels: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return encoded.tobytes()


def _main_box(client: Any, data: bytes, name: str) -> Box | None:
    response = client.post("/v1/detect", files={"image": (Path(name).name, data, "image/jpeg")})
    if response.status_code != 200:
        raise RuntimeError(f"/v1/detect {name}: {response.status_code} {response.text}")
    faces = response.json()["faces"]
    if not faces:
        return None
    box = faces[0]["box"]
    return float(box["x1"]), float(box["y1"]), float(box["x2"]), float(box["y2"])


def prepare(images: Path, people_file: Path, max_probes: int | None, store_dir: Path, targets: Sequence[int]
            ) -> Dataset:
    """Pick the gallery and the probes, find each probe's true face with the default settings and make its photos."""
    from fastapi.testclient import TestClient

    from service.api.app import create_app

    people = [p for p in read_people(people_file) if p.images >= MIN_PHOTOS]
    settings = settings_for({"store": f"sqlite:///{store_dir / 'reference.sqlite3'}"}, Settings())
    limits = settings.decode
    gallery: list[tuple[str, str]] = []
    no_face_enrolment: list[str] = []
    probes: list[Probe] = []
    no_face: list[str] = []
    too_small: list[str] = []
    with TestClient(create_app(settings)) as client:
        for person in tqdm(people, desc="reference: enrolment photos", unit="photo"):
            first = image_name(person.name, 1)
            if _main_box(client, (images / first).read_bytes(), first) is None:
                no_face_enrolment.append(person.name)
            else:
                gallery.append((person.name, first))
        enrolled = {name for name, _ in gallery}
        candidates = round_robin({p.name: [image_name(p.name, i) for i in range(2, p.images + 1)]
                                  for p in people if p.name in enrolled})
        wanted = len(candidates) if max_probes is None else min(max_probes, len(candidates))
        examined = 0
        with tqdm(total=wanted, desc="reference: probe photos", unit="photo") as bar:
            for name in candidates:
                if len(probes) == wanted:
                    break
                examined += 1
                data = (images / name).read_bytes()
                box = _main_box(client, data, name)
                if box is None:
                    no_face.append(name)
                    continue
                size = max(box[2] - box[0], box[3] - box[1])
                if size <= max(targets):
                    too_small.append(name)
                    continue
                pixels = decode_image(data, limits, name)
                photos: dict[Size, bytes] = {FULL: data}
                true_boxes: dict[Size, Box] = {FULL: box}
                for target in targets:
                    small, sx, sy = shrink(pixels, shrink_factor(size, target))
                    photos[target], true_boxes[target] = _png(small), scaled_box(box, sx, sy)
                probes.append(Probe(name.split("/")[0], name, size, photos, true_boxes))
                bar.update()
    return Dataset(len(people), gallery, no_face_enrolment, probes, len(candidates), examined, no_face, too_small)


def default_threshold(client: Any, probes: Sequence[Probe]) -> float:
    """The identify threshold the service applies when a request gives none, as a default request answers it."""
    for probe in probes:
        response = client.post("/v1/identify", files={"image": ("probe.jpg", probe.photos[FULL], "image/jpeg")},
                               data=_form({"gallery": GALLERY}))
        if response.status_code == 200:
            return float(response.json()["threshold"])
    raise RuntimeError(f"no default identify request succeeded: {response.status_code} {response.text}")


def run_config(name: str, overrides: dict[str, Any], data: Dataset, images: Path, store_dir: Path,
               sizes: Sequence[Size]) -> ConfigResult:
    """One app with this configuration: enrol the gallery through the API, identify every probe at every size."""
    from fastapi.testclient import TestClient

    from service.api.app import create_app

    started = time.time()
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "config"
    settings = settings_for({**overrides, "store": f"sqlite:///{store_dir / f'{slug}.sqlite3'}"}, Settings())
    answers: dict[Size, list[Answer]] = {s: [] for s in sizes}
    failed: list[str] = []
    with TestClient(create_app(settings)) as client:
        for person, photo in tqdm(data.gallery, desc=f"{name}: enrolment", unit="subject"):
            response = client.post(f"/v1/galleries/{GALLERY}/subjects/{person}/faces",
                                   files=[("images", (Path(photo).name, (images / photo).read_bytes(), "image/jpeg"))],
                                   data=_form({"name": person, "allow_multiple": True}))
            if response.status_code == 422 and response.json()["error"]["code"] == "no_face":
                failed.append(person)
            elif response.status_code != 201:
                raise RuntimeError(f"enrolling {photo}: {response.status_code} {response.text}")
        threshold = default_threshold(client, data.probes)
        form = _form({"gallery": GALLERY, "top_k": 1, "threshold": -1, "all_faces": True, "min_quality": 0})
        with tqdm(total=len(data.probes) * len(sizes), desc=f"{name}: identify", unit="req") as bar:
            for probe in data.probes:
                for size in sizes:
                    kind = ("probe.jpg", "image/jpeg") if size == FULL else ("probe.png", "image/png")
                    response = client.post("/v1/identify", data=form,
                                           files={"image": (kind[0], probe.photos[size], kind[1])})
                    if response.status_code == 200:
                        answers[size].append(Answer.of(response.json(), probe.true_boxes[size]))
                    elif response.status_code == 422 and response.json()["error"]["code"] in {"no_face",
                                                                                              "image_too_small"}:
                        answers[size].append(Answer(False, False, refused=response.json()["error"]["code"]))
                    else:
                        raise RuntimeError(f"identify {probe.image} at {size}: {response.status_code} {response.text}")
                    bar.update()
    identities = [p.person for p in data.probes]
    rows = {s: summarise(answers[s], identities, threshold) for s in sizes}
    return ConfigResult(name, overrides, threshold, len(data.gallery) - len(failed), failed, rows,
                        time.time() - started)


# -- the report -------------------------------------------------------------------------------------------------
def size_label(size: Size) -> str:
    return "full (250 x 250)" if size == FULL else f"{size} px"


def pct(value: float) -> str:
    return f"{value * 100:.1f}%"


def table(results: Sequence[ConfigResult], sizes: Sequence[Size]) -> str:
    head = "| face size | " + " | ".join(
        f"{r.name}: recall | {r.name}: rank-1 | {r.name}: open-set hit" for r in results) + " |"
    rule = "|---|" + "---|" * (3 * len(results))
    lines = [head, rule]
    for size in sizes:
        cells = [f"{pct(r.rows[size].recall)} | {pct(r.rows[size].rank1)} | {pct(r.rows[size].open_set)}"
                 for r in results]
        lines.append(f"| {size_label(size)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def branch_lines(results: Sequence[ConfigResult], sizes: Sequence[Size]) -> str:
    lines = []
    for r in results:
        parts = []
        for size in sizes:
            row = r.rows[size]
            total = sum(row.branches.values())
            mix = ", ".join(f"{b} {c / total * 100:.0f}%" for b, c in row.branches.most_common()) if total else "-"
            detected = f"median {row.median_size:.1f} px" if row.median_size is not None else "none found"
            parts.append(f"{size_label(size)} ({detected}): {mix}")
        lines.append(f"- {r.name}: " + "; ".join(parts))
    return "\n".join(lines)


def detail_lines(results: Sequence[ConfigResult], sizes: Sequence[Size]) -> str:
    lines = []
    for r in results:
        parts = []
        for size in sizes:
            row = r.rows[size]
            refused = ", ".join(f"{c} {code}" for code, c in sorted(row.refused.items())) or "0 refused"
            parts.append(f"{size_label(size)}: {refused}, {row.found_not_main} true face found but not the main face")
        lines.append(f"- {r.name}: " + "; ".join(parts))
    return "\n".join(lines)


def plot(results: Sequence[ConfigResult], sizes: Sequence[Size], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = list(range(len(sizes)))
    labels = [str(s) for s in sizes]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for i, r in enumerate(results):
        color = f"C{i}"
        left.plot(x, [r.rows[s].recall * 100 for s in sizes], "o-", color=color, label=r.name)
        right.plot(x, [r.rows[s].rank1 * 100 for s in sizes], "o-", color=color, label=f"{r.name}: rank-1")
        right.plot(x, [r.rows[s].open_set * 100 for s in sizes], "s:", color=color,
                   label=f"{r.name}: open-set hit @ {r.threshold:.3f}")
    for ax, title in ((left, "detection recall"), (right, "identification through /v1/identify")):
        ax.set_xticks(x, labels)
        ax.set_xlabel("face size (larger side of the box, px)")
        ax.set_title(title)
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    left.set_ylabel("% of probe photos")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def kept_reading(out: Path) -> str:
    """The hand-written reading of an earlier report at `out`, or a placeholder."""
    if out.exists():
        text = out.read_text()
        start, end = text.find(READING_START), text.find(READING_END)
        if 0 <= start < end:
            return text[start + len(READING_START):end].strip()
    return "(Not written yet: read the table above and write what it says here; the script keeps this section.)"


def branch_models(model_dir: Path) -> str:
    """The BTNet branches in `model_dir`'s manifest and where each came from, as Markdown list items."""
    entries = load_manifest(model_dir).embedders("btnet")
    if not entries:
        return "  - none: `use_branches` changes nothing"
    return "\n".join(f"  - `{name}`: {entries[name].source}"
                     for name in sorted(entries, key=lambda n: -(entries[n].resolution or 0)))


def code_version() -> str:
    """`git describe --always --dirty` of the working directory (what the run measured), or "unknown"."""
    try:
        done = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True, timeout=10,
                              check=True)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() or "unknown"


def half_width(n: int) -> float:
    """The largest 95% binomial half-width (at p = 0.5) for n probes, in points."""
    return 1.96 * math.sqrt(0.25 / n) * 100


def report(results: Sequence[ConfigResult], data: Dataset, sizes: Sequence[Size], command: str, minutes: float,
           out: Path, png: Path) -> str:
    n = len(data.probes)
    thresholds = ", ".join(f"{r.name} {r.threshold:.4f}" for r in results)
    enrol = "; ".join(f"{r.name}: {r.enrolled} enrolled" + (f" ({len(r.enrol_failed)} without a face: "
                                                             f"{', '.join(r.enrol_failed)})" if r.enrol_failed else "")
                      for r in results)
    configs = "\n".join(f"- **{r.name}**: `{r.overrides}` ({r.seconds / 60:.1f} min)" for r in results)
    settings = Settings()
    face = float(np.median([p.face_size for p in data.probes]))
    side = shrunk_size(250, 250, shrink_factor(face, min(TARGETS)))[0]
    return f"""# Tiny faces end to end through the API

Made by `{command}` (`make bench-tiny` runs it with its defaults) on {machine(platform.system())},
{time.strftime("%Y-%m-%d")}, code at `{code_version()}`, in {minutes:.1f} minutes. Every number below comes from
that one run.

Whole LFW photos are shrunk so that their face is 12, 16, 24 or 32 pixels and sent to `POST /v1/identify` of the
service built in process (`create_app(settings)` + `TestClient`, one app and one temporary SQLite store per
configuration). How the photos, the true face and the hits are defined: the docstring of `bench/tiny_faces.py`.

- **Split**: `{SPLIT}` (LFW View 1 test identities, disjoint from DevTrain): {data.identities} identities with
  {MIN_PHOTOS}+ photos. {len(data.gallery)} enrol their first photo at full size ({len(data.no_face_enrolment)} whose
  first photo has no face are left out); gallery `{GALLERY}` of {len(data.gallery)} subjects ({enrol}).
- **Probes**: {n:,} photos of {len({p.person for p in data.probes})} identities, each sent at every size. Of the
  {data.candidates:,} other photos of the enrolled identities {data.examined:,} were looked at (round-robin across
  identities, `--max-probes`); {len(data.no_face)} had no face at full size and
  {len(data.too_small)} a face no larger than {max(TARGETS)} px: skipped.
- **Sizes**: the whole 250 x 250 photo resized with cv2.INTER_AREA by target / (larger side of the main face's box
  at full size), sent as PNG (the median face, {face:.0f} px, at 12 px: a {side} x {side} photo); the full row sends
  the original JPEG (for the default configuration its recall is 100% by construction: the reference detection).
- **Requests**: `top_k=1, threshold=-1, all_faces=true, min_quality=0` (what the pipeline finds and ranks,
  not what the default quality gate lets through). `threshold` is a request parameter (from -1 to 1); at -1
  every subject is a candidate, so the best candidate comes back whatever its similarity (closed-set rank-1).
  The open-set hit also needs that similarity at or above the service's default identify threshold, read from a
  default request ({thresholds}).
- **Recall**: a face of the answer has its box centre inside the true face's box (the main face of `/v1/detect`
  with the default settings on the full-size photo, scaled). **Rank-1**: the main face of the answer (the one a
  default request answers) is the true face and its best candidate is the probe's identity; no face = miss.
- **Routing** (`branch_rule` `{settings.branch_rule}`): with branches, a face goes to the smallest resolution at or
  above its detected size (the larger side of its box), the 112 trunk above 28 px; without, every face is
  upsampled to the trunk. Enrolment photos are full size: trunk embeddings in every configuration. Branches in
  `{settings.model_dir}/`:
{branch_models(settings.model_dir)}
- With {n:,} probes a rate's 95% interval is at most ±{half_width(n):.1f} points; both configurations see the
  same photos, so their difference is measured more tightly than that.

Configurations (`CONFIGS` in `bench/tiny_faces.py`, overrides of `Settings()`):
{configs}

{table(results, sizes)}

![recall and rank-1 vs face size]({png.name})

Detected size and embedder of the main face, when it is the true face:
{branch_lines(results, sizes)}

Requests answered 422 (no_face, image_too_small) and true faces found but not ranked as the main face:
{detail_lines(results, sizes)}

## Reading

{READING_START}
{kept_reading(out)}
{READING_END}
"""


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.tiny_faces", description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS), metavar="NAME",
                        help=f"configurations to run (default: all): {', '.join(map(repr, CONFIGS))}")
    parser.add_argument("--max-probes", type=int, default=MAX_PROBES,
                        help=f"at most this many probe photos, round-robin across identities "
                             f"(default: {MAX_PROBES}; 0: all)")
    parser.add_argument("--out", type=Path, default=DOCS / "tiny_faces.md")
    args = parser.parse_args(argv)
    if args.max_probes < 0:
        parser.error("--max-probes must be 0 (all) or more")
    logging.getLogger("service").setLevel(logging.ERROR)
    started = time.time()
    root = lfw_root()
    images = images_dir(root)
    sizes: list[Size] = [*TARGETS, FULL]
    with tempfile.TemporaryDirectory(prefix="anyface-tiny-") as tmp:
        data = prepare(images, root / SPLIT, args.max_probes or None, Path(tmp), TARGETS)
        if not data.probes:
            raise SystemExit("no probe photo with a face")
        results = [run_config(name, CONFIGS[name], data, images, Path(tmp), sizes) for name in args.configs]
    png = args.out.with_suffix(".png")
    plot(results, sizes, png)
    command = "python -m bench.tiny_faces" + (" " + shlex.join(sys.argv[1:]) if argv is None and sys.argv[1:] else "")
    text = report(results, data, sizes, command, (time.time() - started) / 60, args.out, png)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()

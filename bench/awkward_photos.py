"""`python -m bench.awkward_photos`: the measurements behind the defaults of `service/detection/search.py`
(docs/awkward_photos.md): tiny photos, faces that fill the frame, photos turned without EXIF, photos without a
face, and strongly turned heads.

Photos: the first photo of LFW identities of `peopleDevTrain.txt` (tuning data; never the test split), every
k-th identity in file order so that `--photos` of them spread over the list. The reference face of a photo is
the main face (`rank_by_prominence`) that the plain detector finds at full size at the configured score
threshold (YuNet 0.6); a photo without one is left out and counted. The detector is built like the service's
(`make_detector`: it keeps scores from 0.3, the threshold is applied afterwards). "Found" always means a face at
or above the threshold whose box centre is inside the reference box (mapped into the test image).

- `small`: the whole 250 x 250 photo shrunk (cv2.INTER_AREA) so that the reference box's larger side is
  12/16/24/32 px. Recall, and the landmark error (NME): the mean distance of the 5 points from reference points
  scaled down, over the scaled inter-ocular distance, on the photos that every condition of that size finds (each
  row on the same faces). Two references: YuNet's own points at full size (which favours a condition that runs
  YuNet at the same face size, about 125 px) and SCRFD's points at full size (an independent detector). The
  full-size rows show what a threshold above 250 does to a normal LFW photo: its points against the plain
  detection's, and its time.
- `frame`: the photo cropped to the reference box scaled about its centre (1.0 = the box itself; 0.8 and 0.6 =
  inside it: the face exceeds the frame), at its own size (75-160 px) and enlarged (cubic) to 480 and 960 px, as
  a close-up from a phone would be. Found without and with the pad fallback at several pad fractions and
  borders, and once with a detector that does not downscale the padded copy (det_max_side 4096), to tell
  whether padding helps by adding context or by making the face smaller.
- `rotated`: the photo turned 90/180/270 degrees clockwise (np.rot90, no EXIF), at full size and shrunk to
  16 px faces. Found, found with the right rotation reported, detector calls per photo, and the largest distance
  (pixels) of a mapped-back landmark from where the same search puts it on the upright photo (turned the same
  way). Conditions: search off; the search only after a miss; the search whenever the best score is below the
  detector's `ROTATION_CONFIDENT`. Then the scores behind that constant: on each upright photo, the best score
  of the upright orientation and the best of the three turned ones.
- `negatives`: the widest strip of the photo beside all of its detections (scores from 0.3, so a bystander's
  face is not in it), at least 40 px wide. False positives (any face at or above the threshold) and detector
  calls per photo for each configuration.
- `heads`: the first photo of every identity of the split: how many have no face, and the most turned heads
  (yaw proxy: horizontal distance of the nose from the eyes' midpoint over the inter-ocular distance) with two
  proxies of landmark quality: the disagreement of YuNet's points with those it finds on the mirrored photo
  (mapped back), and with SCRFD's points, both over the inter-ocular distance. `--profile-dir` writes the most
  turned heads and the photos without a face with YuNet's box and points drawn, to look at.

Each condition's mean time per photo (ms: the detector calls plus resizing and padding) is from this machine;
only the ratios carry over.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from bench.machine import machine
from evaluation.lfw import image_name, images_dir, lfw_root, read_people
from service.core.face_path import rank_by_prominence
from service.detection import DetectedFace, Detector, build_detector
from service.detection.search import FaceSearch, PadBorder, best_score, turned
from service.models.manifest import Manifest, load_manifest
from service.settings import DetectionSettings

SPLIT = "peopleDevTrain.txt"
DETECTOR_FLOOR = 0.3  # service/core/wiring.py DETECTOR_SCORE_FLOOR: the detector keeps these, the filter cuts
TARGETS: tuple[int, ...] = (12, 16, 24, 32)
UPSCALE_TO: tuple[int, ...] = (160, 240, 320, 480)
CROPS: tuple[float, ...] = (1.0, 0.8, 0.6)
CROP_SIDES: tuple[int | None, ...] = (None, 480, 960)
PADS: tuple[tuple[float, PadBorder], ...] = ((0.5, "replicate"), (1.0, "replicate"), (1.0, "mean"))
CLOCKWISE: tuple[int, ...] = (0, 90, 180, 270)
SHRUNK_FACE = 16
MIN_STRIP = 40
LEFT_EYE, RIGHT_EYE, NOSE = 0, 1, 2
MIRRORED = [1, 0, 2, 4, 3]  # the landmark order of a mirrored face

Finder = Callable[[np.ndarray], list[DetectedFace]]


@dataclass
class Photo:
    name: str
    rgb: np.ndarray
    face: DetectedFace  # the reference: YuNet's main face at full size
    others: list[DetectedFace]  # every detection from the floor up
    scrfd: DetectedFace | None = None  # SCRFD's face in the reference box, at full size

    @property
    def iod(self) -> float:
        return inter_ocular(self.face)


@dataclass
class Tally:
    """One condition of one case: photos, found, landmark errors by photo index, time, detector calls."""

    photos: int = 0
    found: int = 0
    errors: dict[int, float] = field(default_factory=dict)
    seconds: float = 0.0
    passes: int = 0
    right: int = 0  # found with the right rotation reported
    worst_px: float = 0.0

    def add(self, index: int, hit: DetectedFace | None, seconds: float, error: float | None = None,
            passes: int = 1) -> None:
        self.photos += 1
        self.seconds += seconds
        self.passes += passes
        if hit is not None:
            self.found += 1
            if error is not None:
                self.errors[index] = error

    @property
    def recall(self) -> float:
        return self.found / max(1, self.photos)

    @property
    def ms(self) -> float:
        return 1000 * self.seconds / max(1, self.photos)

    @property
    def calls(self) -> float:
        return self.passes / max(1, self.photos)

    def mean_error(self, among: set[int] | None = None) -> float:
        values = [e for i, e in self.errors.items() if among is None or i in among]
        return float(np.mean(values)) if values else float("nan")


def inter_ocular(face: DetectedFace) -> float:
    return float(np.linalg.norm(face.landmarks[LEFT_EYE] - face.landmarks[RIGHT_EYE]))


def centre_in(box: np.ndarray, true_box: np.ndarray) -> bool:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return bool(true_box[0] <= cx <= true_box[2] and true_box[1] <= cy <= true_box[3])


def match(faces: Iterable[DetectedFace], true_box: np.ndarray, threshold: float) -> DetectedFace | None:
    """The best-scored face at or above the threshold whose centre is in the true box."""
    hits = [f for f in faces if f.score >= threshold and centre_in(f.box, true_box)]
    return max(hits, key=lambda f: f.score) if hits else None


def nme(landmarks: np.ndarray, reference: np.ndarray, iod: float) -> float:
    return float(np.linalg.norm(landmarks.astype(np.float64) - reference, axis=1).mean() / iod)


def timed(finder: Finder, rgb: np.ndarray) -> tuple[list[DetectedFace], float]:
    started = time.perf_counter()
    faces = finder(rgb)
    return faces, time.perf_counter() - started


def read_rgb(root: Path, name: str) -> np.ndarray:
    bgr = cv2.imread(str(images_dir(root) / name))
    if bgr is None:
        raise FileNotFoundError(images_dir(root) / name)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def resized(rgb: np.ndarray, scale: float, interpolation: int) -> tuple[np.ndarray, float, float]:
    """The image resized by `scale` and the exact factors along x and y."""
    height, width = rgb.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(rgb, size, interpolation=interpolation), size[0] / width, size[1] / height


def main_face(faces: list[DetectedFace], threshold: float, width: int, height: int) -> DetectedFace | None:
    kept = [f for f in faces if f.score >= threshold]
    return rank_by_prominence(kept, width, height)[0] if kept else None


def load_photos(root: Path, count: int, detector: Detector, scrfd: Detector | None, threshold: float
                ) -> tuple[list[Photo], list[str]]:
    """The first photo of `count` identities spread over the split, with their reference faces; and the names of
    those without one."""
    people = read_people(root / SPLIT)
    chosen = people[:: max(1, len(people) // count)][:count]
    photos: list[Photo] = []
    missed: list[str] = []
    for person in tqdm(chosen, desc="reference faces", unit="photo"):
        name = image_name(person.name, 1)
        rgb = read_rgb(root, name)
        faces = detector.detect(rgb)
        face = main_face(faces, threshold, rgb.shape[1], rgb.shape[0])
        if face is None:
            missed.append(name)
            continue
        other = None if scrfd is None else match(scrfd.detect(rgb), face.box, scrfd.score_threshold)
        photos.append(Photo(name, rgb, face, faces, other))
    return photos, missed


def searcher(detector: Detector, upscale_below: int = 0, pad: bool = False, rotation: bool = False,
             interpolation: int = cv2.INTER_CUBIC, pad_fraction: float = 0.5, border: PadBorder = "replicate",
             rotation_confident: float | None = None) -> FaceSearch:
    detection = settings_for(detector.name).model_copy(update={
        "det_upscale_below": upscale_below, "det_pad_fallback": pad, "rotation_search": rotation})
    return FaceSearch(detector, detection, interpolation=interpolation, pad_fraction=pad_fraction,
                      pad_border=border, rotation_confident=rotation_confident)


def finder(search: FaceSearch, threshold: float) -> Finder:
    def find(rgb: np.ndarray) -> list[DetectedFace]:
        return search.find(rgb, threshold).faces

    return find


def second_pass(search: FaceSearch, threshold: float) -> Finder:
    """The plain detector, then the upscaled pass only when it found nothing at or above the threshold."""

    def find(rgb: np.ndarray) -> list[DetectedFace]:
        faces = search.detector.detect(rgb)
        return faces if best_score(faces) >= threshold else search.detect(rgb)

    return find


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def small_photos(photos: Sequence[Photo], detector: Detector, threshold: float, chosen: int) -> str:
    conditions: dict[str, Finder] = {"no upscaling": detector.detect}
    for size in UPSCALE_TO:
        conditions[f"upscale to {size}, cubic"] = searcher(detector, size).detect
    conditions[f"upscale to {chosen}, linear"] = searcher(detector, chosen, interpolation=cv2.INTER_LINEAR).detect
    conditions[f"second pass to {chosen}, cubic"] = second_pass(searcher(detector, chosen), threshold)
    out = []
    for target in (*TARGETS, None):
        tallies = {name: Tally() for name in conditions}
        against_scrfd = {name: Tally() for name in conditions}
        label = f"{target} px faces" if target else "full size"
        for index, photo in enumerate(tqdm(photos, desc=f"small photos, {label}", unit="photo")):
            image, sx, sy = (resized(photo.rgb, target / photo.face.size, cv2.INTER_AREA) if target
                             else (photo.rgb, 1.0, 1.0))
            scale = np.array([sx, sy])
            true_box = photo.face.box * np.tile(scale, 2)
            for name, find in conditions.items():
                faces, seconds = timed(find, image)
                hit = match(faces, true_box, threshold)
                error = None if hit is None else nme(hit.landmarks, photo.face.landmarks * scale, photo.iod * sx)
                tallies[name].add(index, hit, seconds, error)
                if hit is not None and photo.scrfd is not None:
                    reference = photo.scrfd.landmarks * scale
                    against_scrfd[name].add(index, hit, 0.0, nme(hit.landmarks, reference, photo.iod * sx))
        # the photos every condition that finds any finds (at 12 px the plain detector finds none)
        common = set.intersection(*(set(t.errors) for t in tallies.values() if t.errors))
        common_scrfd = set.intersection(*(set(t.errors) for t in against_scrfd.values() if t.errors))
        rows = [[name, f"{t.recall:.3f}", f"{t.mean_error(common):.3f}",
                 f"{against_scrfd[name].mean_error(common_scrfd):.3f}", f"{t.ms:.1f}"]
                for name, t in tallies.items()]
        out.append(f"{label.capitalize()} ({len(photos)} photos; NME on the {len(common)} found by all that find any, "
                   f"{len(common_scrfd)} of them with an SCRFD reference):\n\n"
                   + table(["condition", "recall", "NME vs YuNet full", "NME vs SCRFD full", "ms/photo"], rows))
    return "\n\n".join(out)


def crop(photo: Photo, factor: float, side: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """The photo cropped to its reference box scaled by `factor` about its centre, enlarged to `side` (cubic)
    when given; the reference box and points in its pixels, and the scale."""
    x1, y1, x2, y2 = (float(v) for v in photo.face.box)
    cx, cy, half_w, half_h = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) * factor / 2, (y2 - y1) * factor / 2
    height, width = photo.rgb.shape[:2]
    left, top = max(0, round(cx - half_w)), max(0, round(cy - half_h))
    right, bottom = min(width, round(cx + half_w)), min(height, round(cy + half_h))
    image = np.ascontiguousarray(photo.rgb[top:bottom, left:right])
    sx = sy = 1.0
    if side is not None:
        image, sx, sy = resized(image, side / max(image.shape[:2]), cv2.INTER_CUBIC)
    shift, scale = np.array([left, top], dtype=np.float64), np.array([sx, sy])
    return image, (photo.face.box.reshape(2, 2) - shift).reshape(4) * np.tile(scale, 2), \
        (photo.face.landmarks - shift) * scale, sx


def filling_the_frame(photos: Sequence[Photo], detector: Detector, unbounded: Detector, threshold: float,
                      upscale_below: int) -> str:
    conditions: dict[str, Finder] = {"no fallback": searcher(detector, upscale_below).detect}
    for fraction, border in PADS:
        search = searcher(detector, upscale_below, pad=True, pad_fraction=fraction, border=border)
        conditions[f"pad {fraction:g} {border}"] = finder(search, threshold)
    conditions["pad 0.5 replicate, max side 4096"] = finder(searcher(unbounded, upscale_below, pad=True), threshold)
    names = list(conditions)
    rows = []
    totals = {name: Tally() for name in names}
    for factor in CROPS:
        for side in CROP_SIDES:
            tallies = {name: Tally() for name in names}
            desc = f"crops at {factor:g} x the box, {side or 'own'} px"
            for index, photo in enumerate(tqdm(photos, desc=desc, unit="photo")):
                image, true_box, reference, scale = crop(photo, factor, side)
                for name, find in conditions.items():
                    faces, seconds = timed(find, image)
                    hit = match(faces, true_box, threshold)
                    error = None if hit is None else nme(hit.landmarks, reference, photo.iod * scale)
                    tallies[name].add(index, hit, seconds, error)
                    totals[name].add(index, None, seconds)
            rows.append([f"{factor:g}", f"{side or 'own (75-160)'}",
                         *(f"{t.found} ({t.mean_error():.2f})" for t in tallies.values())])
    rows.append(["", "ms/photo", *(f"{t.ms:.0f}" for t in totals.values())])
    return (f"Crops of {len(photos)} photos, found (mean NME of the found), upscaling below {upscale_below}:\n\n"
            + table(["crop x box", "longer side", *names], rows))


def rotate_points(points: np.ndarray, width: int, height: int, clockwise: int) -> np.ndarray:
    """Points of an upright W x H photo in the photo turned `clockwise` degrees (pixel i spans [i, i + 1))."""
    x, y = points[:, 0], points[:, 1]
    if clockwise == 0:
        return points.copy()
    if clockwise == 90:
        return np.stack([height - y, x], axis=1)
    if clockwise == 180:
        return np.stack([width - x, height - y], axis=1)
    return np.stack([y, width - x], axis=1)


def rotated(photos: Sequence[Photo], detector: Detector, threshold: float, upscale_below: int) -> str:
    searches = {
        "search off": searcher(detector, upscale_below, pad=True),
        "search after a miss": searcher(detector, upscale_below, pad=True, rotation=True, rotation_confident=0.0),
        "search below the confident score": searcher(detector, upscale_below, pad=True, rotation=True),
    }
    confident = searches["search below the confident score"].rotation_confident
    rows = []
    scores: dict[str, tuple[list[float], list[float]]] = {}
    for variant in ("full size", f"{SHRUNK_FACE} px faces"):
        right_scores: list[float] = []
        wrong_scores: list[float] = []
        scores[variant] = (right_scores, wrong_scores)
        for clockwise in CLOCKWISE:
            tallies = {name: Tally() for name in searches}
            for index, photo in enumerate(tqdm(photos, desc=f"{variant}, turned {clockwise}", unit="photo")):
                upright, sx, _ = (photo.rgb, 1.0, 1.0) if variant == "full size" else resized(
                    photo.rgb, SHRUNK_FACE / photo.face.size, cv2.INTER_AREA)
                height, width = upright.shape[:2]
                image = np.ascontiguousarray(np.rot90(upright, -clockwise // 90))
                corners = rotate_points(photo.face.box.reshape(2, 2).astype(np.float64) * sx, width, height,
                                        clockwise)
                true_box = np.concatenate([corners.min(axis=0), corners.max(axis=0)])
                reference = match(searches["search off"].detect(upright), photo.face.box * sx, threshold)
                for name, search in searches.items():
                    started = time.perf_counter()
                    result = search.find(image, threshold)
                    seconds = time.perf_counter() - started
                    hit = match(result.faces, true_box, threshold)
                    tally = tallies[name]
                    tally.add(index, hit, seconds, passes=result.passes)
                    if hit is not None and result.rotation == clockwise:
                        tally.right += 1
                        if reference is not None:
                            points = rotate_points(reference.landmarks.astype(np.float64), width, height, clockwise)
                            distance = float(np.linalg.norm(hit.landmarks - points, axis=1).max())
                            tally.worst_px = max(tally.worst_px, distance)
                if clockwise == 0:
                    search = searches["search off"]
                    right_scores.append(best_score(search.detect(upright)))
                    wrong_scores.append(max(best_score(search.detect(turned(upright, r)[0])) for r in (90, 180, 270)))
            for name, t in tallies.items():
                rows.append([variant, f"{clockwise}", name, f"{t.found}/{t.photos}", f"{t.right}",
                             f"{t.worst_px:.2f}", f"{t.calls:.2f}", f"{t.ms:.1f}"])
    lines = []
    for variant, (right, wrong) in scores.items():
        r, w = np.array(right), np.array(wrong)
        lines.append(f"- {variant}: upright orientation's best score min {r.min():.3f}, 1st percentile "
                     f"{np.percentile(r, 1):.3f}, median {np.median(r):.3f}; best of the three turned ones median "
                     f"{np.median(w):.3f}, 99th percentile {np.percentile(w, 99):.3f}, max {w.max():.3f}; turned "
                     f"ones at or above the upright one: {int((w >= r).sum())} of {len(r)}; upright below "
                     f"{confident}: {int((r < confident).sum())}")
    return (f"Photos turned clockwise without EXIF ({len(photos)} photos; upscaling below {upscale_below} and the "
            f"pad fallback on; confident score {confident}):\n\n"
            + table(["photo", "turned", "condition", "found", "right rotation", "worst point (px)",
                     "detector calls/photo", "ms/photo"], rows)
            + "\n\nScores of the four orientations of each upright photo:\n\n" + "\n".join(lines))


def strip_without_faces(photo: Photo) -> np.ndarray | None:
    """The widest full-height or full-width strip of the photo that no detection (from the floor up) reaches."""
    height, width = photo.rgb.shape[:2]
    boxes = np.array([f.box for f in photo.others])
    x1, y1 = max(0, int(boxes[:, 0].min())), max(0, int(boxes[:, 1].min()))
    x2, y2 = min(width, int(np.ceil(boxes[:, 2].max()))), min(height, int(np.ceil(boxes[:, 3].max())))
    strips = [photo.rgb[:, :x1], photo.rgb[:, x2:], photo.rgb[:y1, :], photo.rgb[y2:, :]]
    best = max(strips, key=lambda s: min(s.shape[:2]))
    return np.ascontiguousarray(best) if min(best.shape[:2]) >= MIN_STRIP else None


def without_faces(photos: Sequence[Photo], detector: Detector, threshold: float, upscale_below: int) -> str:
    searches = {
        "plain detector": searcher(detector, 0),
        f"upscale below {upscale_below}": searcher(detector, upscale_below),
        "+ pad fallback": searcher(detector, upscale_below, pad=True),
        "+ rotation search": searcher(detector, upscale_below, pad=True, rotation=True),
    }
    tallies = {name: Tally() for name in searches}
    strips = [s for s in (strip_without_faces(p) for p in photos) if s is not None]
    strips += [resized(s, 0.5, cv2.INTER_AREA)[0] for s in strips]  # and at half size, which is upscaled
    for index, strip in enumerate(tqdm(strips, desc="strips without faces", unit="strip")):
        for name, search in searches.items():
            started = time.perf_counter()
            result = search.find(strip, threshold)
            kept = [f for f in result.faces if f.score >= threshold]
            tallies[name].add(index, kept[0] if kept else None, time.perf_counter() - started,
                              passes=result.passes)
    rows = [[name, f"{t.found}/{t.photos}", f"{t.calls:.2f}", f"{t.ms:.1f}"] for name, t in tallies.items()]
    return (f"Strips of the photos beside their faces ({len(strips) // 2}, each at least {MIN_STRIP} px wide and up "
            f"to 250 px long, and the same at half size):\n\n"
            + table(["configuration", "false positives", "detector calls/photo", "ms/photo"], rows))


def yaw(face: DetectedFace) -> float:
    """How far the head is turned: the nose's horizontal offset from the eyes' midpoint over their distance."""
    points = face.landmarks
    eyes = (points[LEFT_EYE] + points[RIGHT_EYE]) / 2
    return float(abs(points[NOSE][0] - eyes[0]) / max(1e-6, inter_ocular(face)))


def mirror_disagreement(detector: Detector, rgb: np.ndarray, face: DetectedFace, threshold: float) -> float:
    """NME between the face's points and those found on the mirrored photo, mapped back."""
    width = rgb.shape[1]
    mirrored = match(detector.detect(np.ascontiguousarray(rgb[:, ::-1])),
                     np.array([width - face.box[2], face.box[1], width - face.box[0], face.box[3]]), threshold)
    if mirrored is None:
        return float("nan")
    points = mirrored.landmarks[MIRRORED].astype(np.float64)
    points[:, 0] = width - points[:, 0]
    return nme(face.landmarks, points, inter_ocular(face))


def turned_heads(root: Path, detector: Detector, scrfd: Detector, threshold: float, out_dir: Path | None,
                 count: int) -> str:
    people = read_people(root / SPLIT)
    found: list[tuple[str, np.ndarray, DetectedFace]] = []
    missed: list[str] = []
    for person in tqdm(people, desc="turned heads: every identity's first photo", unit="photo"):
        name = image_name(person.name, 1)
        rgb = read_rgb(root, name)
        face = main_face(detector.detect(rgb), threshold, rgb.shape[1], rgb.shape[0])
        if face is None:
            missed.append(name)
        else:
            found.append((name, rgb, face))
    found.sort(key=lambda item: -yaw(item[2]))
    step = max(1, len(found) // 200)
    frontal = found[len(found) // 2:][::step][:100]  # the less turned half, sampled

    def quality(items: Sequence[tuple[str, np.ndarray, DetectedFace]]) -> list[tuple[float, float, float]]:
        out = []
        for _, rgb, face in items:
            other = match(scrfd.detect(rgb), face.box, scrfd.score_threshold)
            versus = float("nan") if other is None else nme(face.landmarks, other.landmarks, inter_ocular(face))
            out.append((mirror_disagreement(detector, rgb, face, threshold), versus, face.score))
        return out

    top = found[:count]
    top_quality = quality(top)
    base = np.array(quality(frontal))
    rows = [[name, f"{yaw(face):.2f}", f"{q[2]:.2f}", f"{q[0]:.2f}", f"{q[1]:.2f}"]
            for (name, _, face), q in zip(top, top_quality, strict=True)]
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, rgb, face in top:
            draw(rgb, [face], out_dir / name.replace("/", "__"))
        for name in missed:
            rgb = read_rgb(root, name)
            draw(rgb, [f for f in detector.detect(rgb)], out_dir / ("missed__" + name.replace("/", "__")))
    yaws = np.array([yaw(face) for _, _, face in found])
    return (f"{len(people)} first photos of {SPLIT}: {len(missed)} without a face at {threshold}. Yaw proxy of the "
            f"found: median {np.median(yaws):.2f}, 99th percentile {np.percentile(yaws, 99):.2f}. The less turned "
            f"half ({len(base)} sampled): score median {np.nanmedian(base[:, 2]):.2f}, mirror disagreement median "
            f"{np.nanmedian(base[:, 0]):.3f}, YuNet vs SCRFD median {np.nanmedian(base[:, 1]):.3f}. The most "
            "turned heads:\n\n"
            + table(["photo", "yaw proxy", "score", "mirror disagreement", "YuNet vs SCRFD"], rows))


def draw(rgb: np.ndarray, faces: Sequence[DetectedFace], path: Path) -> None:
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    colours = [(255, 0, 0), (0, 0, 255), (0, 255, 0), (255, 0, 255), (0, 255, 255)]
    for face in faces:
        x1, y1, x2, y2 = (round(float(v)) for v in face.box)
        cv2.rectangle(bgr, (x1, y1), (x2, y2), (0, 255, 0), 1)
        cv2.putText(bgr, f"{face.score:.2f}", (x1, max(10, y1 - 2)), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 255, 0))
        for (x, y), colour in zip(face.landmarks, colours, strict=True):
            cv2.circle(bgr, (round(float(x)), round(float(y))), 2, colour, -1)
    cv2.imwrite(str(path), bgr)


def settings_for(name: str) -> DetectionSettings:
    """The default detection settings of the detector `name`."""
    return DetectionSettings(detector="scrfd" if name == "scrfd" else "yunet")


def detector_for(name: str, manifest: Manifest, model_dir: Path, max_side: int | None = None) -> Detector:
    detection = settings_for(name)
    if max_side is not None:
        detection = detection.model_copy(update={"det_max_side": max_side})
    return build_detector(detection, manifest, model_dir, score_threshold=min(detection.score_threshold,
                                                                              DETECTOR_FLOOR))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--photos", type=int, default=300, help="LFW photos (one per peopleDevTrain identity)")
    parser.add_argument("--frame-photos", type=int, default=100, help="of those, how many the frame part crops")
    parser.add_argument("--model-dir", type=Path, default=Path("models"))
    parser.add_argument("--detector", choices=["yunet", "scrfd"], default="yunet")
    parser.add_argument("--parts", default="small,frame,rotated,negatives,heads",
                        help="comma-separated: small, frame, rotated, negatives, heads")
    parser.add_argument("--upscale-below", type=int, default=DetectionSettings().det_upscale_below,
                        help="the upscaling threshold the other parts run with (default: the setting's default)")
    parser.add_argument("--profile-dir", type=Path, default=None, help="write the turned heads here, drawn")
    parser.add_argument("--heads", type=int, default=10, help="how many of the most turned heads to list")
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))

    manifest = load_manifest(args.model_dir)
    detector = detector_for(args.detector, manifest, args.model_dir)
    scrfd = detector_for("scrfd", manifest, args.model_dir)
    threshold = settings_for(detector.name).score_threshold
    root = lfw_root()
    photos, missed = load_photos(root, args.photos, detector, scrfd if "small" in parts else None, threshold)
    sections = [f"{machine(f'OpenCV {cv2.__version__}')}; {detector.name}, threshold {threshold}; "
                f"{len(photos)} photos of {SPLIT} with a reference face ({len(missed)} without)."]
    if "small" in parts:
        sections.append(small_photos(photos, detector, threshold, args.upscale_below))
    if "frame" in parts:
        unbounded = detector_for(args.detector, manifest, args.model_dir, max_side=4096)
        sections.append(filling_the_frame(photos[:: max(1, len(photos) // args.frame_photos)][: args.frame_photos],
                                          detector, unbounded, threshold, args.upscale_below))
    if "rotated" in parts:
        sections.append(rotated(photos, detector, threshold, args.upscale_below))
    if "negatives" in parts:
        sections.append(without_faces(photos, detector, threshold, args.upscale_below))
    if "heads" in parts:
        sections.append(turned_heads(root, detector, scrfd, threshold, args.profile_dir, args.heads))
    print("\n\n".join(sections))


if __name__ == "__main__":
    main()

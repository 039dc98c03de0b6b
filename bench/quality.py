"""`python -m bench.quality`: fit the face-quality model (`service/core/quality.py`) on LFW pairsDevTrain and report
the error-versus-discard curves on pairsDevTest and View 2, written to docs/quality.md and docs/quality_edc.png.

Faces. Every photo goes through the service's face path with its BTNet branches (`build_offline(settings,
use_branches=True)`): decode, detect, the configured face filter and landmark stage, the main face by prominence,
routed by its size; its crop is embedded by the embedder of its resolution and its quality features are measured
as the service measures them (`service.core.quality.features`). A photo without a face has neither.

Degraded copies. LFW photos are large, sharp, frontal faces; to teach the model small and blurry faces, each
photo also gets degraded copies, random but seeded per split, photo and copy (`degrade`): with probability 0.6
the whole photo is shrunk (area) so that its face is 12-64 px (log-uniform) and pasted on a grey canvas of at
least 160 px (as tests/images.tiny_face_scene, so the detector sees the margin a real photo gives it), with
probability 0.5 Gaussian blur of 1-5% of the face size (sigma), with probability 0.5 JPEG at quality 5-30;
at least one of them. DevTrain photos get `TRAIN_COPIES` copies (seed `SEEDS["train"]`), DevTest photos one
(seed `SEEDS["test"]`).

Fit (pairsDevTrain only: its 1,100 genuine pairs, each clean and with either photo replaced by a degraded copy):
the similarity of a genuine pair as a sum of one term per face, s(a, b) = c + w . (z(a) + z(b)), least squares,
on the standardised features z (mean and scale over every DevTrain face, clipped at +-Z_CLIP) after capping two of
them: sharpness at the 5th percentile of the clean DevTrain faces' (`SHARP_QUANTILE`: sharper than that counts as
sharp) and log2 size at log2 of the largest shrunk face (`FACE_PX`: the fit has no faces between that and full
size). Pairs of two degraded photos are left out of the fit: two poor faces resemble each other whoever they show
(their impostor pairs match far more often), which a sum of per-face terms cannot express. The quality of a face
is then the normal-approximate chance (sigmoid(1.702 x)) that it scores at or above the calibrated verify
threshold against a typical clean DevTrain face: sigmoid(1.702 (c + w . z + w . mean(z clean) - t) / sigma),
sigma the residual spread. Each coefficient is held to its expected sign (`SIGNS`: better detection, sharper,
larger, more frontal, landmark models agreeing), or 0. Pinned as `QualityModel(cap, mean, scale, weights, bias)`;
the script prints it for pasting into `service/core/quality.py`.

Report (never fitted on): pairsDevTest (identity-disjoint from DevTrain) clean, and clean with its degraded copies
(every pair in its four clean/degraded combinations); View 2 pairs.txt unmodified (it shares identities with
DevTrain). Error-versus-discard: the pairs with the lowest pair quality (the lower of its two faces') are rejected,
0 to 30%, and FNMR / FMR at the verify threshold are measured on the rest, against rejecting at random (the mean of
`RANDOM_DRAWS` seeded draws). Pairs with a photo without a face are left out (the service answers them `no_face`).

Embeddings and features are cached in `.cache/anyface/quality-<set>-<key>.npz`, the key covering the photos, the
face path's settings and models, the embedders, the feature code and the degradations: a re-run with the same face
path only refits and rewrites the report.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import io
import itertools
import math
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from bench.machine import machine
from evaluation.embed import CACHE_DIR, digest, face_path_fingerprint
from evaluation.lfw import Pair, images_dir, lfw_root, pair_images, read_pairs
from service.core import quality as quality_module
from service.core.quality import QUALITY_MODEL, Z_CLIP, QualityFeatures, QualityModel, sigmoid
from service.core.thresholds import Thresholds
from service.core.wiring import OfflineFaces, build_offline
from service.imaging.decode import decode
from service.models.contract import TRUNK_RESOLUTION
from service.settings import Settings

DOCS = Path("docs")
SEEDS = {"train": 1, "test": 2}
TRAIN_COPIES = 2
TEST_COPIES = 1
SHRINK_P, BLUR_P, JPEG_P = 0.6, 0.5, 0.5
FACE_PX = (12.0, 64.0)  # shrunk face size (box side), log-uniform
BLUR_OF_FACE = (0.01, 0.05)  # Gaussian sigma as a share of the face size
JPEG_QUALITY = (5, 30)
CANVAS = 160  # the least side of the grey canvas a shrunk photo is pasted on
PROBIT = 1.702  # sigmoid(1.702 x) is within 0.01 of the standard normal CDF
REJECT = np.round(np.arange(0.0, 0.301, 0.01), 2)  # fractions of pairs rejected
RANDOM_DRAWS = 200
# The direction each feature may act in (0: either): a wrong-signed coefficient is a quirk of the data (e.g. of
# the landmarks of small faces), and a quality that rose with an odd face geometry would reward odd inputs.
SIGNS = {"det_score": 1, "landmark_spread": -1, "sharpness": 1, "log_size": 1, "yaw": -1, "pitch": -1}
SHARP_QUANTILE = 0.05  # sharpness is capped at this quantile of the clean DevTrain faces'
DEFAULT_MIN_QUALITY = 0.2  # refuses only faces that rarely match a good photo of the same person (docs/quality.md)
CLEAN_REJECTION = 0.015  # the alternative shown next to it: the quality that rejects this share of clean faces
COLD_RUN = "14-26 minutes (measured four times)"  # the face path over every photo variant, cache cold
READING_START = "<!-- reading: written by hand, kept when the script rewrites this file -->"
READING_END = "<!-- /reading -->"


# --- degradations -----------------------------------------------------------------------------------------------
def degrade(rgb: np.ndarray, face_size: float, rng: np.random.Generator) -> tuple[bytes, dict[str, float]]:
    """A degraded copy of a photo whose main face is `face_size` px: the encoded bytes and what was done."""
    shrink, blur, jpeg = rng.random() < SHRINK_P, rng.random() < BLUR_P, rng.random() < JPEG_P
    if not (shrink or blur or jpeg):
        shrink = True
    target, sigma, jpeg_q = float(rng.uniform(np.log(FACE_PX[0]), np.log(FACE_PX[1]))), float(
        rng.uniform(*BLUR_OF_FACE)), int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1))
    image, size, done = rgb, face_size, {"face_px": face_size, "sigma": 0.0, "jpeg": 0.0}
    if shrink:
        factor = min(1.0, float(np.exp(target)) / face_size)
        small = cv2.resize(rgb, (max(1, round(rgb.shape[1] * factor)), max(1, round(rgb.shape[0] * factor))),
                           interpolation=cv2.INTER_AREA)
        side = max(CANVAS, max(small.shape[:2]) + 32)
        image = np.full((side, side, 3), 120, dtype=np.uint8)
        y, x = (side - small.shape[0]) // 2, (side - small.shape[1]) // 2
        image[y:y + small.shape[0], x:x + small.shape[1]] = small
        size = face_size * factor
        done["face_px"] = size
    if blur:
        done["sigma"] = max(0.3, sigma * size)
        image = cv2.GaussianBlur(image, (0, 0), sigmaX=done["sigma"], sigmaY=done["sigma"])
    buf = io.BytesIO()
    if jpeg:
        done["jpeg"] = jpeg_q
        Image.fromarray(image).save(buf, format="JPEG", quality=jpeg_q)
    else:
        Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue(), done


def copy_rng(seed: int, name: str, copy: int) -> np.random.Generator:
    """The random state of one degraded copy: the same whatever else runs."""
    return np.random.default_rng([seed, zlib.crc32(name.encode()), copy])


Job = tuple[str, Callable[[], tuple[bytes | None, dict[str, float]]]]


# --- faces ------------------------------------------------------------------------------------------------------
@dataclass
class FaceSet:
    """The main face of each photo variant (a name, `name#d0` for its first degraded copy, ...)."""

    keys: list[str]
    found: np.ndarray  # bool
    features: np.ndarray  # n x k (NaN without a face)
    embeddings: np.ndarray  # n x d (0 without a face)
    resolution: np.ndarray  # int, 0 without a face
    face_px: np.ndarray  # the face size the variant was made with (the clean face's size for clean photos)
    sigma: np.ndarray
    jpeg: np.ndarray

    def index(self) -> dict[str, int]:
        return {k: i for i, k in enumerate(self.keys)}


class Faces:
    """The face path with branches, measuring one photo at a time and embedding in batches per resolution."""

    def __init__(self, settings: Settings) -> None:
        self.offline: OfflineFaces = build_offline(settings, use_branches=True)
        self.settings = self.offline.settings
        backend = self.offline.backend
        self.embedders = {res: entry.sha256 for res, (_, entry) in backend.models.items()}
        self.key = digest({
            "face_path": face_path_fingerprint(self.settings, self.offline.manifest),
            "embedders": {str(r): s for r, s in sorted(self.embedders.items())},
            "branch_rule": self.settings.branch_rule, "flip_test": self.settings.flip_test,
            "features": hashlib.sha256("".join(inspect.getsource(f) for f in (
                quality_module.features, quality_module.reference_crop, quality_module.sharpness,
                quality_module.pose, QualityFeatures)).encode()).hexdigest()[:16],
            "degrade": hashlib.sha256(inspect.getsource(degrade).encode()).hexdigest()[:16],
            "constants": [SEEDS, TRAIN_COPIES, TEST_COPIES, SHRINK_P, BLUR_P, JPEG_P, FACE_PX, BLUR_OF_FACE,
                          JPEG_QUALITY, CANVAS, quality_module.REFERENCE_SIZE, quality_module.AREA_FACTOR],
        })

    def measure(self, data: bytes) -> tuple[np.ndarray, int, np.ndarray] | None:
        """(features, resolution, crop) of the main face of a photo, or None without a face."""
        path = self.offline.path
        result, crops = path.analyze(data, "image", self.offline.face_filter)
        if not result.faces:
            return None
        face = result.faces[0]
        decoded = decode(data, path.limits, "image")
        if decoded.reduced:
            raise RuntimeError("a photo decoded reduced: its face is not in the decoded image's pixels")
        x = quality_module.features(decoded.pixels, face.face, face.landmark_spread)
        if abs(QUALITY_MODEL.quality(x) - face.quality) > 1e-6:
            raise RuntimeError("the quality features differ from the face path's")
        return x.vector(), face.resolution, crops[0]

    def run(self, label: str, jobs: Sequence[Job]) -> FaceSet:
        """Measure and embed the photo of each (key, make the photo's bytes and what was done to it) job."""
        n, k = len(jobs), len(QualityFeatures.names())
        out = FaceSet([key for key, _ in jobs], np.zeros(n, bool), np.full((n, k), np.nan), np.zeros((n, 0)),
                      np.zeros(n, np.int64), np.zeros(n), np.zeros(n), np.zeros(n))
        embeddings: dict[int, np.ndarray] = {}
        pending: dict[int, tuple[list[int], list[np.ndarray]]] = {}

        def flush(res: int) -> None:
            idx, crops = pending.pop(res, ([], []))
            if idx:
                for i, e in zip(idx, self.offline.backend.embed(res, np.stack(crops)), strict=True):
                    embeddings[i] = e

        for i, (_, make) in enumerate(tqdm(jobs, desc=label, unit="photo")):
            data, done = make()
            out.face_px[i], out.sigma[i], out.jpeg[i] = (done.get(f, 0.0) for f in ("face_px", "sigma", "jpeg"))
            measured = None if data is None else self.measure(data)
            if measured is None:
                continue
            x, res, crop = measured
            out.found[i], out.features[i], out.resolution[i] = True, x, res
            idx, crops = pending.setdefault(res, ([], []))
            idx.append(i)
            crops.append(crop)
            if len(idx) == 64:
                flush(res)
        for res in list(pending):
            flush(res)
        dim = len(next(iter(embeddings.values()))) if embeddings else 0
        out.embeddings = np.zeros((n, dim), np.float32)
        for i, e in embeddings.items():
            out.embeddings[i] = e
        return out


def clean_photo(path: Path) -> tuple[bytes | None, dict[str, float]]:
    return path.read_bytes(), {}


def cached(path: Path, make: Callable[[], FaceSet]) -> FaceSet:
    if path.exists():
        with np.load(path) as data:
            return FaceSet(data["keys"].tolist(), data["found"], data["features"], data["embeddings"],
                           data["resolution"], data["face_px"], data["sigma"], data["jpeg"])
    faces: FaceSet = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as fh:
        np.savez(fh, keys=np.array(faces.keys, dtype=str), found=faces.found, features=faces.features,
                 embeddings=faces.embeddings, resolution=faces.resolution, face_px=faces.face_px, sigma=faces.sigma,
                 jpeg=faces.jpeg)
    tmp.replace(path)
    return faces


def photo_set(faces: Faces, images: Path, names: list[str], label: str, cache: Path) -> FaceSet:
    """The clean photos."""
    return cached(cache / f"quality-{label}-{digest([faces.key, names])}.npz",
                  lambda: faces.run(label, [(n, partial(clean_photo, images / n)) for n in names]))


def degraded_set(faces: Faces, images: Path, clean: FaceSet, names: list[str], copies: int, seed: int, label: str,
                 cache: Path) -> FaceSet:
    """`copies` degraded copies of each photo whose clean version has a face (`name#d<copy>`)."""
    index = clean.index()

    size_of = QualityFeatures.names().index("log_size")

    def make(name: str, copy: int) -> tuple[bytes | None, dict[str, float]]:
        i = index[name]
        if not clean.found[i]:
            return None, {}
        rgb = decode((images / name).read_bytes(), faces.offline.path.limits, name).pixels
        return degrade(rgb, float(2 ** clean.features[i][size_of]), copy_rng(seed, name, copy))

    jobs: list[Job] = [(f"{name}#d{copy}", partial(make, name, copy)) for name in names for copy in range(copies)]
    return cached(cache / f"quality-{label}-{digest([faces.key, names])}.npz", lambda: faces.run(label, jobs))


def merged(*sets: FaceSet) -> FaceSet:
    return FaceSet([k for s in sets for k in s.keys], *(np.concatenate([getattr(s, f) for s in sets]) for f in (
        "found", "features", "embeddings", "resolution", "face_px", "sigma", "jpeg")))


# --- the fit ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Fit:
    model: QualityModel
    coef: np.ndarray  # per standardised feature, in similarity per face
    intercept: float
    sigma: float
    r2: float
    samples: int
    clean_utility: float


def variant_pairs(pairs: Sequence[Pair], faces: FaceSet, copies: int, combos: str = "all"
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(index a, index b, same, kind) of every pair in its clean/degraded combinations whose two faces were found;
    kind: 0 clean-clean, 1 one photo degraded, 2 both degraded. `combos="clean"` keeps clean-clean only."""
    index = faces.index()
    variants = [""] + [f"#d{c}" for c in range(copies)] if combos == "all" else [""]
    rows = []
    for p in pairs:
        for va in variants:
            for vb in variants:
                ia, ib = index.get(p.a + va), index.get(p.b + vb)
                if ia is not None and ib is not None and faces.found[ia] and faces.found[ib]:
                    rows.append((ia, ib, p.same, (va != "") + (vb != "")))
    a, b, same, kind = (np.array(c) for c in zip(*rows, strict=True))
    return a.astype(np.int64), b.astype(np.int64), same.astype(bool), kind.astype(np.int64)


def similarities(faces: FaceSet, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", faces.embeddings[a].astype(np.float64), faces.embeddings[b].astype(np.float64))


def signed_least_squares(design: np.ndarray, target: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """Least squares with each coefficient of non-zero `signs[j]` of that sign or 0: the columns whose coefficient
    comes out of the wrong sign are dropped, the worst first, and the rest refitted."""
    free = np.ones(design.shape[1], dtype=bool)
    while True:
        solution = np.zeros(design.shape[1])
        solution[free], *_ = np.linalg.lstsq(design[:, free], target, rcond=None)
        wrong = solution * signs
        if wrong.min() >= 0:
            return solution
        free[int(np.argmin(wrong))] = False


def fit(faces: FaceSet, pairs: Sequence[Pair], clean: np.ndarray, threshold: float) -> Fit:
    """The per-face model of genuine similarity on DevTrain, and the quality model it makes (module docstring)."""
    names = QualityFeatures.names()
    cap = np.full(len(names), math.inf)
    cap[names.index("sharpness")] = float(np.quantile(faces.features[clean & faces.found, names.index("sharpness")],
                                                      SHARP_QUANTILE))
    cap[names.index("log_size")] = math.log2(FACE_PX[1])
    x = np.minimum(faces.features[faces.found], cap)
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    constant = scale < 1e-9  # e.g. the landmark spread with one landmark model: no information, weight 0
    scale = np.where(constant, 1.0, scale)
    z = np.clip((np.minimum(faces.features, cap) - mean) / scale, -Z_CLIP, Z_CLIP)
    z[:, constant] = 0.0
    a, b, same, kind = variant_pairs(pairs, faces, TRAIN_COPIES)
    a, b = a[same & (kind < 2)], b[same & (kind < 2)]
    s = similarities(faces, a, b)
    design = np.column_stack([np.ones(len(a)), z[a] + z[b]])
    solution = signed_least_squares(design, s, np.array([0.0, *(SIGNS[n] for n in names)]))
    intercept, coef = float(solution[0]), solution[1:]
    residual = s - design @ solution
    sigma = float(residual.std())
    clean_utility = float((z[clean & faces.found] @ coef).mean())
    k = PROBIT / sigma
    model = QualityModel(cap=tuple(round(float(v), 6) for v in cap), mean=tuple(round(float(v), 6) for v in mean),
                         scale=tuple(round(float(v), 6) for v in scale),
                         weights=tuple(round(float(v), 6) for v in k * coef + 0.0),
                         bias=round(k * (intercept + clean_utility - threshold), 6))
    return Fit(model, coef, intercept, sigma, float(1 - residual.var() / s.var()), len(s), clean_utility)


def qualities(model: QualityModel, faces: FaceSet) -> np.ndarray:
    q = np.full(len(faces.keys), np.nan)
    q[faces.found] = sigmoid(model.logit(faces.features[faces.found]))
    return q


# --- error versus discard ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Edc:
    label: str
    pairs: int
    genuine: int
    left_out: int  # pairs with a photo without a face
    fnmr: np.ndarray  # at each REJECT fraction, rejecting by quality
    fmr: np.ndarray
    error: np.ndarray
    random_fnmr: np.ndarray
    random_fmr: np.ndarray
    random_error: np.ndarray


def rates(scores: np.ndarray, same: np.ndarray, threshold: float) -> tuple[float, float, float]:
    accept = scores >= threshold
    fnmr = float(np.mean(~accept[same])) if same.any() else float("nan")
    fmr = float(np.mean(accept[~same])) if (~same).any() else float("nan")
    return fnmr, fmr, float(np.mean(accept != same))


def edc(label: str, scores: np.ndarray, same: np.ndarray, pair_quality: np.ndarray, threshold: float,
        left_out: int, seed: int) -> Edc:
    n = len(scores)
    order = np.argsort(pair_quality, kind="stable")  # lowest quality first
    rng = np.random.default_rng(seed)
    draws = [rng.permutation(n) for _ in range(RANDOM_DRAWS)]
    by_quality, by_chance = [], []
    for f in REJECT:
        drop = round(f * n)
        keep = order[drop:]
        by_quality.append(rates(scores[keep], same[keep], threshold))
        by_chance.append(np.mean([rates(scores[d[drop:]], same[d[drop:]], threshold) for d in draws], axis=0))
    q, r = np.array(by_quality), np.array(by_chance)
    return Edc(label, n, int(same.sum()), left_out, q[:, 0], q[:, 1], q[:, 2], r[:, 0], r[:, 1], r[:, 2])


def edc_of(label: str, faces: FaceSet, q: np.ndarray, pairs: Sequence[Pair], copies: int, combos: str,
           threshold: float, seed: int) -> Edc:
    a, b, same, _ = variant_pairs(pairs, faces, copies, combos)
    total = len(pairs) * ((copies + 1) ** 2 if combos == "all" else 1)
    return edc(label, similarities(faces, a, b), same, np.minimum(q[a], q[b]), threshold, total - len(a), seed)


def plot_edc(curves: Sequence[Edc], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(5.2 * len(curves), 4.3), squeeze=False)
    for ax, c in zip(axes[0], curves, strict=True):
        x = REJECT * 100
        ax.plot(x, c.fnmr * 100, "-", color="C0", label="FNMR, lowest quality rejected")
        ax.plot(x, c.random_fnmr * 100, ":", color="C0", label="FNMR, random rejection")
        ax.plot(x, c.fmr * 100, "-", color="C1", label="FMR, lowest quality rejected")
        ax.plot(x, c.random_fmr * 100, ":", color="C1", label="FMR, random rejection")
        ax.set_xlabel("pairs rejected for low quality (%)")
        ax.set_ylabel("error at the verify threshold (%)")
        ax.set_title(f"{c.label}\n({c.pairs:,} pairs)", fontsize=9)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


# --- the report -------------------------------------------------------------------------------------------------
def model_source(model: QualityModel) -> str:
    def row(values: tuple[float, ...]) -> str:
        return "(" + ", ".join("math.inf" if v == math.inf else f"{v:.6g}" for v in values) + ")"

    return (f"QUALITY_MODEL = QualityModel(\n    cap={row(model.cap)},\n    mean={row(model.mean)},\n"
            f"    scale={row(model.scale)},\n    weights={row(model.weights)},\n    bias={model.bias:.6g},\n)")


def kept_reading(out: Path) -> str:
    if out.exists():
        text = out.read_text()
        start, end = text.find(READING_START), text.find(READING_END)
        if start >= 0 and end > start:
            return text[start + len(READING_START):end].strip()
    return "(to be written after reading the figures)"


def pct(v: float) -> str:
    return f"{v * 100:.2f}%"


def at(c: Edc, fraction: float) -> int:
    return int(np.argmin(np.abs(REJECT - fraction)))


def degradation_rows(faces: FaceSet, q: np.ndarray, pairs: Sequence[Pair], threshold: float, minimum: float
                     ) -> str:
    """Per kind of degraded copy (held-out DevTest, one copy a photo): faces found, the share rejected at
    `minimum`, and how often its genuine pairs with the clean other photo match, overall and among those kept."""
    clean = np.array(["#" not in k for k in faces.keys])
    a, b, same, kind = variant_pairs(pairs, faces, TEST_COPIES)
    one = same & (kind == 1)
    side = np.where(clean[a], b, a)[one]
    match = similarities(faces, a[one], b[one]) >= threshold
    px, blurred, jpeg = faces.face_px, faces.sigma > 0, faces.jpeg > 0
    shrunk = ~clean & (px < FACE_PX[1] + 0.5)
    groups = [(f"shrunk to {lo:g}-{hi:g} px", shrunk & (px >= lo) & (px < hi))
              for lo, hi in ((12, 16), (16, 24), (24, 32), (32, 48), (48, FACE_PX[1] + 0.5))]
    groups += [("full size, blurred (and maybe JPEG)", ~clean & ~shrunk & blurred),
               ("full size, JPEG only", ~clean & ~shrunk & ~blurred & jpeg),
               ("clean photos", clean)]
    rows = []
    for label, members in groups:
        found = members & faces.found
        in_pairs = members[side]
        kept = in_pairs & (q[side] >= minimum)
        rows.append(f"| {label} | {int(found.sum()):,} of {int(members.sum()):,} | "
                    f"{pct(float(np.mean(q[found] < minimum))) if found.any() else '-'} | "
                    f"{pct(float(np.mean(match[in_pairs]))) if in_pairs.any() else '-'} | "
                    f"{pct(float(np.mean(match[kept]))) if kept.any() else '-'} ({int(kept.sum()):,}) |")
    return "\n".join(rows)


def calibration_rows(faces: FaceSet, q: np.ndarray, pairs: Sequence[Pair], copies: int, threshold: float) -> str:
    """Genuine pairs of a face (clean or degraded) with a clean photo, by the face's quality: how often they match
    at the verify threshold (what the quality estimates)."""
    clean = np.array(["#" not in k for k in faces.keys])
    a, b, same, kind = variant_pairs(pairs, faces, copies)
    keep = same & (kind < 2)
    face = np.where(clean[a], b, a)[keep]  # the degraded one, or the second photo of a clean pair
    match = similarities(faces, a[keep], b[keep]) >= threshold
    edges = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0]
    rows = []
    for lo, hi in itertools.pairwise(edges):
        members = (q[face] >= lo) & ((q[face] < hi) if hi < 1.0 else (q[face] <= hi))
        if members.any():
            rows.append(f"| {lo:.2f}-{hi:.2f} | {int(members.sum()):,} | {float(np.mean(q[face][members])):.2f} | "
                        f"{float(np.mean(match[members])):.2f} |")
    return "\n".join(rows)


def verdict(c: Edc) -> str:
    """Whether rejecting by quality beats rejecting at random at 10% rejected, on the pair error."""
    i = at(c, 0.10)
    change = c.error[i] / c.random_error[i] - 1 if c.random_error[i] > 0 else 0.0
    word = "helps" if change <= -0.1 else "hurts" if change >= 0.1 else "hardly changes it"
    return f"{word} ({change * 100:+.0f}% errors against random rejection)"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.quality")
    parser.add_argument("--out", type=Path, default=DOCS / "quality.md")
    parser.add_argument("--plot", type=Path, default=DOCS / "quality_edc.png")
    parser.add_argument("--cache-dir", type=Path, default=CACHE_DIR)
    parser.add_argument("--every", type=int, default=1, help="use every n-th pair of each file (a quick trial run)")
    args = parser.parse_args()
    started = time.monotonic()
    root = lfw_root()
    images = images_dir(root)
    settings = Settings()
    faces = Faces(settings)
    trunk = faces.offline.backend.models[TRUNK_RESOLUTION][1]
    threshold = Thresholds.of(trunk, settings.verify_threshold).verify

    train_pairs = read_pairs(root / "pairsDevTrain.txt")[::args.every]
    test_pairs = read_pairs(root / "pairsDevTest.txt")[::args.every]
    view2_pairs = read_pairs(root / "pairs.txt")[::args.every]
    train_names, test_names = pair_images(train_pairs), pair_images(test_pairs)
    train_clean = photo_set(faces, images, train_names, "DevTrain", args.cache_dir)
    train = merged(train_clean, degraded_set(faces, images, train_clean, train_names, TRAIN_COPIES, SEEDS["train"],
                                             "DevTrain-degraded", args.cache_dir))
    test_clean = photo_set(faces, images, test_names, "DevTest", args.cache_dir)
    test = merged(test_clean, degraded_set(faces, images, test_clean, test_names, TEST_COPIES, SEEDS["test"],
                                           "DevTest-degraded", args.cache_dir))
    view2 = photo_set(faces, images, pair_images(view2_pairs), "View2", args.cache_dir)

    clean_mask = np.array(["#" not in k for k in train.keys])
    result = fit(train, train_pairs, clean_mask, threshold)
    model = result.model
    q_train, q_test, q_view2 = qualities(model, train), qualities(model, test), qualities(model, view2)
    pinned_differs = float(np.nanmax(np.abs(qualities(QUALITY_MODEL, train) - q_train)))

    # the default min_quality, from DevTrain only
    clean_q = q_train[clean_mask & train.found]
    degraded_mask = ~clean_mask & train.found
    default = DEFAULT_MIN_QUALITY
    strict = float(np.floor(np.quantile(clean_q, CLEAN_REJECTION) * 100) / 100)
    a, b, same, kind = variant_pairs(train_pairs, train, TRAIN_COPIES)
    s_train = similarities(train, a, b)
    one = same & (kind == 1)  # genuine, one degraded photo against a clean one
    both_fmr = float(np.mean(s_train[~same & (kind == 2)] >= threshold))
    clean_fmr = float(np.mean(s_train[~same & (kind == 0)] >= threshold))
    degraded_side = np.where(clean_mask[a], b, a)[one]
    fails = s_train[one] < threshold
    candidates = []
    for m in (0.1, 0.2, 0.3, 0.4, default, 0.6, 0.7, 0.8, strict):
        r = q_train[degraded_side] < m
        candidates.append((m, float(np.mean(clean_q < m)), float(np.mean(q_train[degraded_mask] < m)),
                           float(np.mean(r[fails])), float(np.mean(r[~fails]))))

    held_out = degradation_rows(test, q_test, test_pairs, threshold, default)
    calibration = calibration_rows(test, q_test, test_pairs, TEST_COPIES, threshold)

    curves = [
        edc_of("pairsDevTest, clean and degraded (4 combinations a pair)", test, q_test, test_pairs, TEST_COPIES,
               "all", threshold, 11),
        edc_of("pairsDevTest, clean", test, q_test, test_pairs, TEST_COPIES, "clean", threshold, 12),
        edc_of("View 2 pairs.txt, clean (shares identities with DevTrain)", view2, q_view2, view2_pairs, 0, "clean",
               threshold, 13),
    ]
    plot_edc(curves, args.plot)
    elapsed = time.monotonic() - started

    names = QualityFeatures.names()
    coef_rows = "\n".join(
        f"| `{n}` | {'-' if cap == math.inf else f'{cap:.4g}'} | {m:.4g} | {sd:.4g} | {c:+.4f} | {w:+.4f} |"
        for n, cap, m, sd, c, w in zip(names, model.cap, model.mean, model.scale, result.coef, model.weights,
                                       strict=True))
    found_train = int(train_clean.found.sum())
    deg_found = int(train.found[~clean_mask].sum())
    edc_rows = "\n".join(
        f"| {c.label} | {c.pairs:,} ({c.genuine:,} genuine; {c.left_out:,} left out: no face) | "
        + " | ".join(f"{pct(c.fnmr[at(c, f)])} / {pct(c.fmr[at(c, f)])} ({pct(c.random_fnmr[at(c, f)])} / "
                     f"{pct(c.random_fmr[at(c, f)])})" for f in (0.0, 0.05, 0.10, 0.20, 0.30)) + " |"
        for c in curves)
    error_rows = "\n".join(
        f"| {c.label} | " + " | ".join(f"{pct(c.error[at(c, f)])} ({pct(c.random_error[at(c, f)])})"
                                       for f in (0.0, 0.05, 0.10, 0.20, 0.30)) + f" | {verdict(c)} |"
        for c in curves)
    notes = {default: " (default)", strict: f" ({CLEAN_REJECTION * 100:g}% of clean rejected)"}
    candidate_rows = "\n".join(f"| {m:.2f}{notes.get(m, '')} | {pct(c)} | {pct(d)} | {pct(f)} | {pct(p)} |"
                               for m, c, d, f, p in sorted(set(candidates)))
    at_default = next(c for c in candidates if c[0] == default)
    at_strict = next(c for c in candidates if c[0] == strict)
    by_res = " ".join(f"{int(r)} px: {int(np.sum(train.resolution[degraded_mask] == r)):,};"
                      for r in sorted(set(train.resolution[degraded_mask].tolist())))
    pinned_note = "" if pinned_differs < 1e-3 else (
        f"\n**The pinned model differs from this fit** (by up to {pinned_differs:.3f} in quality on DevTrain): paste "
        "the block above into `service/core/quality.py`. The figures below are for this fit.\n")
    configured = Settings.model_fields["min_quality"].default
    if configured != default:
        pinned_note += (f"\n**The service's default `min_quality` ({configured}, `service/settings.py`) is not "
                        f"{default:.2f}.**\n")
    text = f"""# Face quality

Every face the service reports carries `quality`, in [0, 1]: about the chance that the face, compared with a
typical clean photo of the same person, scores at or above the calibrated verify threshold ({threshold:.4f}).
`min_quality` (setting `ANYFACE_MIN_QUALITY`, default **{default:.2f}**; the per-request form field `min_quality`
of enrolment, `/v1/identify` and `/v1/verify` overrides it for that request) refuses faces below it: enrolment
and verify answer 422 `low_quality`, identify of the main face too; identify with `all_faces` searches the faces
at or above it and reports the others with their quality, `skipped: "low_quality"` and no candidates;
`/v1/detect` never refuses and reports every face's quality. `min_quality=0` accepts every face.

Written by `python -m bench.quality` on {machine()}: {elapsed / 60:.1f} minutes this run. With a cold cache (any
change to the face path: detector, landmarks, filter, embedders) it runs the face path over
{len(train.keys) + len(test.keys) + len(view2.keys):,} photo variants: {COLD_RUN} on 2 cores shared with other work;
with the same face path it reads its cache and refits in seconds. Detector `{settings.detection.detector}`,
landmarks `{settings.detection.landmarks}`, flip test {settings.flip_test}, branch rule `{settings.branch_rule}`,
embedders by resolution {faces.offline.path.model_names}, verify threshold {threshold:.4f}.

## What the score is made of

`service/core/quality.py` measures each face from what the face path already has (about a millisecond a face):

| feature | cap | mean | scale | genuine similarity per SD, per face (fit) | weight in the logit |
|---|---|---|---|---|---|
{coef_rows}

- `det_score`: the detector's score; `landmark_spread`: the disagreement of the landmark models over the
  inter-ocular distance (always 0 with one landmark model, as now: its weight is then 0; re-run this script after
  changing `ANYFACE_LANDMARKS`);
- `sharpness`: log(1 + variance of the Laplacian) of the grey face aligned at {quality_module.REFERENCE_SIZE} x
  {quality_module.REFERENCE_SIZE} px straight from the photo, whatever branch embeds it;
- `log_size`: log2 of the box's larger side; `yaw`, `pitch`: the nose's offset from the eye-to-mouth mid-line and
  along it (from the template's place), over the inter-ocular distance.

quality = sigmoid(bias + sum of weight x clip((min(feature, cap) - mean) / scale, -{Z_CLIP:g}, {Z_CLIP:g})),
bias {model.bias:.4f}. The sharpness cap is the {SHARP_QUANTILE * 100:g}th percentile of the clean DevTrain faces'
sharpness (a face sharper than that counts as sharp: among clean photos sharpness says nothing about matching), the
size cap is {FACE_PX[1]:g} px (the largest shrunk face of the fit: it holds no faces between that and full size).

## Where the coefficients come from

Fitted on LFW `pairsDevTrain.txt` only (View 1 training identities): its {len(train_names):,} photos (faces found
in {found_train:,}) and {TRAIN_COPIES} degraded copies of each (faces found in {deg_found:,} of
{TRAIN_COPIES * found_train:,}; by embedder resolution: {by_res}). A degraded copy is the whole photo shrunk so its
face is {FACE_PX[0]:g}-{FACE_PX[1]:g} px (probability {SHRINK_P}) on a grey canvas of at least {CANVAS} px, Gaussian
blur of {BLUR_OF_FACE[0] * 100:g}-{BLUR_OF_FACE[1] * 100:g}% of the face size (probability {BLUR_P}), JPEG at
quality {JPEG_QUALITY[0]}-{JPEG_QUALITY[1]} (probability {JPEG_P}), at least one of them, seeded per photo and copy.
The target is the similarity of the 1,100 genuine pairs, clean and with one of the two photos replaced by a
degraded copy ({result.samples:,} pairs with both faces found), as a sum of one term per face:
s = {result.intercept:.4f} + w . (z(a) + z(b)),
least squares with each coefficient held to its expected sign or 0 (better detection, sharper, larger, more frontal,
landmark models agreeing: a quirk of the data must not make odd faces score higher), R^2 {result.r2:.3f}, residual
SD {result.sigma:.4f}. The quality is the normal approximation
(sigmoid(1.702 x)) of the chance that s >= {threshold:.4f} against a face of the mean clean utility:
weight = 1.702 w / SD, bias = 1.702 (intercept + {result.clean_utility:.4f} - threshold) / SD. Pairs of two
degraded photos are left out of the fit: two poor faces resemble each other whoever they show (on DevTrain
{pct(both_fmr)} of such impostor pairs match at the verify threshold, against {pct(clean_fmr)} of clean ones), which
a sum of per-face terms cannot express; the pair quality, the lower of the two, still rejects them (below).

To paste into `service/core/quality.py`:

```python
{model_source(model)}
```
{pinned_note}
## The default `min_quality`: {default:.2f}

A face below {default:.2f} matches a good photo of the same person at most about one time in five (the quality's
meaning; its calibration below holds on held-out pairs). The default refuses only such nearly hopeless faces, not
every face that is more likely to fail than to match (0.50): that would refuse most faces of 16-32 px, which the
BTNet branches exist to serve (identification ranks them well even where 1:1 verification at the strict verify
threshold fails; docs/tiny_faces.md). A deployment that only verifies good photos can raise it. On DevTrain it
rejects {pct(at_default[1])}
of the clean faces, {pct(at_default[2])} of the degraded ones, {pct(at_default[3])} of the degraded faces whose
genuine pair with a clean photo fails at the verify threshold and {pct(at_default[4])} of those whose pair matches.
The operating point of rejecting {CLEAN_REJECTION * 100:g}% of the clean DevTrain faces would be {strict:.2f}: it
rejects {pct(at_strict[3])} of the failing degraded faces but also {pct(at_strict[4])} of the matching ones, and
faces whose quality lies between the two still match a clean photo most of the time (calibration below), so it is
not the default. For a genuine pair of a degraded photo and a clean one, "fails" means it scores below the verify
threshold; of those, the share whose degraded face is rejected, and the share of the matching ones rejected with
them:

| min_quality | clean DevTrain faces rejected | degraded DevTrain faces rejected | failing degraded-vs-clean \
genuine pairs rejected | matching ones rejected |
|---|---|---|---|---|
{candidate_rows}

Change it per deployment with `ANYFACE_MIN_QUALITY` (0 turns the refusal off) or per request with the form field
`min_quality`.

On the held-out pairsDevTest copies (one degraded copy a photo, seeded differently), by kind of copy: how many
faces are rejected at the default, and how often a genuine pair of such a face with the clean other photo matches
at the verify threshold, over all of them and over those the default keeps (how many in brackets):

| copy | faces found | rejected at {default:.2f} | genuine pairs matching | matching among kept |
|---|---|---|---|---|
{held_out}

Calibration on held-out pairsDevTest (genuine pairs of a clean or degraded face with a clean photo of the same
person, by the face's quality): the share that matches at the verify threshold, which the quality estimates:

| quality | pairs | mean quality | matching |
|---|---|---|---|
{calibration}

## Error against rejected fraction

![error versus discard](quality_edc.png)

Pairs are rejected lowest pair quality first (the lower quality of its two faces); FNMR / FMR at the verify
threshold {threshold:.4f} on the pairs kept, and in brackets the same when as many pairs are rejected at random
(mean of {RANDOM_DRAWS} draws). Never fitted on: pairsDevTest's identities are disjoint from DevTrain's; its
degraded copies are seeded differently. View 2 `pairs.txt` is unmodified and shares identities with DevTrain.

| pairs | count | 0% rejected | 5% | 10% | 20% | 30% |
|---|---|---|---|---|---|---|
{edc_rows}

Pair error (FN + FP over the pairs kept; random rejection in brackets):

| pairs | 0% | 5% | 10% | 20% | 30% | at 10% rejected, quality |
|---|---|---|---|---|---|---|
{error_rows}

{READING_START}
{kept_reading(args.out)}
{READING_END}

## Re-running

`python -m bench.quality` (with `ANYFACE_DATA_DIR` and the models; it honours the face path's settings, e.g.
`ANYFACE_LANDMARKS`). It rewrites this file and `docs/quality_edc.png` and prints the model to paste; a changed
face path (detector, landmark models, decode or filter settings, embedders, the feature code) invalidates its cache.
"""
    args.out.write_text(text)
    print(text)
    print(model_source(model))
    print(f"default min_quality: {default:.2f}")


if __name__ == "__main__":
    main()

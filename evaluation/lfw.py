"""LFW on disk: where it is, how its images are named, and its protocol files.

The one way to locate LFW is `lfw_root()`: `$ANYFACE_DATA_DIR/lfw`, with an error naming the variable when it is
unset or holds no `lfw/images_deepfunneled`. Image names are relative to `images_deepfunneled`
(`Name/Name_0001.jpg`). Pairs files: `pairs.txt` (View 2: a `folds per_fold` header, then per fold `per_fold`
matched pairs followed by `per_fold` mismatched ones) and `pairsDevTrain.txt` / `pairsDevTest.txt` (View 1: a
`per_fold` header and one fold). People files: `peopleDevTrain.txt` / `peopleDevTest.txt` (a count, then
`name n_images`) and `people.txt` (a number of folds, then per fold a count and its people).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATA_DIR_ENV = "ANYFACE_DATA_DIR"
IMAGES = "images_deepfunneled"


class LfwNotFound(FileNotFoundError):
    """LFW is not where `ANYFACE_DATA_DIR` says (or the variable is unset)."""


def lfw_root(data_dir: str | Path | None = None) -> Path:
    """`<data_dir>/lfw`, `data_dir` defaulting to `$ANYFACE_DATA_DIR`; `LfwNotFound` naming the variable when it
    is unset or the folder holds no `lfw/images_deepfunneled`."""
    base = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV)
    if not base:
        raise LfwNotFound(f"{DATA_DIR_ENV} is not set: point it at the directory that holds lfw/{IMAGES}")
    root = Path(base) / "lfw"
    if not (root / IMAGES).is_dir():
        raise LfwNotFound(f"no {root / IMAGES}: {DATA_DIR_ENV} must point at the directory that holds lfw/{IMAGES}")
    return root


def missing_lfw() -> str | None:
    """Why LFW cannot be used (for tests that skip), or None when it is there."""
    try:
        lfw_root()
    except LfwNotFound as exc:
        return str(exc)
    return None


def images_dir(root: Path) -> Path:
    return root / IMAGES


def image_name(person: str, number: int) -> str:
    """`Name/Name_0001.jpg`, relative to `images_deepfunneled`."""
    return f"{person}/{person}_{number:04d}.jpg"


def all_images(root: Path) -> list[str]:
    """Every image of the data set, sorted."""
    folder = images_dir(root)
    return sorted(str(p.relative_to(folder)) for p in folder.glob("*/*.jpg"))


@dataclass(frozen=True)
class Pair:
    a: str  # image name
    b: str
    same: bool
    fold: int


def _rows(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


def read_pairs(path: Path) -> list[Pair]:
    """The pairs of `pairs.txt` (10 folds) or `pairsDev*.txt` (one fold), in file order, with their fold.

    A row `name i j` is a matched pair, `name1 i name2 j` a mismatched one; each fold holds `2 * per_fold` rows."""
    rows = _rows(path)
    header = [int(v) for v in rows[0]]
    n_folds, per_fold = (header[0], header[1]) if len(header) == 2 else (1, header[0])
    body = rows[1:]
    if len(body) != 2 * n_folds * per_fold:
        raise ValueError(f"{path}: {len(body)} pairs, the header announces {n_folds} x 2 x {per_fold}")
    pairs = []
    for index, parts in enumerate(body):
        fold = index // (2 * per_fold)
        if len(parts) == 3:
            pairs.append(Pair(image_name(parts[0], int(parts[1])), image_name(parts[0], int(parts[2])), True, fold))
        elif len(parts) == 4:
            pairs.append(Pair(image_name(parts[0], int(parts[1])), image_name(parts[2], int(parts[3])), False, fold))
        else:
            raise ValueError(f"{path}: pair {index + 1} has {len(parts)} fields: {' '.join(parts)}")
    return pairs


def pair_labels(pairs: list[Pair]) -> np.ndarray:
    """True for matched pairs."""
    return np.array([p.same for p in pairs], dtype=bool)


def pair_folds(pairs: list[Pair]) -> np.ndarray:
    return np.array([p.fold for p in pairs], dtype=np.int64)


def pair_images(pairs: Iterable[Pair]) -> list[str]:
    """Every image a list of pairs uses, sorted, each once."""
    return sorted({n for p in pairs for n in (p.a, p.b)})


@dataclass(frozen=True)
class Person:
    name: str
    images: int
    fold: int = 0


def read_people(path: Path) -> list[Person]:
    """The people of `peopleDevTrain.txt` / `peopleDevTest.txt` (one fold) or `people.txt` (10 folds)."""
    rows = _rows(path)
    people: list[Person] = []
    if len(rows) > 1 and len(rows[1]) == 1:  # people.txt: folds, each a count line then its people
        n_folds, fold, expected = int(rows[0][0]), -1, 0
        for parts in rows[1:]:
            if len(parts) == 1:
                fold, expected = fold + 1, expected + int(parts[0])
            else:
                people.append(Person(parts[0], int(parts[1]), fold))
        if fold + 1 != n_folds:
            raise ValueError(f"{path}: {fold + 1} folds, the header announces {n_folds}")
    else:
        expected = int(rows[0][0])
        people = [Person(parts[0], int(parts[1])) for parts in rows[1:]]
    if len(people) != expected:
        raise ValueError(f"{path}: {len(people)} people, the file announces {expected}")
    return people


def people_images(people: Iterable[Person]) -> list[tuple[str, str]]:
    """(person, image name) for every image of every person, in list order."""
    return [(p.name, image_name(p.name, i)) for p in people for i in range(1, p.images + 1)]

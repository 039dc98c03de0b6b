"""`evaluation.lfw`: locating LFW and parsing its pairs and people files (small files in tmp_path, and the real
ones when `ANYFACE_DATA_DIR` is set)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from evaluation.embed import read_cache, write_cache
from evaluation.lfw import (
    DATA_DIR_ENV,
    LfwNotFound,
    Person,
    lfw_root,
    missing_lfw,
    pair_folds,
    pair_images,
    pair_labels,
    people_images,
    read_pairs,
    read_people,
)

PAIRS_10_FOLDS = """2\t2
A\t1\t2
B\t1\t3
A\t1\tB\t2
C\t1\tD\t1
E\t2\t3
F\t1\t2
E\t1\tF\t1
G\t4\tH\t1
"""


def test_pairs_with_folds(tmp_path: Path) -> None:
    path = tmp_path / "pairs.txt"
    path.write_text(PAIRS_10_FOLDS)
    pairs = read_pairs(path)
    assert pair_folds(pairs).tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert pair_labels(pairs).tolist() == [True, True, False, False] * 2
    assert (pairs[0].a, pairs[0].b) == ("A/A_0001.jpg", "A/A_0002.jpg")
    assert (pairs[2].a, pairs[2].b) == ("A/A_0001.jpg", "B/B_0002.jpg")
    assert pairs[7].a == "G/G_0004.jpg"
    assert len(pair_images(pairs)) == 14  # A1 A2 B1 B2 B3 C1 D1 E1 E2 E3 F1 F2 G4 H1


def test_dev_pairs_are_one_fold(tmp_path: Path) -> None:
    path = tmp_path / "pairsDevTest.txt"
    path.write_text("1\nA\t1\t2\nA\t1\tB\t1\n")
    pairs = read_pairs(path)
    assert [(p.same, p.fold) for p in pairs] == [(True, 0), (False, 0)]


def test_pairs_count_must_match_the_header(tmp_path: Path) -> None:
    path = tmp_path / "pairsDevTest.txt"
    path.write_text("2\nA\t1\t2\nA\t1\tB\t1\n")
    with pytest.raises(ValueError, match="announces"):
        read_pairs(path)


def test_people_files(tmp_path: Path) -> None:
    dev = tmp_path / "peopleDevTrain.txt"
    dev.write_text("3\nA\t2\nB\t1\nC\t3\n")
    people = read_people(dev)
    assert people == [Person("A", 2), Person("B", 1), Person("C", 3)]
    images = people_images(people)
    assert len(images) == 6 and images[:3] == [("A", "A/A_0001.jpg"), ("A", "A/A_0002.jpg"), ("B", "B/B_0001.jpg")]
    folds = tmp_path / "people.txt"
    folds.write_text("2\n2\nA\t1\nB\t2\n1\nC\t1\n")
    assert [(p.name, p.fold) for p in read_people(folds)] == [("A", 0), ("B", 0), ("C", 1)]
    dev.write_text("4\nA\t2\n")
    with pytest.raises(ValueError, match="announces"):
        read_people(dev)


def test_lfw_root_names_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    with pytest.raises(LfwNotFound, match=DATA_DIR_ENV):
        lfw_root()
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    with pytest.raises(LfwNotFound, match=DATA_DIR_ENV):
        lfw_root()
    (tmp_path / "lfw" / "images_deepfunneled").mkdir(parents=True)
    assert lfw_root() == tmp_path / "lfw"


def test_embedding_cache_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "lfw-test.npz"
    assert read_cache(path) == ({}, set())
    write_cache(path, {"A/A_0001.jpg": np.array([0.6, 0.8], dtype=np.float32)}, {"B/B_0001.jpg"})
    known, no_face = read_cache(path)
    assert list(known) == ["A/A_0001.jpg"] and known["A/A_0001.jpg"].tolist() == pytest.approx([0.6, 0.8])
    assert no_face == {"B/B_0001.jpg"}


def test_the_real_lfw_protocol_files() -> None:
    if reason := missing_lfw():
        pytest.skip(reason)
    root = lfw_root()
    view2 = read_pairs(root / "pairs.txt")
    folds = pair_folds(view2)
    assert len(view2) == 6000 and np.bincount(folds).tolist() == [600] * 10
    assert [int(pair_labels(view2)[folds == k].sum()) for k in range(10)] == [300] * 10
    dev_test = read_pairs(root / "pairsDevTest.txt")
    assert len(dev_test) == 1000 and int(pair_labels(dev_test).sum()) == 500
    assert len(read_pairs(root / "pairsDevTrain.txt")) == 2200
    assert len({p.fold for p in read_people(root / "people.txt")}) == 10

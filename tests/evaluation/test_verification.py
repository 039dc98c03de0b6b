"""`evaluation.verification` on small score arrays whose answers can be checked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.lfw import Pair
from evaluation.verification import (
    EPS,
    auc,
    best_threshold,
    kfold_accuracy,
    pair_scores,
    roc,
    tar_at_far,
    threshold_at_far,
)

T, F = True, False


def test_best_threshold_separable() -> None:
    scores, same = np.array([0.1, 0.2, 0.6, 0.8]), np.array([F, F, T, T])
    t, acc = best_threshold(scores, same)
    assert t == pytest.approx(0.4) and acc == 1.0


def test_best_threshold_tie_takes_the_lowest() -> None:
    # candidates 0.1-EPS, 0.15, 0.25, 0.35, 0.4+EPS score 2, 3, 2, 3, 2 of 4: 0.15 and 0.35 tie, 0.15 wins
    scores, same = np.array([0.1, 0.2, 0.3, 0.4]), np.array([F, T, F, T])
    t, acc = best_threshold(scores, same)
    assert t == pytest.approx(0.15) and acc == 0.75


def test_best_threshold_accepts_all_or_none_at_the_ends() -> None:
    t, acc = best_threshold(np.array([0.3, 0.5]), np.array([T, T]))
    assert t == pytest.approx(0.3 - EPS) and acc == 1.0
    t, acc = best_threshold(np.array([0.3, 0.5]), np.array([F, F]))
    assert t == pytest.approx(0.5 + EPS) and acc == 1.0


def test_kfold_accuracy() -> None:
    # fold 0 is tested at the best threshold of fold 1 (between 0.45 and 0.6: 0.525), where every pair is right;
    # fold 1 at fold 0's (between 0.3 and 0.55: 0.425), which accepts the 0.45 impostor
    scores = np.array([0.1, 0.55, 0.3, 0.7, 0.2, 0.6, 0.45, 0.9])
    same = np.array([F, T, F, T, F, T, F, T])
    folds = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    result = kfold_accuracy(scores, same, folds)
    assert result.thresholds == pytest.approx([0.525, 0.425])
    assert result.accuracies == [1.0, 0.75]
    assert result.mean == 0.875 and result.std == pytest.approx(0.125)


def test_roc_accepts_tied_scores_together_and_auc() -> None:
    scores, same = np.array([0.9, 0.8, 0.8, 0.1]), np.array([T, F, T, F])
    far, tar = roc(scores, same)
    assert far.tolist() == [0.0, 0.0, 0.5, 1.0]
    assert tar.tolist() == [0.0, 0.5, 1.0, 1.0]
    # P(genuine > impostor) with ties counted half: (1 + 1 + 0.5 + 1) / 4
    assert auc(scores, same) == pytest.approx(0.875)


def test_threshold_and_tar_at_far() -> None:
    impostors = np.arange(10) / 10  # 0.0 .. 0.9
    genuine = np.array([0.5, 0.85, 0.95, 1.0])
    scores = np.concatenate([impostors, genuine])
    same = np.array([F] * 10 + [T] * 4)
    # FAR 0.1 allows 1 of 10 impostors: just above the second highest (0.8)
    assert threshold_at_far(scores, same, 0.1) == pytest.approx(0.8 + EPS)
    assert np.mean(impostors >= threshold_at_far(scores, same, 0.1)) == 0.1
    assert tar_at_far(scores, same, 0.1) == 0.75
    # FAR 0.05 allows none: just above the highest
    assert threshold_at_far(scores, same, 0.05) == pytest.approx(0.9 + EPS)
    assert tar_at_far(scores, same, 0.05) == 0.5
    # FAR 1 accepts everything
    assert tar_at_far(scores, same, 1.0) == 1.0


def test_tar_at_far_is_the_best_roc_point_within_the_far() -> None:
    rng = np.random.default_rng(0)
    scores = np.round(np.concatenate([rng.normal(0.6, 0.15, 300), rng.normal(0.1, 0.15, 700)]), 3)  # with ties
    same = np.arange(1000) < 300
    far, tar = roc(scores, same)
    for target in (1e-3, 1e-2, 0.1, 0.3):
        assert tar_at_far(scores, same, target) == pytest.approx(tar[far <= target].max())


def test_pair_scores_count_missing_photos_as_non_matches() -> None:
    pairs = [Pair("a", "b", True, 0), Pair("a", "c", False, 0)]
    embeddings = {"a": np.array([1.0, 0.0]), "b": np.array([0.6, 0.8])}
    assert pair_scores(pairs, embeddings).tolist() == [0.6, -1.0]
    negative_distance = pair_scores(pairs, embeddings, -10.0, lambda x, y: -float(np.linalg.norm(x - y)))
    assert negative_distance[0] == pytest.approx(-np.sqrt(0.16 + 0.64)) and negative_distance[1] == -10.0


def test_kfold_accuracy_needs_two_folds() -> None:
    with pytest.raises(ValueError, match="2 folds"):
        kfold_accuracy(np.array([0.1, 0.9]), np.array([F, T]), np.array([0, 0]))

"""`evaluation.identification.open_set` on a constructed gallery whose answers can be checked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.identification import alternate_split, open_set
from evaluation.lfw import Person


def probe(k: int, score: float) -> np.ndarray:
    """A unit vector with cosine `score` to gallery vector e_k and 0 to the others (the rest in dimension 3)."""
    v = np.zeros(4)
    v[k], v[3] = score, np.sqrt(1 - score * score)
    return v


def test_rank1_and_tpir_at_fpir() -> None:
    gallery = np.eye(4)[:3]  # identities 0, 1, 2 at e0, e1, e2
    gallery_ids = np.array([0, 1, 2])
    mated = [(0, 0, 0.9), (1, 1, 0.7), (2, 0, 0.6), (0, 0, 0.48)]  # (identity, nearest gallery entry, cosine)
    non_mated = [0.05 * i for i in range(1, 11)]  # top scores 0.05 .. 0.5, identity 99 (not enrolled)
    probes = np.stack([probe(k, s) for _i, k, s in mated] + [probe(i % 3, s) for i, s in enumerate(non_mated)])
    probe_ids = np.array([i for i, _k, _s in mated] + [99] * len(non_mated))
    is_mated = np.array([True] * len(mated) + [False] * len(non_mated))
    result = open_set(gallery, gallery_ids, probes, probe_ids, is_mated, fpirs=(0.1, 0.01))
    # identity 2's probe is nearest identity 0: 3 of 4 mated probes are right at rank 1
    assert result.rank1 == 0.75
    # FPIR 0.1 allows 1 of 10 non-mated top scores: just above the second highest (0.45); 0.9, 0.7, 0.48 pass
    assert result.thresholds[0.1] == pytest.approx(0.45 + 1e-6)
    assert result.tpir[0.1] == 0.75
    # FPIR 0.01 allows none: just above 0.5; 0.48 no longer passes
    assert result.tpir[0.01] == 0.5
    assert result.as_dict() == {"rank1": 0.75, "tpir@fpir=0.1": 0.75, "tpir@fpir=0.01": 0.5}


def test_alternate_split_enrols_every_other_multi_photo_identity_and_all_single_ones() -> None:
    people = [Person("Ann", 3), Person("Bob", 1), Person("Cid", 2), Person("Dee", 2), Person("Eve", 1)]
    split = alternate_split(people)
    # multi-photo identities sorted: Ann, Cid, Dee -> Ann and Dee enrolled; Bob and Eve are distractors
    assert split.gallery == ["Ann/Ann_0001.jpg", "Bob/Bob_0001.jpg", "Dee/Dee_0001.jpg", "Eve/Eve_0001.jpg"]
    assert split.probes == ["Ann/Ann_0002.jpg", "Ann/Ann_0003.jpg", "Cid/Cid_0001.jpg", "Cid/Cid_0002.jpg",
                            "Dee/Dee_0002.jpg"]
    assert split.mated.tolist() == [True, True, False, False, True]
    names = dict(zip(split.gallery, split.gallery_ids.tolist(), strict=True))
    assert split.probe_ids[0] == names["Ann/Ann_0001.jpg"] and split.probe_ids[4] == names["Dee/Dee_0001.jpg"]
    assert split.probe_ids[2] not in split.gallery_ids

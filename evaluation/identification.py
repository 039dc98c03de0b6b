"""1:N open-set identification (numpy only): rank-1 and TPIR at given FPIRs.

Every probe is compared with every gallery embedding (cosine). A mated probe's identity is enrolled; a non-mated
probe's is not. Rank-1: the share of mated probes whose top gallery match has their identity. TPIR at FPIR `f`: the
threshold is the one `evaluation.verification.threshold_at_rate` picks on the non-mated probes' top scores (at most
`floor(f * n_non_mated)` of them at or above it), and a mated probe counts when its top match has its identity and
scores at or above that threshold.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from evaluation.lfw import Person, people_images
from evaluation.verification import threshold_at_rate, unit_rows

FPIRS = (0.1, 0.01)


@dataclass(frozen=True)
class OpenSet:
    rank1: float
    tpir: dict[float, float] = field(default_factory=dict)  # FPIR -> TPIR
    thresholds: dict[float, float] = field(default_factory=dict)  # FPIR -> threshold

    def as_dict(self) -> dict[str, float]:
        """`{"rank1": ..., "tpir@fpir=0.1": ...}`, as the reports store it."""
        return {"rank1": self.rank1, **{f"tpir@fpir={f}": v for f, v in self.tpir.items()}}


def open_set(
    gallery: np.ndarray, gallery_ids: np.ndarray, probes: np.ndarray, probe_ids: np.ndarray, mated: np.ndarray,
    fpirs: tuple[float, ...] = FPIRS,
) -> OpenSet:
    """Rank-1 of the mated probes and TPIR at each FPIR (see the module docstring)."""
    sims = unit_rows(probes) @ unit_rows(gallery).T
    top = np.argmax(sims, axis=1)
    top_score = sims[np.arange(len(sims)), top]
    correct = gallery_ids[top] == probe_ids
    tpir, thresholds = {}, {}
    for fpir in fpirs:
        t = threshold_at_rate(top_score[~mated], fpir)
        thresholds[fpir] = t
        tpir[fpir] = float(np.mean(correct[mated] & (top_score[mated] >= t)))
    return OpenSet(float(np.mean(correct[mated])), tpir, thresholds)


@dataclass(frozen=True)
class OpenSetSplit:
    """Which photos of a people list are the gallery and which the probes, with identity numbers."""

    gallery: list[str]  # image names
    probes: list[str]
    gallery_ids: np.ndarray
    probe_ids: np.ndarray
    mated: np.ndarray  # per probe: is its identity enrolled


def alternate_split(people: list[Person]) -> OpenSetSplit:
    """The open-set split of a View 1 people list: identities with 2+ images are alternately enrolled (gallery =
    their first image, mated probes = their other images) or not (all their images are non-mated probes);
    one-image identities are enrolled as distractors."""
    multi = sorted(p.name for p in people if p.images >= 2)
    enrolled = set(multi[0::2]) | {p.name for p in people if p.images == 1}
    images = people_images(people)
    gallery = sorted({p: n for p, n in reversed(images) if p in enrolled}.items())  # each one's first image
    in_gallery = {n for _p, n in gallery}
    probes = [(p, n) for p, n in images if n not in in_gallery]
    ids = {p: i for i, p in enumerate(sorted({p for p, _n in images}))}
    return OpenSetSplit(
        gallery=[n for _p, n in gallery], probes=[n for _p, n in probes],
        gallery_ids=np.array([ids[p] for p, _n in gallery]), probe_ids=np.array([ids[p] for p, _n in probes]),
        mated=np.array([p in enrolled for p, _n in probes]),
    )

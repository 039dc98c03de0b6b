"""What `training.evaluate` measures on LFW, with the shared protocol and metrics of `evaluation`.

- Verification on LFW View 2 (`pairs.txt`, 10 folds, the threshold of each fold chosen on the others) for the
  resolution pairs `PAIRS`: the 112 side always goes through the trunk, the other side through each system at r.
- 1:N open-set identification on `peopleDevTest.txt`: identities with 2+ images are alternately enrolled (gallery =
  their first image at 112, mated probes = their other images) or not (all their images are non-mated probes);
  one-image identities are enrolled as distractors. Rank-1 and TPIR at FPIR 0.1 and 0.01, probes at `ID_RESOLUTIONS`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from evaluation.identification import alternate_split, open_set
from evaluation.lfw import pair_folds, pair_images, pair_labels, read_pairs, read_people
from evaluation.verification import auc, kfold_accuracy, roc, tar_at_far, unit_rows
from training.data.lfw_crops import CropCache
from training.evaluation.systems import EmbeddingCache, Systems, names_key

PAIRS = [(112, 112), (112, 56), (112, 28), (112, 14), (112, 7), (28, 28), (14, 14), (7, 7)]
ID_RESOLUTIONS = [28, 14, 7]
ABLATION_PAIRS = [(112, 14), (112, 7)]

Curves = dict[str, tuple[np.ndarray, np.ndarray]]  # "system/ra&rb" -> (FAR, TAR)


def lfw_verification(
    lfw: Path, cache: CropCache, systems: Systems, ablation: dict[int, ort.InferenceSession], store: EmbeddingCache,
    n_folds: int = 10,
) -> tuple[dict[str, Any], Curves]:
    """Accuracy (mean, std over folds), AUC and TAR@FAR 1e-2 / 1e-3 per system and resolution pair, and the ROCs."""
    pairs = [p for p in read_pairs(lfw / "pairs.txt") if p.fold < n_folds]
    names = pair_images(pairs)
    pos = {n: i for i, n in enumerate(names)}
    crops = np.asarray(cache.crops[cache.rows(names)])
    ia, ib = np.array([pos[p.a] for p in pairs]), np.array([pos[p.b] for p in pairs])
    same, folds = pair_labels(pairs), pair_folds(pairs)
    key = names_key(names)
    emb: dict[tuple[str, int], np.ndarray] = {}
    for r in sorted({r for pair in PAIRS for r in pair}, reverse=True):
        emb[("baseline", r)] = unit_rows(store.embed(crops, systems.baseline(r), f"LFW baseline r={r}",
                                                     (systems.tag["trunk"], key)))
        if r == 112:
            emb[("btnet", r)] = emb[("baseline", r)]
        elif f"btnet{r}" in systems.tag:
            emb[("btnet", r)] = unit_rows(store.embed(crops, systems.btnet(r), f"LFW btnet r={r}",
                                                      (systems.tag[f"btnet{r}"], key)))
    for r in ablation:
        emb[("plain", r)] = unit_rows(store.embed(crops, systems.btnet(r, ablation), f"LFW plain r={r}"))
    results: dict[str, Any] = {}
    curves: Curves = {}
    for system in ("baseline", "btnet", "plain"):
        for ra, rb in PAIRS:
            if system == "plain" and (ra, rb) not in ABLATION_PAIRS:
                continue
            # the 112 side is the trunk's embedding in every system (it is the BTNet 112 path)
            ka = ("baseline", 112) if ra == 112 else (system, ra)
            kb = ("baseline", 112) if rb == 112 else (system, rb)
            if ka not in emb or kb not in emb:
                continue
            scores = np.sum(emb[ka][ia] * emb[kb][ib], axis=1)
            folded = kfold_accuracy(scores, same, folds)
            label = f"{system}/{ra}&{rb}"
            results[label] = {
                "accuracy": folded.mean, "std": folded.std, "auc": auc(scores, same),
                "tar@far=1e-2": tar_at_far(scores, same, 1e-2), "tar@far=1e-3": tar_at_far(scores, same, 1e-3),
            }
            curves[label] = roc(scores, same)
    return results, curves


def identification(lfw: Path, cache: CropCache, systems: Systems, store: EmbeddingCache, max_people: int = 0
                   ) -> dict[str, Any]:
    """Rank-1 and TPIR@FPIR per system at each probe resolution (see the module docstring)."""
    people = read_people(lfw / "peopleDevTest.txt")
    if max_people:
        people = people[:max_people]
    split = alternate_split(people)
    g_ids, p_ids, mated = split.gallery_ids, split.probe_ids, split.mated
    g_crops = np.asarray(cache.crops[cache.rows(split.gallery)])
    p_crops = np.asarray(cache.crops[cache.rows(split.probes)])
    p_key = names_key(split.probes)
    gallery = store.embed(g_crops, systems.hr, "gallery 112", (systems.tag["trunk"], names_key(split.gallery)))
    out: dict[str, Any] = {
        "gallery": len(split.gallery), "mated_probes": int(mated.sum()), "non_mated_probes": int((~mated).sum()),
    }
    for r in ID_RESOLUTIONS:
        base = store.embed(p_crops, systems.baseline(r), f"probes baseline r={r}", (systems.tag["trunk"], p_key))
        out[f"baseline/{r}"] = open_set(gallery, g_ids, base, p_ids, mated).as_dict()
        if r in systems.branch:
            btnet = store.embed(p_crops, systems.btnet(r), f"probes btnet r={r}", (systems.tag[f"btnet{r}"], p_key))
            out[f"btnet/{r}"] = open_set(gallery, g_ids, btnet, p_ids, mated).as_dict()
    return out

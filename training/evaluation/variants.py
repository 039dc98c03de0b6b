"""Evaluate the trunk, the control and every fine-tuned attention variant on the same protocols, and their cost.

For each embedder (an ONNX file with the trunk's contract, run without the flip test so that each row costs one
pass per image):

- pairsDevTest verification and peopleDevTest open-set identification, clean and with each synthetic occlusion on
  the probe side (`training.evaluation.occluded`: the same occluded crops for every embedder);
- the resolution protocol on pairsDevTest: the probe brought down to a 28 or 14 pixel face and back up to 112
  (what the 112 embedder sees of a small face when no BTNet branch serves it);
- compatibility with galleries enrolled by the trunk: the variant's probes scored against the trunk's gallery
  embeddings (verification and rank-1, clean and masked);
- LFW View 2 (`pairs.txt`, 10 folds) clean, labelled apart: it shares identities with peopleDevTrain, which
  the variants were fine-tuned on;
- for the rows of a sweep, pairsDevTrain verification clean and occluded (`devtrain`): the split a setting is
  chosen on, never the test split.

Cost: parameters, MACs of one 112 x 112 image (convolutions, linear layers and the attention products, counted
by `torch.utils.flop_counter`), and ONNX Runtime latency on this CPU relative to the trunk, measured in one run
with the models interleaved (one intra-op thread; one image, and a batch of 32).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.identification import alternate_split, open_set
from evaluation.lfw import pair_labels, read_pairs, read_people
from evaluation.verification import kfold_accuracy, tar_at_far
from training.data.degrade import downsample, upsample
from training.data.lfw_crops import CropCache
from training.evaluation.occluded import CONDITIONS, Embedder, embed_all, occluded, pair_figures

RESOLUTIONS: tuple[int, ...] = (28, 14)
COMPAT_CONDITIONS: tuple[str, ...] = ("clean", "mask")


def low_res(crops: np.ndarray, size: int) -> np.ndarray:
    return np.stack([upsample(downsample(np.asarray(c), size), crops.shape[1]) for c in crops])


@dataclass
class GalleryEmbeddings:
    """The clean gallery embeddings of both protocols (the trunk's are kept for the compatibility measure)."""

    pairs: dict[str, np.ndarray]
    people: np.ndarray


def evaluate(lfw: Path, cache: CropCache, embed: Embedder, trunk: GalleryEmbeddings | None = None,
             label: str = "") -> tuple[dict[str, Any], GalleryEmbeddings]:
    """Every protocol for one embedder; with `trunk`, also its probes against the trunk's galleries."""
    out: dict[str, Any] = {"verification": {}, "identification": {}, "compatibility": {}}
    pairs = read_pairs(lfw / "pairsDevTest.txt")
    firsts = sorted({p.a for p in pairs})
    own = dict(zip(firsts, embed_all(embed, np.asarray(cache.crops[cache.rows(firsts)]), f"{label} gallery"),
                   strict=True))
    probe_crops = np.asarray(cache.crops[cache.rows([p.b for p in pairs])])
    versions: dict[str, Callable[[], np.ndarray]] = {c: partial(occluded, probe_crops, c) for c in CONDITIONS}
    versions.update({f"{r} px": partial(low_res, probe_crops, r) for r in RESOLUTIONS})
    for condition, make in versions.items():
        probes = embed_all(embed, make(), f"{label} pairsDevTest {condition}")
        out["verification"][condition] = pair_figures(own, probes, pairs)
        if trunk is not None and condition in COMPAT_CONDITIONS:
            out["compatibility"].setdefault(condition, {})["verification"] = pair_figures(trunk.pairs, probes, pairs)
    split = alternate_split(read_people(lfw / "peopleDevTest.txt"))
    people = embed_all(embed, np.asarray(cache.crops[cache.rows(split.gallery)]), f"{label} peopleDevTest gallery")
    p_crops = np.asarray(cache.crops[cache.rows(split.probes)])
    for condition in CONDITIONS:
        probes = embed_all(embed, occluded(p_crops, condition), f"{label} peopleDevTest {condition}")
        out["identification"][condition] = open_set(people, split.gallery_ids, probes, split.probe_ids,
                                                    split.mated).as_dict()
        if trunk is not None and condition in COMPAT_CONDITIONS:
            out["compatibility"][condition]["identification"] = open_set(
                trunk.people, split.gallery_ids, probes, split.probe_ids, split.mated).as_dict()
    view2 = read_pairs(lfw / "pairs.txt")
    names = sorted({n for p in view2 for n in (p.a, p.b)})
    emb = dict(zip(names, embed_all(embed, np.asarray(cache.crops[cache.rows(names)]), f"{label} View 2"),
                   strict=True))
    scores = np.array([float(emb[p.a] @ emb[p.b]) for p in view2])
    k = kfold_accuracy(scores, pair_labels(view2), np.array([p.fold for p in view2]))  # View 2's own 10 folds
    out["view2"] = {"accuracy": k.mean, "std": k.std, "tar@far=0.01": tar_at_far(scores, pair_labels(view2), 1e-2)}
    return out, GalleryEmbeddings(own, people)


def devtrain(lfw: Path, cache: CropCache, embed: Embedder, label: str = "") -> dict[str, Any]:
    """pairsDevTrain verification, clean and with each occluder on the probe side: the split a sweep is chosen on
    (View 1's tuning split; its identities are the fine-tuning identities, so the figures are optimistic and
    only compare settings with each other)."""
    pairs = read_pairs(lfw / "pairsDevTrain.txt")
    firsts = sorted({p.a for p in pairs})
    own = dict(zip(firsts, embed_all(embed, np.asarray(cache.crops[cache.rows(firsts)]), f"{label} DevTrain gallery"),
                   strict=True))
    probe_crops = np.asarray(cache.crops[cache.rows([p.b for p in pairs])])
    return {c: pair_figures(own, embed_all(embed, occluded(probe_crops, c), f"{label} pairsDevTrain {c}"), pairs)
            for c in CONDITIONS}


def cost(model: Any) -> dict[str, float]:
    """Parameters and per-image MACs (conv, linear and attention matrix products) of a PyTorch network."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, 3, 112, 112))
    return {"params": float(sum(p.numel() for p in model.parameters())), "macs": counter.get_total_flops() / 2}


def latencies(files: dict[str, Path], rounds: int = 5, repeats: int = 20) -> dict[str, dict[str, float]]:
    """Median ms of one image and of a batch of 32 per model under ONNX Runtime (one thread), interleaved."""
    from service.sessions import onnxruntime as ort_sessions

    sessions = {name: ort_sessions.create_session(path, 1, device="cpu") for name, path in files.items()}
    rng = np.random.default_rng(0)
    inputs = {1: rng.uniform(-1, 1, (1, 3, 112, 112)).astype(np.float32),
              32: rng.uniform(-1, 1, (32, 3, 112, 112)).astype(np.float32)}
    times: dict[tuple[str, int], list[float]] = {}
    for session in sessions.values():  # warm-up
        ort_sessions.run(session, inputs[32])
    for _ in range(rounds):
        for name, session in sessions.items():
            for batch, x in inputs.items():
                for _ in range(repeats if batch == 1 else max(1, repeats // 10)):
                    t0 = time.perf_counter()
                    ort_sessions.run(session, x)
                    times.setdefault((name, batch), []).append(1000 * (time.perf_counter() - t0))
    return {name: {"ms_1": float(np.median(times[(name, 1)])), "ms_32": float(np.median(times[(name, 32)]))}
            for name in files}

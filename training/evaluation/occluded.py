"""The occlusion benchmarks of the attention embedders, on identities disjoint from their training
(`peopleDevTrain.txt` trains; these use the View 1 test lists):

- verification on `pairsDevTest.txt` (1,000 pairs, 10 folds by pair index mod 10, each fold's threshold chosen
  on the other nine): accuracy mean and std over folds, and TAR at FAR 1e-2;
- open-set identification on `peopleDevTest.txt` with `evaluation.identification.alternate_split` (every
  other identity with 2+ images enrolled by its first image, one-image identities as distractors):
  rank-1 and TPIR at FPIR 0.1 and 0.01.

Each protocol runs clean and with every synthetic occlusion of `training.data.occlusion` drawn on the probe side
only (the second image of a pair, the probes of identification): the gallery holds clean photos, as an enrolment
desk would. The occluder of an image is fixed by the seed and the image's position, so every embedder sees the
same occluded crops. An embedder is any function from uint8 N x 112 x 112 x 3 crops to N x D embeddings;
`onnx_embedder` makes one from an exported model, with the service's flip test.

`python -m training.evaluation.occluded --onnx models/mobilefacenet_dynamic.onnx` prints the trunk's rows.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from evaluation.identification import alternate_split, open_set
from evaluation.lfw import Pair, lfw_root, pair_labels, read_pairs, read_people
from evaluation.verification import kfold_accuracy, tar_at_far
from training.data.lfw_crops import CropCache
from training.data.occlusion import KINDS, occlude

Embedder = Callable[[np.ndarray], np.ndarray]
CONDITIONS: tuple[str, ...] = ("clean", *KINDS)
FOLDS = 10
BATCH = 64
SEED = 2026


def occluded(crops: np.ndarray, condition: str, seed: int = SEED) -> np.ndarray:
    """The crops clean, or each with the occluder `condition` drawn by its own generator (seed, position)."""
    if condition == "clean":
        return np.asarray(crops)
    return np.stack([occlude(np.asarray(c), condition, np.random.default_rng((seed, i)))  # type: ignore[arg-type]
                     for i, c in enumerate(crops)])


def devtest_probes(count: int) -> np.ndarray:
    """The first `count` probe crops of the peopleDevTest open-set split (identities no variant trained on): the
    faces the attention pictures are drawn from."""
    from training.data.lfw_crops import load_cache

    cache = load_cache()
    split = alternate_split(read_people(lfw_root() / "peopleDevTest.txt"))
    return np.asarray(cache.crops[cache.rows(split.probes[:count])])


def embed_all(embed: Embedder, crops: np.ndarray, desc: str = "embedding") -> np.ndarray:
    """Unit embeddings of the crops, in batches, with a progress bar."""
    out = [embed(np.asarray(crops[i:i + BATCH]))
           for i in tqdm(range(0, len(crops), BATCH), desc=desc, unit="batch", leave=False)]
    x = np.concatenate(out).astype(np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def pair_figures(gallery: dict[str, np.ndarray], probes: np.ndarray, pairs: list[Pair]) -> dict[str, float]:
    """Each pair's first image (in `gallery`) against its probe (`probes`, in pair order): accuracy mean and std
    over the folds by pair index, and TAR at FAR 1e-2."""
    scores = np.array([float(gallery[p.a] @ probes[i]) for i, p in enumerate(pairs)])
    same = pair_labels(pairs)
    k = kfold_accuracy(scores, same, np.arange(len(pairs)) % FOLDS)
    return {"accuracy": k.mean, "std": k.std, "tar@far=0.01": tar_at_far(scores, same, 1e-2)}


def verification(lfw: Path, cache: CropCache, embed: Embedder, conditions: tuple[str, ...] = CONDITIONS
                 ) -> dict[str, dict[str, float]]:
    """pairsDevTest accuracy (mean, std over 10 folds) and TAR@FAR 1e-2, probe side clean or occluded."""
    pairs = read_pairs(lfw / "pairsDevTest.txt")
    firsts = sorted({p.a for p in pairs})
    seconds = [p.b for p in pairs]  # one probe per pair, so an image in two pairs gets two occluders
    gallery = dict(zip(firsts, embed_all(embed, np.asarray(cache.crops[cache.rows(firsts)])), strict=True))
    probe_crops = np.asarray(cache.crops[cache.rows(seconds)])
    out: dict[str, dict[str, float]] = {}
    for condition in conditions:
        probes = embed_all(embed, occluded(probe_crops, condition), f"pairsDevTest probes, {condition}")
        out[condition] = pair_figures(gallery, probes, pairs)
    return out


def identification(lfw: Path, cache: CropCache, embed: Embedder, conditions: tuple[str, ...] = CONDITIONS
                   ) -> dict[str, Any]:
    """peopleDevTest open-set identification (clean gallery), probes clean or occluded."""
    split = alternate_split(read_people(lfw / "peopleDevTest.txt"))
    gallery = embed_all(embed, np.asarray(cache.crops[cache.rows(split.gallery)]), "peopleDevTest gallery")
    p_crops = np.asarray(cache.crops[cache.rows(split.probes)])
    out: dict[str, Any] = {"gallery": len(split.gallery), "mated_probes": int(split.mated.sum()),
                           "non_mated_probes": int((~split.mated).sum())}
    for condition in conditions:
        embedded = embed_all(embed, occluded(p_crops, condition), f"peopleDevTest probes, {condition}")
        out[condition] = open_set(gallery, split.gallery_ids, embedded, split.probe_ids, split.mated).as_dict()
    return out


def onnx_embedder(path: Path, flip: bool = True, threads: int = 0) -> Embedder:
    """An exported embedder (NCHW, (x - 127.5) / 128, like the trunk) with the service's flip test."""
    from service.sessions import onnxruntime as ort_sessions
    from training.data.degrade import normalise

    session = ort_sessions.create_session(path, threads, device="cpu")

    def embed(crops: np.ndarray) -> np.ndarray:
        x = normalise(crops)
        if not flip:
            return ort_sessions.run(session, x)
        both = ort_sessions.run(session, np.ascontiguousarray(np.concatenate([x, x[..., ::-1]])))
        return both[: len(x)] + both[len(x):]

    return embed


def table(verify: dict[str, dict[str, float]], ident: dict[str, Any], label: str) -> str:
    """Markdown rows: one per condition."""
    lines = [f"| {label} | condition | pairsDevTest accuracy | TAR @ FAR 1e-2 | rank-1 | TPIR @ FPIR 0.1 | "
             "TPIR @ FPIR 0.01 |", "|---|---|---:|---:|---:|---:|---:|"]
    for condition in verify:
        v, i = verify[condition], ident[condition]
        lines.append(f"| {label} | {condition} | {100 * v['accuracy']:.2f} ± {100 * v['std']:.2f} | "
                     f"{100 * v['tar@far=0.01']:.2f} | {100 * i['rank1']:.2f} | {100 * i['tpir@fpir=0.1']:.2f} | "
                     f"{100 * i['tpir@fpir=0.01']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    from training.data.lfw_crops import load_cache

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--onnx", type=Path, required=True, help="an embedder with the trunk's contract")
    parser.add_argument("--label", default="trunk")
    parser.add_argument("--no-flip", action="store_true", help="without the flip test")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    lfw = lfw_root()
    cache = load_cache()
    embed = onnx_embedder(args.onnx, flip=not args.no_flip)
    verify, ident = verification(lfw, cache, embed), identification(lfw, cache, embed)
    print(table(verify, ident, args.label))
    if args.json:
        args.json.write_text(json.dumps({"verification": verify, "identification": ident}, indent=1))


if __name__ == "__main__":
    main()

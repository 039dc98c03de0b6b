"""`python -m bench.calibrate`: derive the default thresholds from LFW pairsDevTrain.txt (training split only).

`best_accuracy` is the similarity threshold with the best verification accuracy on the 2,200 dev-train pairs
(the lowest one on ties, `evaluation.verification.best_threshold`); it is the default for /v1/verify. `far_1e-3`
is the lowest threshold that accepts at most 0.1% of the 1,100 impostor pairs (at most 1 of them,
`evaluation.verification.threshold_at_far`); it is the default for /v1/identify, where a search compares a probe
with many subjects. The result is written to docs/thresholds.md; the values are pinned in
`service/models/registry.py`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from evaluation.embed import FacePathEmbedder
from evaluation.lfw import images_dir, lfw_root, pair_images, pair_labels, read_pairs
from evaluation.verification import best_threshold, pair_scores, threshold_at_far


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.calibrate")
    parser.add_argument("--out", type=Path, default=Path("docs/thresholds.md"))
    args = parser.parse_args()
    root = lfw_root()
    pairs = read_pairs(root / "pairsDevTrain.txt")
    embedder = FacePathEmbedder()
    names = pair_images(pairs)
    embeddings = embedder.embed_files(images_dir(root), names, desc="pairsDevTrain")
    scores = pair_scores(pairs, embeddings)
    labels = pair_labels(pairs)
    thr, acc = best_threshold(scores, labels)
    far_thr = threshold_at_far(scores, labels, 1e-3)
    tar = float(np.mean(scores[labels] >= far_thr))
    missing = sum(1 for n in names if n not in embeddings)
    detection = embedder.settings.detection
    flip = " with the flip test" if embedder.settings.flip_test else ""
    text = f"""# Calibrated thresholds

Derived by `python -m bench.calibrate` on LFW `pairsDevTrain.txt` (1,100 matched and 1,100 mismatched pairs of
the View 1 training identities; never on the View 2 test pairs), through the service's face path
(detector `{detection.detector}` at score {detection.score_threshold}, the main face of each photo by prominence,
5 points placed by `{detection.landmarks}`, similarity alignment, MobileFaceNet{flip}, cosine similarity).
Photos without a detected face: {missing}. The thresholds belong to this configuration: a deployment that changes
the landmarks or the flip test should re-run the calibration (the flip test adds the embeddings of the face and
its mirror image, which raises every similarity a little).

| threshold | value | on pairsDevTrain | used by |
|---|---|---|---|
| `best_accuracy` | {thr:.4f} | accuracy {acc * 100:.2f}% | `/v1/verify` default |
| `far_1e-3` | {far_thr:.4f} | TAR {tar * 100:.2f}% at FAR <= 0.1% (<= 1 of 1,100 impostor pairs) \
| `/v1/identify` default |

Every answer of `/v1/verify` and `/v1/identify` carries the threshold it applied; a request may pass its own
`threshold`, and `ANYFACE_VERIFY_THRESHOLD` / `ANYFACE_IDENTIFY_THRESHOLD` override the defaults for a deployment.
With only 1,100 impostor pairs the FAR 1e-3 point rests on the single highest impostor scores: treat it as a
starting point and re-calibrate on your own population where false accepts are costly.
"""
    args.out.write_text(text)
    print(text)
    print(f'EMBEDDER_THRESHOLDS = {{"best_accuracy": {thr:.4f}, "far_1e-3": {far_thr:.4f}}}')


if __name__ == "__main__":
    main()

"""What HPDA's pyramid attention looks at, with and without the diverse learning, on clean and occluded faces:
pictures and figures for docs/variants.md.

    python -m training.evaluation.hpda_masks                 # runs/variants/hpda{,-nodiv}/seed0/model.pt

For peopleDevTest faces (identities the networks were not fine-tuned on) under each condition of the occlusion
benchmark (the same occluded crops), each network's B x S masks of the last layer (`features.14`) are upsampled
to 7 x 7 as the network does. It writes:

- `docs/hpda_masks.png`: the masks averaged over `--faces` faces, per condition, for HPDA and for HPDA without
  the divergence loss, on the ArcFace template's five points; no face is drawn (LFW photos are not
  redistributed in this repository);
- `docs/hpda_masks_faces.png`: the masks of a few single faces, clean and masked, again without the photo;
- `runs/hpda_masks_faces.png`: the same masks over the photos, for local inspection only;
- `runs/hpda_masks.json` (and stdout): per network and layer, how different its branches are (mean |M_j - M_k|
  over faces, scales and pairs, and the divergence loss on these faces), and, per occluder, the mean mask on the
  occluded cells relative to the same cells of the clean face (below 1: the attention turns away from it).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from training.data.degrade import normalise
from training.evaluation.figures import face_map, pyplot, save
from training.evaluation.occluded import CONDITIONS, devtest_probes, occluded
from training.finetune import DEFAULT_OUT, load_finetuned, run_dir
from training.layers.hpda import divergence_loss
from training.models.hpda import TAP_FEATURES, TAP_SIZE, HPDANet

NETWORKS = {"hpda": "HPDA", "hpda-nodiv": "HPDA without the divergence loss"}
SHOWN_LAYER = 2  # features.14


def record(net: HPDANet, crops: np.ndarray, batch: int = 32) -> list[list[np.ndarray]]:
    """Per layer, per scale: the masks (N x B x s x s) of every crop."""
    found: list[list[list[np.ndarray]]] = [[[] for _ in p.scales] for p in net.layer_attention()]
    with torch.no_grad():
        for start in range(0, len(crops), batch):
            net(torch.from_numpy(normalise(crops[start:start + batch])))
            for layer, masks in enumerate(net.masks()):
                for scale, m in enumerate(masks):
                    found[layer][scale].append(m.numpy())
    return [[np.concatenate(m) for m in layer] for layer in found]


def full_size(net: HPDANet, layer: int, masks: list[np.ndarray]) -> np.ndarray:
    """The masks of one layer upsampled to 7 x 7 as the network does: N x S x B x 7 x 7."""
    pyramid = net.layer_attention()[layer]
    out = []
    for i, m in enumerate(masks):
        up = getattr(pyramid, f"up{i}").numpy()
        out.append(m if m.shape[-1] == TAP_SIZE else up @ m @ up.T)
    return np.stack(out, axis=1)


def diversity(masks: list[np.ndarray]) -> dict[str, float]:
    """How different a layer's branches are: mean |M_j - M_k| over faces, scales and pairs j != k, and eq. 2."""
    gaps = []
    for m in masks:
        b = m.shape[1]
        gaps += [float(np.abs(m[:, j] - m[:, k]).mean()) for j in range(b) for k in range(b) if j != k]
    loss = divergence_loss([torch.from_numpy(m) for m in masks]).item()
    return {"branch_gap": float(np.mean(gaps)) if gaps else 0.0, "divergence_loss": loss}


def occluded_cells(clean: np.ndarray, altered: np.ndarray) -> np.ndarray:
    """Per crop, the share of each 16 x 16 cell of the 112 crop (a 7 x 7 position) that the occluder covers."""
    changed = (np.abs(altered.astype(np.int16) - clean.astype(np.int16)).max(axis=3) > 0).astype(np.float32)
    return changed.reshape(len(changed), TAP_SIZE, 112 // TAP_SIZE, TAP_SIZE, 112 // TAP_SIZE).mean(axis=(2, 4))


def attention_on_occluder(clean_masks: np.ndarray, masks: np.ndarray, cells: np.ndarray) -> float:
    """Mean mask on the mostly covered cells of each occluded face, over the same cells of its clean face."""
    covered = cells > 0.5  # N x 7 x 7
    weight = covered[:, None, None].astype(np.float64)
    occl = (masks * weight).sum() / max(weight.sum() * 1.0, 1.0)
    ref = (clean_masks * weight).sum() / max(weight.sum() * 1.0, 1.0)
    return float(occl / ref)


def draw_means(full: dict[str, dict[str, np.ndarray]], scales: list[int], faces: int, out: Path) -> None:
    """Rows: network x condition; columns: scale x branch; each map the mean over the faces."""
    plt = pyplot()
    rows = [(n, c) for n in full for c in CONDITIONS]
    s, b = full[rows[0][0]]["clean"].shape[1:3]
    fig, axes = plt.subplots(len(rows), s * b, figsize=(1.25 * s * b + 1.2, 1.3 * len(rows)), squeeze=False)
    for r, (name, condition) in enumerate(rows):
        mean = full[name][condition].mean(axis=0)  # S x B x 7 x 7
        for i in range(s):
            for j in range(b):
                ax = axes[r, i * b + j]
                face_map(ax, mean[i, j])
                if r == 0:
                    ax.set_title(f"scale {scales[i]}\nbranch {j + 1}", fontsize=7)
        axes[r, 0].set_ylabel(f"{name}\n{condition}", fontsize=7)
    fig.suptitle(f"HPDA masks of features.14 (upsampled to 7 x 7), mean over {faces} peopleDevTest faces; colour 0 "
                 "(black) to 1 (white); dots: template landmarks", fontsize=8)
    save(fig, out)


def draw_faces(full: dict[str, np.ndarray], crops: dict[str, np.ndarray] | None, scales: list[int], out: Path,
               count: int = 3) -> None:
    """For `count` faces, clean and masked: every mask of one network (over the photo when `crops` is given)."""
    plt = pyplot()
    s, b = full["clean"].shape[1:3]
    conditions = ("clean", "mask")
    fig, axes = plt.subplots(count * len(conditions), s * b, figsize=(1.25 * s * b, 1.3 * count * len(conditions)),
                             squeeze=False)
    for f in range(count):
        for k, condition in enumerate(conditions):
            r = f * len(conditions) + k
            for i in range(s):
                for j in range(b):
                    ax = axes[r, i * b + j]
                    m = full[condition][f, i, j]
                    if crops is not None:
                        ax.imshow(crops[condition][f])
                        ax.imshow(cv2.resize(m, (112, 112), interpolation=cv2.INTER_LINEAR), cmap="magma",
                                  alpha=0.55, vmin=0, vmax=1)
                        ax.set_xticks([])
                        ax.set_yticks([])
                    else:
                        face_map(ax, m)
                    if r == 0:
                        ax.set_title(f"scale {scales[i]}\nbranch {j + 1}", fontsize=7)
            axes[r, 0].set_ylabel(f"face {f + 1}\n{condition}", fontsize=7)
    save(fig, out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=Path, default=DEFAULT_OUT)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--faces", type=int, default=256)
    p.add_argument("--docs", type=Path, default=Path("docs"))
    p.add_argument("--out", type=Path, default=Path("runs"))
    a = p.parse_args(argv)
    probes = devtest_probes(a.faces)
    crops = {c: occluded(probes, c) for c in CONDITIONS}
    full: dict[str, dict[str, np.ndarray]] = {}
    figures: dict[str, dict[str, object]] = {}
    scales: list[int] = []
    for name in tqdm(NETWORKS, desc="HPDA masks", unit="network"):
        net, _cfg, _ = load_finetuned(run_dir(a.runs, name, a.seed) / "model.pt")
        assert isinstance(net, HPDANet)
        scales = list(net.layer_attention()[0].scales)
        masks = {c: record(net, crops[c]) for c in CONDITIONS}
        full[name] = {c: full_size(net, SHOWN_LAYER, masks[c][SHOWN_LAYER]) for c in CONDITIONS}
        layers = {c: [full_size(net, layer, masks[c][layer]) for layer in range(len(TAP_FEATURES))]
                  for c in CONDITIONS}
        figures[name] = {
            "diversity (clean faces)": {f"features.{TAP_FEATURES[layer]}": diversity(masks["clean"][layer])
                                        for layer in range(len(TAP_FEATURES))},
            "attention on the occluder vs the same cells of the clean face": {
                c: {f"features.{TAP_FEATURES[layer]}": attention_on_occluder(
                    layers["clean"][layer], layers[c][layer], occluded_cells(crops["clean"], crops[c]))
                    for layer in range(len(TAP_FEATURES))}
                for c in CONDITIONS if c != "clean"},
        }
    draw_means(full, scales, len(probes), a.docs / "hpda_masks.png")
    draw_faces(full["hpda"], None, scales, a.docs / "hpda_masks_faces.png")
    draw_faces(full["hpda"], crops, scales, a.out / "hpda_masks_faces.png")
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "hpda_masks.json").write_text(json.dumps(figures, indent=1))
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()

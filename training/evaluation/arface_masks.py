"""Which patches ARFace's Attention-Net drops, on clean and occluded faces: figures and a picture for
docs/variants.md.

    python -m training.evaluation.arface_masks              # runs/variants/arface/seed0/model.pt

For peopleDevTest faces (identities the network was not fine-tuned on) under each condition of the occlusion
benchmark (the same occluded crops), the network's inference mask (the most probable of the 31) is recorded
with, for each patch, whether the occluder hides its landmark (the pixels the occluder changed). It
reports per condition how often each patch is dropped, and for the occluded ones how often a covered patch is
dropped against an uncovered one (`runs/arface_masks.json` and stdout).

`docs/arface_masks.png`: per condition, the drop rate of each patch and the mean kept area (where the Feature-Net
still sees the face, averaged over the faces), with the occluders' mean footprint outlined; and the masks chosen
for a few single masked faces with their occluder's outline. No face is drawn (LFW photos are not redistributed
in this repository); `runs/arface_masks_faces.png` shows the same masks over the photos, for local inspection.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from training.data.degrade import normalise
from training.evaluation.figures import face_map, pyplot, save
from training.evaluation.occluded import CONDITIONS, devtest_probes, occluded
from training.finetune import DEFAULT_OUT, load_finetuned, run_dir
from training.layers.arface import PATCHES, keep_mask, patch_centres
from training.models.arface import ARFaceNet


def chosen_masks(net: ARFaceNet, crops: np.ndarray, batch: int = 64) -> np.ndarray:
    """N x 5: the inference mask (1 kept, 0 dropped) of every crop."""
    net.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(crops), batch):
            net(torch.from_numpy(normalise(crops[start:start + batch])))
            assert net.last_keep is not None
            out.append(net.last_keep.numpy())
    return np.concatenate(out)


def footprint(clean: np.ndarray, altered: np.ndarray) -> np.ndarray:
    """N x 112 x 112: where the occluder changed the crop."""
    return np.abs(altered.astype(np.int16) - clean.astype(np.int16)).max(axis=3) > 0


def covered(foot: np.ndarray) -> np.ndarray:
    """N x 5: whether the occluder hides each patch's landmark (the patch's centre)."""
    return np.stack([foot[:, y, x] for x, y in patch_centres()], axis=1)


def drop_figures(keep: np.ndarray, cover: np.ndarray | None) -> dict[str, Any]:
    """Drop rate per patch; with `cover`, the drop rate of covered and of uncovered patches."""
    dropped = keep == 0
    out: dict[str, Any] = {"drop rate": {p: float(dropped[:, i].mean()) for i, p in enumerate(PATCHES)},
                           "patches kept per face": float(keep.sum(axis=1).mean())}
    if cover is not None:
        out["covered patches"] = int(cover.sum())
        out["drop rate of covered patches"] = float(dropped[cover].mean()) if cover.any() else None
        out["drop rate of uncovered patches"] = float(dropped[~cover].mean())
        out["faces with a covered patch dropped"] = float((dropped & cover).any(axis=1)[cover.any(axis=1)].mean()) \
            if cover.any() else None
    return out


def draw(figures: dict[str, Any], kept_area: dict[str, np.ndarray], feet: dict[str, np.ndarray],
         examples: tuple[np.ndarray, np.ndarray], out: Path) -> None:
    plt = pyplot()
    masks, foot = examples
    cols = len(CONDITIONS)
    fig, axes = plt.subplots(3, cols, figsize=(2.6 * cols, 7.6), squeeze=False)
    short = ["L eye", "R eye", "nose", "L mouth", "R mouth"]
    for c, condition in enumerate(CONDITIONS):
        rates = [figures[condition]["drop rate"][p] for p in PATCHES]
        axes[0, c].bar(short, rates, color="#c44")
        axes[0, c].set_ylim(0, 1)
        axes[0, c].set_title(condition, fontsize=9)
        axes[0, c].tick_params(axis="x", labelrotation=60, labelsize=7)
        if c == 0:
            axes[0, c].set_ylabel("drop rate", fontsize=8)
        ax = axes[1, c]
        face_map(ax, kept_area[condition], cmap="gray")
        if condition in feet:
            ax.contour(feet[condition], levels=[0.5], colors="#f80", linewidths=1)
        if c == 0:
            ax.set_ylabel("mean kept area\n(orange: occluder,\nhalf the faces)", fontsize=8)
        ax = axes[2, c]
        face_map(ax, masks[c], cmap="gray")
        ax.contour(foot[c].astype(float), levels=[0.5], colors="#f80", linewidths=1)
        if c == 0:
            ax.set_ylabel("single masked faces:\nchosen mask", fontsize=8)
    fig.suptitle("ARFace's Attention-Net on peopleDevTest faces (white: kept, black: dropped)", fontsize=9)
    save(fig, out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", default="arface")
    p.add_argument("--runs", type=Path, default=DEFAULT_OUT)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--faces", type=int, default=1024)
    p.add_argument("--docs", type=Path, default=Path("docs"))
    p.add_argument("--out", type=Path, default=Path("runs"))
    a = p.parse_args(argv)
    net, _cfg, _ = load_finetuned(run_dir(a.runs, a.variant, a.seed) / "model.pt")
    if not isinstance(net, ARFaceNet) or net.attention is None:
        raise SystemExit(f"{a.variant} has no Attention-Net to show")
    probes = devtest_probes(a.faces)
    figures: dict[str, Any] = {}
    kept_area: dict[str, np.ndarray] = {}
    feet: dict[str, np.ndarray] = {}
    keeps: dict[str, np.ndarray] = {}
    crops: dict[str, np.ndarray] = {}
    for condition in tqdm(CONDITIONS, desc="ARFace masks", unit="condition"):
        crops[condition] = occluded(probes, condition)
        keeps[condition] = chosen_masks(net, crops[condition])
        cover = None
        if condition != "clean":
            foot = footprint(probes, crops[condition])
            feet[condition] = foot.mean(axis=0)
            cover = covered(foot)
        figures[condition] = drop_figures(keeps[condition], cover)
        kept_area[condition] = keep_mask(torch.from_numpy(keeps[condition]), net.squares).mean(dim=0)[0].numpy()
    # one masked face per column, the first whose mask drops something (else the first)
    masked = keeps["mask"]
    picks = [i for i in range(len(masked)) if masked[i].min() == 0][: len(CONDITIONS)]
    picks += [i for i in range(len(masked)) if i not in picks][: len(CONDITIONS) - len(picks)]
    foot = footprint(probes[picks], crops["mask"][picks])
    examples = (keep_mask(torch.from_numpy(masked[picks]), net.squares)[:, 0].numpy(), foot)
    draw(figures, kept_area, feet, examples, a.docs / "arface_masks.png")
    draw_faces(crops["mask"][picks], examples[0], a.out / "arface_masks_faces.png")
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "arface_masks.json").write_text(json.dumps(figures, indent=1))
    print(json.dumps(figures, indent=1))


def draw_faces(crops: np.ndarray, masks: np.ndarray, out: Path) -> None:
    """The chosen masks over the photos (local inspection only)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(crops), figsize=(2.2 * len(crops), 2.4), squeeze=False)
    for ax, crop, mask in zip(axes[0], crops, masks, strict=True):
        ax.imshow((crop * (0.25 + 0.75 * mask[..., None])).astype(np.uint8))
        ax.axis("off")
    save(fig, out, dpi=90)


if __name__ == "__main__":
    main()

"""What SRANet's spatial attention does on real faces, clean and occluded: pictures for docs/variants.md.

    python -m training.evaluation.attention_maps --model runs/variants/sranet/seed0/model.pt

For peopleDevTest faces (identities the network was not fine-tuned on) under each condition of the occlusion
benchmark (clean, mask, sunglasses, block; the same occluded crops as the benchmark), forward hooks on the
self spatial attention (SSA) blocks record, per block:

- where it looks: the attention weight A_S each pooled key position receives, averaged over query positions;
- what it changes: the energy of its residual term BN(rho A_S^T) at each position (how much the block adds to
  the features there).

`docs/sranet_attention.png` shows these averaged over `--faces` faces, so no face can be seen in it (LFW photos
are not redistributed in this repository); the ArcFace template's five points mark where the eyes, nose and
mouth corners are. `runs/attention_faces.png` overlays the maps on a few of the faces themselves, for local
inspection only.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from training.data.degrade import normalise
from training.evaluation.figures import face_map, pyplot, save
from training.evaluation.occluded import CONDITIONS, devtest_probes, occluded
from training.finetune import load_finetuned
from training.layers.sranet import SelfSpatialAttention
from training.variant_config import SRANetSpec

SHOWN_BLOCKS = ("features.9", "features.13")  # one 14 x 14 and one 7 x 7 block


def record(net: torch.nn.Module, crops: np.ndarray, batch: int = 32) -> dict[str, dict[str, np.ndarray]]:
    """Per SSA block: `looks` (N x h' x w' key attention) and `changes` (N x h x w residual energy)."""
    blocks = {name.split(".conv.")[0]: m for name, m in net.named_modules() if isinstance(m, SelfSpatialAttention)}
    found: dict[str, dict[str, list[np.ndarray]]] = defaultdict(lambda: defaultdict(list))

    def hook(name: str, module: SelfSpatialAttention):
        def run(_m: torch.nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            x = inputs[0]
            a = module.attention(x)  # N x HW x HW'
            h, w = x.shape[2:]
            side = round(a.shape[2] ** 0.5)
            found[name]["looks"].append(a.mean(1).view(-1, side, side).numpy())
            found[name]["changes"].append((output - x).pow(2).sum(1).view(-1, h, w).numpy())
        return run

    handles = [m.register_forward_hook(hook(n, m)) for n, m in blocks.items()]
    try:
        with torch.no_grad():
            for start in range(0, len(crops), batch):
                net(torch.from_numpy(normalise(crops[start:start + batch])))
    finally:
        for handle in handles:
            handle.remove()
    return {name: {k: np.concatenate(v) for k, v in maps.items()} for name, maps in found.items()}


def draw_means(maps: dict[str, dict[str, dict[str, np.ndarray]]], faces: int, out: Path) -> None:
    plt = pyplot()
    rows = [(b, kind) for b in SHOWN_BLOCKS for kind in ("looks", "changes")]
    fig, axes = plt.subplots(len(rows), len(CONDITIONS), figsize=(2.4 * len(CONDITIONS), 2.4 * len(rows)))
    for r, (block, kind) in enumerate(rows):
        for c, condition in enumerate(CONDITIONS):
            m = maps[condition][block][kind].mean(0)
            ax = axes[r, c]
            face_map(ax, m / m.max())
            if r == 0:
                ax.set_title(condition)
            if c == 0:
                what = "where it looks (A_S)" if kind == "looks" else "what it adds"
                ax.set_ylabel(f"{block}\n{what}", fontsize=8)
    fig.suptitle(f"SRANet spatial attention, mean over {faces} peopleDevTest faces\n"
                 "(dots: template landmarks; each map scaled to its maximum)", fontsize=9)
    save(fig, out, dpi=110)


def draw_faces(crops: dict[str, np.ndarray], maps: dict[str, dict[str, dict[str, np.ndarray]]], out: Path,
               count: int = 4) -> None:
    import cv2

    plt = pyplot()
    block = SHOWN_BLOCKS[0]
    fig, axes = plt.subplots(count, len(CONDITIONS), figsize=(2.2 * len(CONDITIONS), 2.2 * count))
    for i in range(count):
        for c, condition in enumerate(CONDITIONS):
            m = maps[condition][block]["changes"][i]
            heat = cv2.resize(m / m.max(), (112, 112), interpolation=cv2.INTER_CUBIC)
            axes[i, c].imshow(crops[condition][i])
            axes[i, c].imshow(heat, cmap="magma", alpha=0.5, vmin=0, vmax=1)
            axes[i, c].axis("off")
    save(fig, out, dpi=90)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="a SRANet `model.pt` from training.finetune")
    p.add_argument("--faces", type=int, default=256)
    p.add_argument("--out", type=Path, default=Path("docs/sranet_attention.png"))
    p.add_argument("--faces-out", type=Path, default=Path("runs/attention_faces.png"))
    a = p.parse_args(argv)
    net, cfg, _ = load_finetuned(a.model)
    if not isinstance(cfg.method, SRANetSpec) or not cfg.method.spatial:
        raise SystemExit(f"{a.model} has no spatial attention to draw ({cfg.name})")
    probes = devtest_probes(a.faces)
    crops = {c: occluded(probes, c) for c in CONDITIONS}
    maps = {c: record(net, crops[c]) for c in tqdm(CONDITIONS, desc="attention maps", unit="condition")}
    draw_means(maps, len(probes), a.out)
    draw_faces(crops, maps, a.faces_out)
    print(f"wrote {a.out} (means) and {a.faces_out} (faces, not for the repository)")


if __name__ == "__main__":
    main()

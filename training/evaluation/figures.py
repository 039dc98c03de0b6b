"""Small drawing helpers shared by the attention pictures (`attention_maps`, `hpda_masks`, `arface_masks`):
matplotlib without a display, a map drawn on the ArcFace template's five points, and saving a figure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from training.data.occlusion import Points


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def template_dots(ax: Any, side: int) -> None:
    """The ArcFace template's five points on a `side` x `side` map drawn in `ax`."""
    p = Points.of(112)
    pts = np.stack([p.left_eye, p.right_eye, p.nose, p.mouth_left, p.mouth_right]) * side / 112 - 0.5
    ax.scatter(pts[:, 0], pts[:, 1], s=14, c="white", edgecolors="black", linewidths=0.6)


def face_map(ax: Any, values: np.ndarray, cmap: str = "magma", vmax: float = 1.0) -> None:
    """A square map of a face (no photo) from 0 to `vmax`, with the template points and no ticks."""
    ax.imshow(values, cmap=cmap, vmin=0, vmax=vmax)
    template_dots(ax, values.shape[0])
    ax.set_xticks([])
    ax.set_yticks([])


def save(fig: Any, out: Path, dpi: int = 100) -> None:
    """Lay out, write (making the folder) and close a figure."""
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    pyplot().close(fig)

"""ROC plots (matplotlib, Agg backend): `make bench`'s docs/lfw_roc.png and `training.evaluate`'s
docs/multires_roc.png, one panel per comparison, FAR on a log axis."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Curve:
    label: str
    far: np.ndarray
    tar: np.ndarray
    style: str = "-"
    color: str | None = None


@dataclass(frozen=True)
class Panel:
    title: str
    curves: Sequence[Curve] = field(default_factory=list)
    min_far: float = 1e-4  # the left end of the FAR axis (FAR 0 is drawn there)


def curves_of(rocs: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> list[Curve]:
    """One solid curve per (FAR, TAR), labelled by its key, in the default colour cycle."""
    return [Curve(label, far, tar) for label, (far, tar) in rocs.items()]


def plot_roc(panels: Sequence[Panel], out: Path, title: str | None = None, dpi: int = 120) -> Path:
    """Panels side by side, each with its curves; written to `out` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.5), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        for c in panel.curves:
            ax.plot(np.maximum(c.far, panel.min_far), c.tar, c.style, color=c.color, label=c.label)
        ax.set_xscale("log")
        ax.set_xlim(panel.min_far, 1)
        ax.set_xlabel("false accept rate")
        ax.set_ylabel("true accept rate")
        ax.set_title(panel.title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="lower right", fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out

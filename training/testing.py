"""Helpers for the `tests/training/` files: locate LFW and the models, or skip with the reason."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evaluation.lfw import missing_lfw as missing_lfw  # re-exported for the tests
from training.config import lfw_dir, model_dir, trunk_weights
from training.models.mobilefacenet import MobileFaceNet

# a handful of LFW images from different people (all in peopleDevTrain or pairs.txt)
SAMPLE_IMAGES = [
    "Aaron_Eckhart/Aaron_Eckhart_0001.jpg",
    "Abdullah_Gul/Abdullah_Gul_0001.jpg",
    "Abdullah_Gul/Abdullah_Gul_0002.jpg",
    "Alejandro_Toledo/Alejandro_Toledo_0001.jpg",
    "Ann_Veneman/Ann_Veneman_0001.jpg",
    "Colin_Powell/Colin_Powell_0001.jpg",
]


def missing_models() -> str | None:
    need = [trunk_weights(), model_dir() / "face_detection_yunet_2023mar.onnx"]
    absent = [str(p) for p in need if not p.exists()]
    return f"model files absent ({', '.join(absent)}): run `python -m service.models fetch`" if absent else None




@lru_cache(maxsize=1)
def real_faces() -> np.ndarray:
    """The sample images detected and aligned by the service's detector and aligner (uint8, N x 112 x 112 x 3)."""
    from training.data.lfw_crops import align_images

    return align_images([n for n in SAMPLE_IMAGES if (lfw_dir() / "images_deepfunneled" / n).exists()])


def face_batch(resolution: int = 112) -> np.ndarray:
    from training.data.degrade import downsample, normalise

    return normalise(np.stack([downsample(c, resolution) for c in real_faces()]))


def onnx_trunk() -> Path | None:
    """The published single-image MobileFaceNet ONNX (the reference for the PyTorch trunk)."""
    for name in ("mobilefacenet.onnx", "mobilefacenet_dynamic.onnx"):
        if (model_dir() / name).exists():
            return model_dir() / name
    return None


def random_trunk(seed: int, affine: bool = False) -> MobileFaceNet:
    """A frozen trunk in eval mode with random weights and BatchNorm statistics (and BN affine parameters when
    `affine`): structural tests need no downloaded weights."""
    torch.manual_seed(seed)
    net = MobileFaceNet()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                if affine:
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.2, 0.2)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net



def crash_on_call(real: Callable[..., Any], n: int) -> Callable[..., Any]:
    """`real`, except that its n-th call raises KeyboardInterrupt (an interrupted run, for resume tests)."""
    calls = {"n": 0}

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    return wrapper

"""`python -m training.distill` on a tiny schedule: logs every loss term, is seeded, and resumes exactly.

Builds a 40-image crop cache in a temporary folder with the service's detector and aligner (about a second).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="training needs PyTorch: pip install .[train]")
torch.set_num_threads(1)  # shared CI / dev CPUs: one thread is faster than oversubscribed OpenMP

from training import distill  # noqa: E402
from training.data.degrade import DegradeConfig, degrade  # noqa: E402
from training.testing import crash_on_call  # noqa: E402


def _args(out: Path, steps: int = 4) -> list[str]:
    return [
        "--resolutions", "7", "--steps", str(steps), "--max-train-images", "16", "--batch-size", "4",
        "--checkpoint-every", "2", "--out", str(out), "--threads", "1",
    ]


def test_distill_logs_resumes_and_is_seeded(
    crop_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANYFACE_CACHE_DIR", str(crop_cache))
    distill.main(_args(tmp_path / "a"))
    log = [json.loads(line) for line in (tmp_path / "a" / "r7" / "log.jsonl").read_text().splitlines()]
    assert {"feature", "embedding", "scale", "loss", "lr"} <= set(log[-1])
    assert log[-1]["step"] == 4
    full = torch.load(tmp_path / "a" / "r7" / "branch.pt", weights_only=False)
    assert full["resolution"] == 7 and full["conv"] == "scan"

    # interrupted after the checkpoint at step 2, then resumed: same weights as the uninterrupted run
    real_loss = distill.embedding_loss
    monkeypatch.setattr(distill, "embedding_loss", crash_on_call(real_loss, 4))
    with pytest.raises(KeyboardInterrupt):
        distill.main(_args(tmp_path / "b"))
    assert (tmp_path / "b" / "r7" / "checkpoint.pt").exists()
    monkeypatch.setattr(distill, "embedding_loss", real_loss)
    distill.main([*_args(tmp_path / "b"), "--resume"])
    resumed = torch.load(tmp_path / "b" / "r7" / "branch.pt", weights_only=False)
    for key, value in full["branch"].items():
        assert torch.allclose(value.float(), resumed["branch"][key].float(), atol=1e-6), key


def test_plain_conv_run(crop_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANYFACE_CACHE_DIR", str(crop_cache))
    distill.main([*_args(tmp_path, steps=2), "--conv", "plain"])
    ckpt = torch.load(tmp_path / "r7" / "branch.pt", weights_only=False)
    assert ckpt["conv"] == "plain"
    assert not any(k.endswith(".scale") for k in ckpt["branch"])


def test_degrade_shapes_and_determinism() -> None:
    import numpy as np

    crop = np.random.default_rng(0).integers(0, 256, size=(112, 112, 3), dtype=np.uint8)
    for r in (56, 28, 14, 7):
        a = degrade(crop, r, np.random.default_rng(1), DegradeConfig())
        b = degrade(crop, r, np.random.default_rng(1), DegradeConfig())
        assert a.shape == (r, r, 3) and a.dtype == np.uint8
        assert (a == b).all()

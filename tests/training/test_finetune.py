"""`python -m training.finetune` on a tiny schedule with real LFW crops: it logs both loss terms, resumes exactly,
keeps the frozen front of the trunk untouched, and its model exports with the serving contract.

Builds a 40-image crop cache in a temporary folder with the service's face path (a few seconds).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="training needs PyTorch: pip install .[train]")
torch.set_num_threads(1)

from training import finetune  # noqa: E402
from training.testing import crash_on_call  # noqa: E402
from training.variant_config import VARIANTS_DIR, VariantConfig, load_variant  # noqa: E402

TINY_SCHEDULE = {"min_images_per_identity": 1, "steps": 4, "batch_size": 4, "lr": 0.01, "warmup_steps": 1,
                 "train_from": "features.6", "new_module_lr_scale": 10.0, "seeds": [0],
                 "augment": {"flip_prob": 0.5, "low_res_prob": 0.5, "occlusion_prob": 0.5}}


def tiny(name: str, folder: Path, **changes: object) -> VariantConfig:
    """A shipped variant file with the tiny schedule beside it (with `changes` to that schedule)."""
    (folder / "schedule.json").write_text(json.dumps({**TINY_SCHEDULE, **changes}))
    (folder / f"{name}.json").write_text((VARIANTS_DIR / f"{name}.json").read_text())
    return load_variant(folder / f"{name}.json")


def test_finetune_logs_resumes_exactly_and_freezes_the_front(
    crop_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANYFACE_CACHE_DIR", str(crop_cache))
    cfg = tiny("sranet", tmp_path)
    full_path = finetune.train(cfg, 0, tmp_path / "a", checkpoint_every=2, log_every=1)
    log = [json.loads(line) for line in (full_path.parent / "log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == [1, 2, 3, 4]
    assert all(row["margin"] > 0 and 0 <= row["distill"] <= 2 for row in log)
    full = torch.load(full_path, weights_only=False)
    assert full["config"]["name"] == "sranet" and full["steps"] == 4 and full["seed"] == 0
    assert not (full_path.parent / "checkpoint.pt").exists()

    # the frozen front (conv1 ... features.5) is the trunk's, BatchNorm statistics included; later units moved
    from training.config import trunk_weights

    trunk = torch.load(trunk_weights(), map_location="cpu", weights_only=True)
    for key, value in trunk.items():
        moved = not torch.equal(full["model"][key], value)
        if key.startswith(("conv1.", "dw_conv.", *(f"features.{i}." for i in range(6)))):
            assert not moved, key
    assert any(not torch.equal(full["model"][k], v) for k, v in trunk.items() if k.startswith("features.13."))
    # SRANet's residual scales left zero: the attention is in use after fine-tuning
    scales = [v for k, v in full["model"].items() if ".conv.4." in k and k.endswith(".bn.weight")]
    assert scales and any(float(s.abs().max()) > 0 for s in scales)

    # interrupted after the checkpoint at step 2, then resumed: the same weights as the uninterrupted run
    real = finetune.augment_batch
    monkeypatch.setattr(finetune, "augment_batch", crash_on_call(real, 4))
    with pytest.raises(KeyboardInterrupt):
        finetune.train(cfg, 0, tmp_path / "b", checkpoint_every=2)
    assert (tmp_path / "b" / "sranet" / "seed0" / "checkpoint.pt").exists()
    monkeypatch.setattr(finetune, "augment_batch", real)
    resumed = torch.load(finetune.train(cfg, 0, tmp_path / "b", resume=True, checkpoint_every=2),
                         weights_only=False)
    for key, value in full["model"].items():
        assert torch.allclose(value.float(), resumed["model"][key].float(), atol=1e-6), key

    # a finished run is not trained again
    assert finetune.train(cfg, 0, tmp_path / "b", resume=True) == tmp_path / "b" / "sranet" / "seed0" / "model.pt"


def test_hpda_trains_its_local_branch_with_the_divergence_loss(
    crop_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANYFACE_CACHE_DIR", str(crop_cache))
    path = finetune.train(tiny("hpda", tmp_path), 0, tmp_path / "runs", log_every=1)
    log = [json.loads(line) for line in (path.parent / "log.jsonl").read_text().splitlines()]
    assert all(0 < row["method"] <= 2 for row in log)  # eq. 2 with t = 1 lies in [0, 2]
    state = torch.load(path, weights_only=False)["model"]
    assert float(state["joint.weight"][:, 128:].abs().max()) > 0  # the local branch now reaches the embedding
    # gradients reach the pyramid attention through it: each layer's merge BatchNorm shifts start at zero
    assert all(float(state[f"pyramids.{i}.merge.0.1.bias"].abs().max()) > 0 for i in range(3))


def test_arface_trains_its_attention_net_by_policy_gradient(
    crop_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANYFACE_CACHE_DIR", str(crop_cache))
    cfg = tiny("arface", tmp_path)
    path = finetune.train(cfg, 0, tmp_path / "a", log_every=1, checkpoint_every=2)
    log = [json.loads(line) for line in (path.parent / "log.jsonl").read_text().splitlines()]
    assert any(row["policy"] != 0 for row in log)
    state = torch.load(path, weights_only=False)["model"]
    assert float(state["attention.fc.weight"].abs().max()) > 0  # starts at zero; only the policy loss moves it
    assert 0 <= float(state["baseline"]) <= 1
    # interrupted after the checkpoint at step 2 and resumed: the Attention-Net's optimiser state comes back too
    real = finetune.augment_batch
    monkeypatch.setattr(finetune, "augment_batch", crash_on_call(real, 4))
    with pytest.raises(KeyboardInterrupt):
        finetune.train(cfg, 0, tmp_path / "b", checkpoint_every=2)
    monkeypatch.setattr(finetune, "augment_batch", real)
    resumed = torch.load(finetune.train(cfg, 0, tmp_path / "b", resume=True, checkpoint_every=2),
                         weights_only=False)["model"]
    for key, value in state.items():
        assert torch.allclose(value.float(), resumed[key].float(), atol=1e-6), key


@pytest.mark.parametrize("name", ["sranet", "hpda", "arface"])
def test_export_keeps_the_serving_contract(name: str, crop_cache: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from service.models.manifest import load_manifest
    from training.export_variant import export_variant
    from training.triton_repo import parse_ensemble

    monkeypatch.setenv("ANYFACE_CACHE_DIR", str(crop_cache))
    model = finetune.train(tiny(name, tmp_path), 0, tmp_path / "runs")
    out = tmp_path / "models"
    report = export_variant(model, out, thresholds=False)
    assert float(report["max_abs_diff_vs_torch"]) <= 1e-4  # type: ignore[arg-type]
    assert float(report["triton_max_abs_diff_vs_single"]) <= 1e-4  # type: ignore[arg-type]
    entry = load_manifest(out).models[name]
    assert (entry.role, entry.method, entry.trunk, entry.resolution, entry.embedding_size) == (
        "embedder", name, "mobilefacenet", 112, 128)
    assert entry.file == f"{name}.onnx" and (out / f"{name}.onnx").exists()
    ensemble = (out / "triton" / name / "config.pbtxt").read_text()
    assert parse_ensemble(ensemble) == [(f"{name}_net", "input", "embedding")]
    assert (out / "triton" / f"{name}_net" / "1" / "model.onnx").exists()

"""Variants as data: every file loads with the one shared schedule, unknown keys are refused, and each builds the
network it names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.variant_config import VARIANTS_DIR, SRANetSpec, load_variant, variant_names


def test_every_variant_loads_and_shares_the_schedule() -> None:
    names = variant_names()
    assert {"control", "sranet", "sranet-sca", "sranet-ssa", "sranet-naive", "hpda", "hpda-nodiv", "hpda-concat",
            "hpda-b1", "control-am", "arface", "arface-random", "arface-noreg", "arface-layers5",
            "arface-r20"} <= set(names)
    configs = [load_variant(n) for n in names]
    assert all(c.name == n for c, n in zip(configs, names, strict=True))
    assert len({c.schedule.model_dump_json() for c in configs}) == 1  # one schedule for every row of a table
    # a method's rows share the loss with their control: ArcFace for SRANet and HPDA, AM-Softmax for ARFace
    losses = {c.name: c.loss for c in configs}
    for name, loss in losses.items():
        control = "control-am" if name.startswith(("arface", "control-am")) else "control"
        assert loss == losses[control], name
    assert losses["control-am"].kind == "am-softmax" and losses["control"].kind == "arcface"
    assert load_variant("control").method.kind == "none"
    sca = load_variant("sranet-sca").method
    assert isinstance(sca, SRANetSpec) and (sca.channel, sca.spatial) == (True, False)


def test_unknown_keys_and_a_private_schedule_are_refused(tmp_path: Path) -> None:
    (tmp_path / "schedule.json").write_text((VARIANTS_DIR / "schedule.json").read_text())
    good = json.loads((VARIANTS_DIR / "sranet.json").read_text())
    (tmp_path / "typo.json").write_text(json.dumps({**good, "metod": {}}))
    with pytest.raises(ValueError):
        load_variant(tmp_path / "typo.json")
    (tmp_path / "own.json").write_text(json.dumps({**good, "schedule": {"steps": 1}}))
    with pytest.raises(ValueError):
        load_variant(tmp_path / "own.json")


def test_variants_build_their_networks() -> None:
    pytest.importorskip("torch", reason="training needs PyTorch: pip install .[train]")
    from training.layers.sranet import SelfChannelAttention, SelfSpatialAttention
    from training.variant_config import build_model

    def parts(name: str) -> tuple[int, int]:
        net = build_model(load_variant(name), None)
        return (sum(isinstance(m, SelfChannelAttention) for m in net.modules()),
                sum(isinstance(m, SelfSpatialAttention) for m in net.modules()))

    assert parts("control") == (0, 0)
    assert parts("sranet") == (8, 8)
    assert parts("sranet-sca") == (8, 0)
    assert parts("sranet-ssa") == (0, 8)
    naive = build_model(load_variant("sranet-naive"), None)
    assert all(not m.pool for m in naive.modules() if isinstance(m, SelfSpatialAttention))

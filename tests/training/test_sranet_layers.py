"""SRANet's attention blocks: identity at initialisation (so a trunk with blocks inserted is the trunk), the
attention matrices' shapes and rows, global mixing once trained, and ONNX parity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training needs PyTorch: pip install .[train]")
torch.set_num_threads(1)

from training.layers.sranet import (  # noqa: E402
    SelfChannelAttention,
    SelfResidualAttention,
    SelfSpatialAttention,
)
from training.onnx_utils import export_onnx, run, session  # noqa: E402

BLOCKS = {
    "sca": lambda c: SelfChannelAttention(c),
    "ssa": lambda c: SelfSpatialAttention(c),
    "sca-naive": lambda c: SelfChannelAttention(c, pool=False),
    "ssa-naive": lambda c: SelfSpatialAttention(c, pool=False),
    "both": lambda c: SelfResidualAttention(c),
}


@pytest.mark.parametrize("name", sorted(BLOCKS))
@pytest.mark.parametrize("train", [True, False])
def test_a_new_block_is_the_identity(name: str, train: bool) -> None:
    torch.manual_seed(0)
    block = BLOCKS[name](64).train(train)
    x = torch.randn(3, 64, 7, 7)
    assert torch.equal(block(x), x)


def test_attention_matrices_have_the_papers_shapes_and_softmax_rows() -> None:
    x = torch.randn(2, 64, 14, 14)
    a_c = SelfChannelAttention(64).attention(x)
    assert a_c.shape == (2, 64, 32)
    a_s = SelfSpatialAttention(64).attention(x)
    assert a_s.shape == (2, 196, 49)  # HW x HW/4
    assert SelfSpatialAttention(64).attention(torch.randn(2, 64, 7, 7)).shape == (2, 49, 16)  # 7 x 7 pools to 4 x 4
    assert SelfSpatialAttention(64, pool=False).attention(x).shape == (2, 196, 196)
    for a in (a_c, a_s):
        torch.testing.assert_close(a.sum(dim=-1), torch.ones(a.shape[:2]))
        assert bool((a >= 0).all())


def trained(block: torch.nn.Module) -> torch.nn.Module:
    """The block with its residual BatchNorms moved off zero, as fine-tuning does."""
    with torch.no_grad():
        for module in block.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.fill_(0.5)
                module.bias.fill_(0.1)
    return block.eval()


@pytest.mark.parametrize("name", ["sca", "ssa"])
def test_the_residual_term_mixes_the_whole_map(name: str) -> None:
    torch.manual_seed(1)
    block = trained(BLOCKS[name](32))
    x = torch.randn(1, 32, 8, 8)
    x2 = x.clone()
    x2[0, :, 0, 0] += 3.0  # change one corner position
    with torch.no_grad():
        y, y2 = block(x), block(x2)
    assert not torch.allclose(y, x)
    far = (y2 - y)[0, :, 7, 7]  # the opposite corner feels it: attention is global, not local
    assert float(far.abs().max()) > 1e-4


def test_the_zero_scale_still_learns() -> None:
    torch.manual_seed(2)
    block = SelfResidualAttention(32).train()
    x = torch.randn(4, 32, 7, 7)
    (block(x) * torch.randn_like(x)).sum().backward()
    for module in block:
        assert float(module.bn.weight.grad.abs().sum()) > 0  # the scale gets a gradient and leaves zero


def test_sca_needs_even_channels_and_a_block_needs_a_part() -> None:
    with pytest.raises(ValueError):
        SelfChannelAttention(63)
    with pytest.raises(ValueError):
        SelfResidualAttention(64, channel=False, spatial=False)


@pytest.mark.parametrize("pool", [True, False])
def test_onnx_export_equals_pytorch(tmp_path: Path, pool: bool) -> None:
    torch.manual_seed(3)
    block = trained(SelfResidualAttention(64, pool=pool))
    path = export_onnx(block, tmp_path / "sra.onnx", (64, 7, 7), input_name="x", output_name="y")
    x = np.random.default_rng(0).standard_normal((2, 64, 7, 7)).astype(np.float32)
    with torch.no_grad():
        expected = block(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(run(session(path), x), expected, atol=1e-4)

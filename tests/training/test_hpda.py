"""HPDA's blocks: the fixed pooling and upsampling matrices equal PyTorch's operators, the divergence loss
follows eq. 2, the network computes exactly the trunk before fine-tuning, and the ablations differ from HPDA in
one thing each."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="training needs PyTorch: pip install .[train]")
torch.set_num_threads(1)

from torch.nn import functional  # noqa: E402

from training.layers.hpda import (  # noqa: E402
    LayerFusion,
    PyramidAttention,
    adaptive_pool_matrix,
    divergence_loss,
    upsample_matrix,
)
from training.models.hpda import HPDANet  # noqa: E402
from training.variant_config import HPDASpec, build_model, load_variant  # noqa: E402


@pytest.mark.parametrize("size", [5, 3, 1])
def test_pyramid_pooling_and_upsampling_equal_pytorch(size: int) -> None:
    x = torch.randn(2, 8, 7, 7)
    pool = adaptive_pool_matrix(7, size)
    assert torch.allclose(pool @ x @ pool.T, functional.adaptive_avg_pool2d(x, size), atol=1e-6)
    m = torch.rand(2, 3, size, size)
    up = upsample_matrix(size, 7)
    assert torch.allclose(up @ m @ up.T, functional.interpolate(m, size=7, mode="bilinear", align_corners=False),
                          atol=1e-6)


def test_divergence_loss_follows_eq_2() -> None:
    same = [torch.full((4, 3, s, s), 0.5) for s in (7, 5, 3)]
    assert divergence_loss(same, margin=1.0).item() == pytest.approx(2.0)  # every pair at the full margin t
    assert divergence_loss(same, margin=0.25).item() == pytest.approx(0.5)
    ones = torch.ones(2, 1, 7, 7)
    complementary = [torch.cat([ones, 1 - ones], dim=1)]  # two branches, disjoint binary masks
    assert divergence_loss(complementary).item() == pytest.approx(0.0)
    assert divergence_loss([torch.rand(2, 1, 7, 7)]).item() == 0.0  # one branch: nothing to diversify
    # its gradient pushes two equal masks apart
    masks = torch.full((1, 2, 3, 3), 0.5)
    masks[0, 0] += 0.01
    masks.requires_grad_(True)
    divergence_loss([masks]).backward()
    assert masks.grad is not None
    assert (masks.grad[0, 0] < 0).all() and (masks.grad[0, 1] > 0).all()


def test_pyramid_attention_keeps_its_masks_and_shape() -> None:
    block = PyramidAttention(16, 7, scales=(7, 5, 3), branches=3, reduction=4)
    out = block(torch.randn(2, 16, 7, 7))
    assert out.shape == (2, 3 * 16, 7, 7)
    assert [tuple(m.shape) for m in block.masks] == [(2, 3, 7, 7), (2, 3, 5, 5), (2, 3, 3, 3)]
    assert all(((m > 0) & (m < 1)).all() for m in block.masks)


def test_layer_fusion_is_eq_5_then_pooling_signed_sqrt_and_l2() -> None:
    torch.manual_seed(0)
    layers = [torch.randn(2, 3, 7, 7) for _ in range(3)]
    for fusion in ("hbp", "concat"):
        block = LayerFusion([3, 3, 3], 4, 12, fusion).eval()  # fresh BatchNorms: x / sqrt(1 + eps)
        with torch.no_grad():
            block.fc.weight.copy_(torch.eye(12))
            block.fc.bias.zero_()
            weights = [p.weight[:, :, 0, 0] for p in block.modules() if isinstance(p, torch.nn.Conv2d)]
            u, v, s = (torch.einsum("dc,nchw->ndhw", w, x) / (1 + 1e-5) ** 0.5
                       for w, x in zip(weights, layers, strict=True))
            z = torch.cat([u * v, u * s, v * s] if fusion == "hbp" else [u, v, s], dim=1).mean(dim=(2, 3))
            z = torch.sign(z) * torch.sqrt(z.abs() + 1e-6)
            assert torch.allclose(block(layers), functional.normalize(z, dim=1), atol=1e-5), fusion


def test_hpda_starts_as_the_trunk_and_its_ablations_change_one_thing() -> None:
    from training.config import trunk_weights
    from training.models.mobilefacenet import load_trunk

    path = trunk_weights()
    if not path.exists():
        pytest.skip(f"trunk weights not fetched ({path}); run `make models`")
    trunk = load_trunk(path)
    x = torch.randn(3, 3, 112, 112)
    for name in ("hpda", "hpda-nodiv", "hpda-concat", "hpda-b1"):
        net = build_model(load_variant(name), path).eval()
        assert isinstance(net, HPDANet)
        with torch.no_grad():
            assert torch.equal(net(x), trunk(x)), name
        assert len(net.masks()) == 3  # features.12, .13, .14
    base = load_variant("hpda").method
    assert isinstance(base, HPDASpec)
    changed = {}
    for name in ("hpda-nodiv", "hpda-concat", "hpda-b1"):
        spec = load_variant(name).method
        assert isinstance(spec, HPDASpec)
        changed[name] = {k for k, v in spec.model_dump().items() if v != base.model_dump()[k]}
    assert changed == {"hpda-nodiv": {"diverse_weight"}, "hpda-concat": {"fusion"}, "hpda-b1": {"branches"}}

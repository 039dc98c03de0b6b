"""ARFace's pieces: patches at the template points, the mask of eq. 1, the policy over the 31 masks (its
probabilities, sampling and most probable mask), the policy gradient that learns to keep a useful patch, and the
network that equals the trunk before fine-tuning and masks only while training."""

from __future__ import annotations

import itertools

import pytest

torch = pytest.importorskip("torch", reason="training needs PyTorch: pip install .[train]")
torch.set_num_threads(1)

from training.layers.arface import (  # noqa: E402
    PATCHES,
    keep_mask,
    log_prob,
    most_probable_keep,
    patch_centres,
    patch_squares,
    sample_keep,
    scaled_mask,
)
from training.models.arface import ARFaceNet  # noqa: E402
from training.variant_config import build_model, load_variant  # noqa: E402

MODES = torch.tensor([bits for bits in itertools.product([0.0, 1.0], repeat=len(PATCHES)) if any(bits)])


def test_patches_sit_on_the_template_points_and_the_mask_zeroes_the_dropped_ones() -> None:
    centres = patch_centres()
    assert centres[0][0] < centres[2][0] < centres[1][0]  # left eye, nose, right eye from left to right
    assert centres[0][1] < centres[2][1] < centres[3][1]  # eyes above the nose above the mouth
    squares = patch_squares(10)
    assert squares.sum(dim=(1, 2)).tolist() == [400.0] * 5  # 20 x 20, all inside the crop at this radius
    keep = torch.tensor([[1.0, 1.0, 0.0, 1.0, 1.0]])
    mask = keep_mask(keep, squares)[0, 0]
    x, y = centres[2]
    assert mask[y, x] == 0 and mask[y - 10:y + 10, x - 10:x + 10].sum() == 0
    assert mask.sum() == 112 * 112 - 400
    assert keep_mask(torch.ones(1, 5), squares).min() == 1
    assert torch.allclose(scaled_mask(keep_mask(keep, squares), 7).sum() * 16 * 16, mask.sum())


def test_the_policy_is_a_distribution_over_the_31_masks() -> None:
    logits = torch.randn(3, 5) * 2
    probs = torch.stack([log_prob(logits, mode.expand(3, 5)).exp() for mode in MODES], dim=1)
    assert torch.allclose(probs.sum(dim=1), torch.ones(3), atol=1e-5)
    # the most probable mask is the best of the 31, also when every patch is more likely dropped than kept
    for row in [*logits, torch.tensor([-1.0, -3.0, -0.5, -2.0, -4.0])]:
        best = MODES[torch.stack([log_prob(row[None], m[None]) for m in MODES]).argmax()]
        assert torch.equal(most_probable_keep(row[None])[0], best)
    # sampling never drops every patch, and follows the probabilities
    generator = torch.Generator().manual_seed(0)
    draws = sample_keep(torch.full((4000, 5), -3.0), generator)
    assert (draws.sum(dim=1) >= 1).all()
    assert draws.mean().item() == pytest.approx(0.2, abs=0.03)  # conditioned on one kept: mostly exactly one


def test_the_policy_gradient_learns_to_keep_the_patch_that_pays() -> None:
    torch.manual_seed(0)
    net = build_model(load_variant("arface"), None)
    assert isinstance(net, ARFaceNet) and net.attention is not None
    net.train()
    opt = torch.optim.Adam(net.policy_parameters(), lr=0.05)
    x = torch.randn(16, 3, 112, 112)
    with torch.no_grad():
        start = torch.sigmoid(net.attention(x))[:, 0].mean().item()
    for _ in range(15):
        net(x)
        assert net.last_keep is not None
        correct = net.last_keep[:, 0] > 0  # a face is recognised exactly when its left eye is kept
        opt.zero_grad()
        net.policy_loss(correct).backward()
        opt.step()
    with torch.no_grad():
        end = torch.sigmoid(net.attention(x))
    assert end[:, 0].mean().item() > start + 0.2
    assert 0 <= float(net.baseline) <= 1


def test_arface_equals_the_trunk_at_first_and_masks_only_while_training() -> None:
    from training.config import trunk_weights
    from training.models.mobilefacenet import load_trunk

    path = trunk_weights()
    if not path.exists():
        pytest.skip(f"trunk weights not fetched ({path}); run `make models`")
    trunk = load_trunk(path)
    x = torch.randn(4, 3, 112, 112)
    for name in ("arface", "arface-random"):
        net = build_model(load_variant(name), path).eval()
        with torch.no_grad():
            assert torch.equal(net(x), trunk(x)), name  # the whole face is kept at first
            assert net.last_keep is not None and net.last_keep.min() == 1 and not net.masked_units
            net.train()
            torch.manual_seed(3)
            net(x)
        assert net.last_keep is not None and (net.last_keep.sum(dim=1) < 5).any()
        assert net.mask is not None and (net.mask == 0).any()  # the image the Feature-Net saw was masked

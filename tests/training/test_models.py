"""The PyTorch trunk equals the published ONNX MobileFaceNet on real faces; SCAN fusion is exact and free."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training needs PyTorch: pip install .[train]")
torch.set_num_threads(1)  # shared CI / dev CPUs: one thread is faster than oversubscribed OpenMP

from training.flops import count_macs, count_params  # noqa: E402
from training.layers.fuse import fuse_model  # noqa: E402
from training.layers.scan_conv import ScanConv2d, scale_loss_of, set_scale_loss  # noqa: E402
from training.models.btnet import BranchNet  # noqa: E402
from training.models.mobilefacenet import MobileFaceNet, implant_unit, load_trunk  # noqa: E402
from training.testing import face_batch, missing_lfw, missing_models, onnx_trunk  # noqa: E402
from training.testing import random_trunk as make_random_trunk  # noqa: E402

RESOLUTIONS = [56, 28, 14, 7]


@pytest.fixture(scope="module")
def trunk() -> MobileFaceNet:
    if reason := missing_models():
        pytest.skip(reason)
    from training.config import trunk_weights

    return load_trunk(trunk_weights())


@pytest.fixture(scope="module")
def random_trunk() -> MobileFaceNet:
    """A trunk with random weights and BN statistics: the structural tests need no download."""
    return make_random_trunk(0, affine=True)


def _perturbed_scan(trunk: MobileFaceNet, r: int, seed: int = 0) -> BranchNet:
    """A SCAN branch whose scales, kernels and BN statistics are moved away from the initial copy."""
    gen = torch.Generator().manual_seed(seed)
    net = BranchNet(trunk, r, "scan")
    with torch.no_grad():
        for m in net.branch.modules():
            if isinstance(m, ScanConv2d):
                m.scale.copy_(0.5 + 1.5 * torch.rand(m.scale.shape, generator=gen))
                m.shortcut.add_(0.05 * torch.randn(m.shortcut.shape, generator=gen))
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.add_(0.05 * torch.randn(m.running_mean.shape, generator=gen))
    return net.eval()


def test_implant_stages() -> None:
    assert [implant_unit(r) for r in RESOLUTIONS] == [1, 3, 8, 15]


def test_trunk_matches_onnx_on_real_faces(trunk: MobileFaceNet) -> None:
    if reason := missing_lfw():
        pytest.skip(reason)
    path = onnx_trunk()
    if path is None:
        pytest.skip("mobilefacenet.onnx absent: run `python -m service.models fetch`")
    import onnxruntime as ort

    x = face_batch(112)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ref = np.concatenate([sess.run(None, {sess.get_inputs()[0].name: x[i : i + 1]})[0] for i in range(len(x))])
    with torch.no_grad():
        out = trunk(torch.from_numpy(x)).numpy()
    assert np.abs(out - ref).max() <= 1e-4


def test_scan_conv_starts_as_the_conv_it_replaces() -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
    scan = ScanConv2d.from_conv(conv)
    x = torch.randn(2, 8, 9, 9)
    assert torch.allclose(scan(x), conv(x), atol=1e-6)


@pytest.mark.parametrize("r", RESOLUTIONS)
def test_fused_equals_unfused_on_random_inputs(random_trunk: MobileFaceNet, r: int) -> None:
    net = _perturbed_scan(random_trunk, r)
    fused = net.fuse()
    assert not any(isinstance(m, ScanConv2d | torch.nn.BatchNorm2d) for m in fused.branch.modules())
    x = torch.rand(8, 3, r, r, generator=torch.Generator().manual_seed(r)) * 2 - 1  # the normalised pixel range
    with torch.no_grad():
        assert (fused(x) - net(x)).abs().max().item() <= 1e-5


@pytest.mark.parametrize("r", RESOLUTIONS)
def test_fused_equals_unfused_on_real_faces(trunk: MobileFaceNet, r: int) -> None:
    if reason := missing_lfw():
        pytest.skip(reason)
    net = _perturbed_scan(trunk, r)
    x = torch.from_numpy(face_batch(r))
    with torch.no_grad():
        assert (net.fuse()(x) - net(x)).abs().max().item() <= 1e-5


@pytest.mark.parametrize("r", RESOLUTIONS)
def test_fused_scan_has_the_plain_architecture(random_trunk: MobileFaceNet, r: int) -> None:
    scan = _perturbed_scan(random_trunk, r).fuse()
    plain = BranchNet(random_trunk, r, "plain").fuse()
    assert count_params(scan) == count_params(plain)
    assert count_macs(scan, (1, 3, r, r)) == count_macs(plain, (1, 3, r, r))
    shapes = {k: tuple(v.shape) for k, v in scan.state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in plain.state_dict().items()}
    # the whole model folded too (the trunk's BN as well) still matches
    assert count_params(fuse_model(scan)) == count_params(fuse_model(plain))
    # and the unfused training form is bigger (k, k_i and t per SCAN conv, separate BN)
    assert count_params(_perturbed_scan(random_trunk, r).branch) > count_params(scan.branch)


def test_trunk_fold_is_exact_enough(random_trunk: MobileFaceNet) -> None:
    x = torch.rand(4, 3, 112, 112) * 2 - 1
    with torch.no_grad():
        assert (fuse_model(random_trunk)(x) - random_trunk(x)).abs().max().item() <= 1e-5


def test_branch_is_a_strided_copy_of_the_trunk(random_trunk: MobileFaceNet) -> None:
    net = BranchNet(random_trunk, 14, "plain")
    assert all(m.stride == (1, 1) for m in net.branch.modules() if isinstance(m, torch.nn.Conv2d))
    assert all(p.requires_grad for p in net.branch.parameters())
    assert not any(p.requires_grad for p in net.trunk.parameters())
    with torch.no_grad():
        feat = net.forward_features(torch.zeros(1, 3, 14, 14))
        ref = random_trunk.forward_units(torch.zeros(1, 3, 112, 112), 0, net.implant)
    assert feat.shape == ref.shape == (1, 128, 14, 14)


def test_scale_loss_trains_only_its_own_scales(random_trunk: MobileFaceNet) -> None:
    net = _perturbed_scan(random_trunk, 28).train()
    set_scale_loss(net, True)
    x = torch.rand(2, 3, 28, 28) * 2 - 1
    net(x)
    layers = [m for m in net.branch.modules() if isinstance(m, ScanConv2d)]
    target = layers[1]
    assert target.last_scale_loss is not None
    target.last_scale_loss.backward()
    for name, p in net.named_parameters():
        if p is target.scale:
            assert p.grad is not None and p.grad.abs().sum() > 0, "the layer's own scales get the gradient"
        else:
            assert p.grad is None or p.grad.abs().sum() == 0, f"{name} must not be trained by this scale loss"
    # the summed loss reaches every layer's scales and nothing else
    net.zero_grad(set_to_none=True)
    net(x)
    scale_loss_of(net).backward()
    scales = {id(m.scale) for m in layers}
    for name, p in net.named_parameters():
        if id(p) in scales:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None or p.grad.abs().sum() == 0, name


@pytest.mark.parametrize("r", [28, 14, 7])
def test_direct_alignment_matches_the_training_geometry(r: int) -> None:
    if reason := missing_models() or missing_lfw():
        pytest.skip(reason)
    from evaluation.lfw import images_dir
    from service.imaging.align import align_face
    from training.config import lfw_dir
    from training.data.degrade import downsample
    from training.data.lfw_crops import main_face_landmarks, offline_faces
    from training.testing import SAMPLE_IMAGES

    faces = offline_faces()  # the service's face path, as the training crops use it
    diffs = []
    for name in SAMPLE_IMAGES:
        rgb, lm = main_face_landmarks(faces, images_dir(lfw_dir()) / name, name)
        assert lm is not None
        direct = align_face(rgb, lm, r).astype(np.float64)
        diffs.append(np.abs(direct - downsample(align_face(rgb, lm, 112), r)).mean())
    # the geometry contract (docs/training.md): with the half-pixel offset in `template_for` the mean difference is
    # 0.8 / 1.8 / 2.7 grey levels at 28 / 14 / 7; without it 9 / 14 / 20
    assert float(np.mean(diffs)) <= 4.0

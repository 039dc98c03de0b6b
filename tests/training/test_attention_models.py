"""Attention implanted in the pretrained trunk: before fine-tuning the network is exactly the trunk (on real
faces), the trunk's weights keep their names, and the implanted network exports to ONNX equal to PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training needs PyTorch: pip install .[train]")
torch.set_num_threads(1)

from training.config import trunk_weights  # noqa: E402
from training.data.degrade import normalise  # noqa: E402
from training.flops import count_macs, count_params  # noqa: E402
from training.layers.sranet import SelfResidualAttention  # noqa: E402
from training.models.attention import DEFAULT_SRANET_BLOCKS, residual_blocks, sranet  # noqa: E402
from training.models.mobilefacenet import MobileFaceNet, load_trunk  # noqa: E402
from training.onnx_utils import export_onnx, run, session  # noqa: E402
from training.testing import missing_lfw, missing_models, real_faces  # noqa: E402


def test_sranet_blocks_go_on_residual_bottlenecks_only() -> None:
    net = MobileFaceNet()
    assert residual_blocks(net) == [1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 13, 14]
    assert set(DEFAULT_SRANET_BLOCKS) <= set(residual_blocks(net))
    with pytest.raises(ValueError):
        sranet(blocks=(5,))  # a stride-2 bottleneck: no residual to add to
    model = sranet()
    implanted = [i for i, b in enumerate(model.features) if isinstance(b.conv[-1], SelfResidualAttention)]
    assert implanted == list(DEFAULT_SRANET_BLOCKS)
    assert count_params(model) > count_params(net)
    assert count_macs(model.eval(), (1, 3, 112, 112)) > count_macs(net.eval(), (1, 3, 112, 112))


@pytest.mark.parametrize("parts", [(True, True), (True, False), (False, True)])
def test_before_fine_tuning_the_network_is_exactly_the_trunk(parts: tuple[bool, bool]) -> None:
    if reason := missing_models() or missing_lfw():
        pytest.skip(reason)
    trunk = load_trunk(trunk_weights())
    model = sranet(trunk_weights(), channel=parts[0], spatial=parts[1]).eval()
    trunk_keys = set(trunk.state_dict())
    assert trunk_keys <= set(model.state_dict())  # every trunk weight under its own name
    assert all(".conv." in k for k in set(model.state_dict()) - trunk_keys)  # the rest is the implanted blocks
    x = torch.from_numpy(normalise(real_faces()))
    with torch.no_grad():
        assert torch.equal(model(x), trunk(x))


def test_implanted_network_exports_equal_to_pytorch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = sranet()
    with torch.no_grad():  # as after fine-tuning: the residual terms are no longer zero
        for module in model.modules():
            if isinstance(module, SelfResidualAttention):
                for block in module:
                    block.bn.weight.fill_(0.3)
    model.eval()
    path = export_onnx(model, tmp_path / "sranet.onnx", (3, 112, 112))
    x = np.random.default_rng(0).standard_normal((2, 3, 112, 112)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(run(session(path), x), expected, atol=1e-4)

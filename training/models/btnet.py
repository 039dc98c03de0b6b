"""BTNet (Branch-to-Trunk network): one frozen trunk plus a small trainable branch per input resolution.

For resolution r the branch is a copy of the trunk units that come before the trunk stage of spatial size r
(`implant_unit(r)`), every stride set to 1 so that they run on the r x r input at full resolution; its output is
handed to the trunk at that stage and the rest of the trunk (the "tail") is shared and frozen. r = 56 -> conv1;
r = 28 -> conv1, dw_conv, features.0; r = 14 -> ... features.5; r = 7 -> ... features.12. With `conv="scan"`
every conv of 3 x 3 or larger in the branch (depthwise ones included) is a SCAN conv; `conv="plain"` keeps
`nn.Conv2d` (the ablation).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from training.layers.fuse import fuse_model
from training.layers.scan_conv import convert_to_scan
from training.models.mobilefacenet import MobileFaceNet, implant_unit, unit_name


def _stride_one(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            m.stride = (1, 1)


class BranchNet(nn.Module):
    """The resolution-r path: branch (trainable) -> trunk tail (frozen). N x 3 x r x r -> N x 128."""

    def __init__(self, trunk: MobileFaceNet, resolution: int, conv: str = "scan") -> None:
        super().__init__()
        if conv not in ("scan", "plain"):
            raise ValueError(f"conv must be 'scan' or 'plain', not {conv!r}")
        self.resolution = resolution
        self.implant = implant_unit(resolution)
        self.conv = conv
        self.branch = nn.Sequential(*[copy.deepcopy(trunk.unit(i)) for i in range(self.implant)])
        _stride_one(self.branch)
        for p in self.branch.parameters():
            p.requires_grad_(True)
        if conv == "scan":
            convert_to_scan(self.branch)
        self.trunk = trunk
        for p in self.trunk.parameters():
            p.requires_grad_(False)

    @property
    def implant_name(self) -> str:
        return unit_name(self.implant)

    def train(self, mode: bool = True) -> BranchNet:
        super().train(mode)
        self.trunk.eval()  # the trunk is frozen, BatchNorm statistics included
        return self

    def branch_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.branch.parameters() if p.requires_grad]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The branch output: what is implanted into the trunk (C x r x r)."""
        return self.branch(x)

    def forward_tail(self, feat: torch.Tensor) -> torch.Tensor:
        return self.trunk.forward_units(feat, self.implant)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_tail(self.forward_features(x))

    def fuse(self) -> BranchNet:
        """The inference form: an eval-mode copy whose branch has every SCAN conv collapsed to one `nn.Conv2d`
        and its BatchNorm folded. The frozen trunk tail is left as it is (the ONNX exporter folds its BN), so the
        fused and unfused paths differ only by the branch's rounding."""
        fused = copy.deepcopy(self)
        fused.branch = fuse_model(self.branch)  # type: ignore[assignment]
        fused.eval()
        for p in fused.parameters():
            p.requires_grad_(False)
        return fused


class TrunkSegment(nn.Module):
    """Units [start, stop) of a trunk as a module of its own (for the split Triton pieces)."""

    def __init__(self, trunk: MobileFaceNet, start: int, stop: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.start, self.stop = start, stop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk.forward_units(x, self.start, self.stop)


class BranchOnly(nn.Module):
    """Just the branch of a `BranchNet` (N x 3 x r x r -> implant feature)."""

    def __init__(self, net: BranchNet) -> None:
        super().__init__()
        self.branch = net.branch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.branch(x)

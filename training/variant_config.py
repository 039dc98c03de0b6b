"""The attention embedders' fine-tuning runs as data: one JSON file per variant in `training/variants/` (its
method and loss) plus `schedule.json`, the schedule every variant and its control share (identities, steps,
batch, optimiser, distillation weight, augmentation, seeds), so no row of a table gets another schedule.

`load_variant("sranet")` reads and validates both (unknown keys are errors) into one `VariantConfig`, which a
checkpoint carries; `build_model` makes the network: the pretrained trunk for the control, the trunk with the
method's modules implanted (identity at initialisation) for a variant.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

VARIANTS_DIR = Path(__file__).resolve().parent / "variants"
SCHEDULE_FILE = "schedule.json"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AugmentSpec(Strict):
    flip_prob: float = Field(0.5, ge=0, le=1)
    low_res_prob: float = Field(0.3, ge=0, le=1)
    occlusion_prob: float = Field(0.3, ge=0, le=1)


class Schedule(Strict):
    identities: str = "peopleDevTrain.txt"
    min_images_per_identity: int = Field(2, ge=1)
    steps: int = Field(ge=1)
    batch_size: int = Field(ge=2)
    lr: float = Field(gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    warmup_steps: int = Field(0, ge=0)
    distill_weight: float = Field(1.0, ge=0, description="weight of the embedding distillation to the frozen trunk")
    train_from: str = Field("conv1", description="the first trained unit of the network; the units before it stay "
                            "frozen (weights and BatchNorm statistics) and run without gradients")
    new_module_lr_scale: float = Field(1.0, gt=0, description="learning-rate factor of the parameters the method "
                                       "adds (not in the trunk)")
    seeds: list[int] = Field(min_length=1)
    augment: AugmentSpec = AugmentSpec()


class ControlSpec(Strict):
    """No method: the trunk's own architecture, fine-tuned."""

    kind: Literal["none"]


class SRANetSpec(Strict):
    kind: Literal["sranet"]
    channel: bool = True
    spatial: bool = True
    pool: bool = True
    reduction: int = Field(16, ge=1)
    blocks: list[int] | None = None  # default: the method's own choice (training.models.attention)


class HPDASpec(Strict):
    kind: Literal["hpda"]
    scales: list[int] = Field([7, 5, 3], min_length=1, description="pyramid sizes of the 7 x 7 maps, finest first")
    branches: int = Field(3, ge=1, description="local branches (attention masks) per scale")
    reduction: int = Field(16, ge=1, description="channel reduction of the local attention networks")
    fusion: Literal["hbp", "concat"] = "hbp"
    projection: int = Field(256, ge=1, description="d, the projection size of the layer fusion")
    local_dim: int = Field(128, ge=1)
    margin: float = Field(1.0, gt=0, description="t of the divergence loss")
    diverse_weight: float = Field(1.0, ge=0, description="weight of the divergence loss (0: no diverse learning)")


class ARFaceSpec(Strict):
    kind: Literal["arface"]
    policy: Literal["learned", "random"] = Field("learned", description="the Attention-Net, or uniform random masks "
                                                 "at training and the whole face at inference (PickPatch style)")
    patch_radius: int = Field(30, ge=1, description="half the side of each landmark patch, in pixels of the crop")
    num_layers: int = Field(3, ge=0, le=15, description="bottlenecks drawn per batch for the feature-map mask")
    layer_prob: float = Field(0.5, ge=0, le=1, description="probability that a drawn bottleneck is masked")
    policy_lr: float = Field(1e-3, gt=0, description="Adam learning rate of the Attention-Net")
    baseline_momentum: float = Field(0.9, ge=0, lt=1, description="moving average of the reward baseline")


MethodSpec = Annotated[ControlSpec | SRANetSpec | HPDASpec | ARFaceSpec, Field(discriminator="kind")]


class LossSpec(Strict):
    kind: Literal["arcface", "am-softmax"]
    s: float = Field(gt=0)
    m: float = Field(ge=0)


class VariantConfig(Strict):
    name: str
    description: str = ""
    method: MethodSpec
    loss: LossSpec
    schedule: Schedule


def variant_names(folder: Path = VARIANTS_DIR) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.json") if p.name != SCHEDULE_FILE)


def load_variant(name_or_path: str | Path, folder: Path = VARIANTS_DIR) -> VariantConfig:
    """A variant by name (a file in `folder`) or path, with the shared schedule of its folder."""
    path = Path(name_or_path)
    if path.suffix != ".json":
        path = folder / f"{name_or_path}.json"
    data: dict[str, Any] = json.loads(path.read_text())
    schedule = json.loads((path.parent / SCHEDULE_FILE).read_text())
    if "schedule" in data:
        raise ValueError(f"{path}: the schedule is shared, in {SCHEDULE_FILE}, not per variant")
    return VariantConfig.model_validate({**data, "schedule": schedule})


def build_model(cfg: VariantConfig, trunk_weights: Path | None) -> Any:
    """The network of a variant (a `MobileFaceNet`), from the pretrained trunk when `trunk_weights` is given."""
    import torch

    from training.models import arface, hpda
    from training.models.attention import DEFAULT_SRANET_BLOCKS, sranet
    from training.models.mobilefacenet import MobileFaceNet

    m = cfg.method
    if isinstance(m, SRANetSpec):
        blocks = tuple(m.blocks) if m.blocks is not None else DEFAULT_SRANET_BLOCKS
        return sranet(trunk_weights, blocks, channel=m.channel, spatial=m.spatial, pool=m.pool,
                      reduction=m.reduction)
    if isinstance(m, HPDASpec):
        net = hpda.HPDANet(m.scales, m.branches, m.reduction, m.fusion, m.projection, m.local_dim, m.margin,
                           m.diverse_weight)
        return net if trunk_weights is None else hpda.load_trunk(net, trunk_weights)
    if isinstance(m, ARFaceSpec):
        ar = arface.ARFaceNet(m.policy, m.patch_radius, m.num_layers, m.layer_prob, m.baseline_momentum)
        return ar if trunk_weights is None else arface.load_trunk(ar, trunk_weights)
    trunk = MobileFaceNet()
    if trunk_weights is not None:
        trunk.load_state_dict(torch.load(trunk_weights, map_location="cpu", weights_only=True), strict=True)
    return trunk

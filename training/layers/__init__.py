"""Building blocks: the scale-attention conv and the fusion of SCAN convs and BatchNorm into plain convs."""

from training.layers.fuse import fuse_model
from training.layers.scan_conv import ScanConv2d, scale_loss_of

__all__ = ["ScanConv2d", "fuse_model", "scale_loss_of"]

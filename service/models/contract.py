"""Constants of the contract between `training/` and `service/`, stated once.

The service reads everything about a particular model from `models/manifest.json`; what is fixed for every
embedder AnyFace builds or serves (the trunk's resolution, input normalisation, the BTNet family name, the tensor
names of exported and Triton models) lives here, and both sides import it.
"""

from __future__ import annotations

TRUNK_NAME = "mobilefacenet"  # the manifest name of the service's default trunk embedder
TRUNK_RESOLUTION = 112  # face crops the trunk embeds: 112 x 112, aligned to the ArcFace template
EMBEDDING_SIZE = 128  # the trunk's (and every branch's) embedding size
INPUT_MEAN = 127.5  # embedder input: (pixel - INPUT_MEAN) / INPUT_STD, RGB, NCHW
INPUT_STD = 128.0
BRANCH_FAMILY = "btnet"  # manifest family of the multi-resolution branches, named `btnet_r{r}`
INPUT_TENSOR = "input"  # input tensor of every exported embedder and Triton model
OUTPUT_TENSOR = "embedding"  # output tensor of every exported embedder and Triton model


def branch_name(resolution: int) -> str:
    """The manifest and Triton name of the branch serving `resolution`-pixel faces."""
    return f"{BRANCH_FAMILY}_r{resolution}"

"""The pinned pretrained artifacts: file name, sha256, upstream URL and how the service feeds each one."""

from __future__ import annotations

from dataclasses import dataclass

from service.models.manifest import ModelEntry

PIXAMATCH = "https://github.com/darzhz/pixamatch/raw/7cc795413024ba57a193a8fa503968af09442a17/models"


@dataclass(frozen=True)
class Artifact:
    """A file we download (or copy from the mirror) and check byte for byte."""

    name: str
    file: str
    sha256: str
    url: str
    entry: ModelEntry


YUNET = Artifact(
    name="yunet",
    file="face_detection_yunet_2023mar.onnx",
    sha256="8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
    url="https://github.com/opencv/opencv_zoo/raw/main/models/face_detection_yunet/face_detection_yunet_2023mar.onnx",
    entry=ModelEntry(
        role="detector", family="yunet", file="face_detection_yunet_2023mar.onnx",
        sha256="8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
        color_order="BGR", mean=0.0, std=1.0, dynamic_batch=False,
        source="opencv_zoo face_detection_yunet (2023mar)", license="MIT",
    ),
)

SCRFD = Artifact(
    name="scrfd",
    file="scrfd_2.5g_bnkps.onnx",
    sha256="bc24bb349491481c3ca793cf89306723162c280cb284c5a5e49df3760bf5c2ce",
    url=f"{PIXAMATCH}/scrfd_2.5g_bnkps.onnx",
    entry=ModelEntry(
        role="detector", family="scrfd", file="scrfd_2.5g_bnkps.onnx",
        sha256="bc24bb349491481c3ca793cf89306723162c280cb284c5a5e49df3760bf5c2ce",
        color_order="RGB", mean=127.5, std=128.0, dynamic_batch=False,
        source="InsightFace model zoo, SCRFD-2.5G with keypoints", license="InsightFace: non-commercial research only",
    ),
)

MOBILEFACENET_ORIGINAL = Artifact(
    name="mobilefacenet_original",
    file="mobilefacenet.onnx",
    sha256="e72a5710cce378dc46472b6b845cb90647634f2738d8c3e581735cf195b9866f",
    url=f"{PIXAMATCH}/mobilefacenet.onnx",
    entry=ModelEntry(
        role="weights", family="mobilefacenet", file="mobilefacenet.onnx",
        sha256="e72a5710cce378dc46472b6b845cb90647634f2738d8c3e581735cf195b9866f",
        input_size=(112, 112), color_order="RGB", mean=127.5, std=128.0, embedding_size=128,
        resolution=112, dynamic_batch=False,
        source="foamliu/MobileFaceNet weights (refined MS-Celeb-1M), ONNX export with batch fixed to 1",
        license="none stated upstream: research use",
        notes="kept for reference; the service runs the dynamic-batch copy `mobilefacenet`",
    ),
)

MOBILEFACENET_STATE_DICT = Artifact(
    name="mobilefacenet_state_dict",
    file="mobilefacenet_state_dict.pt",
    sha256="90a00ba1d8b0b688af3deb731ed53dca582e6106805d1bc3cfdef55f570493f4",
    url=f"{PIXAMATCH}/mobilefacenet.pt",
    entry=ModelEntry(
        role="weights", family="mobilefacenet", file="mobilefacenet_state_dict.pt",
        sha256="90a00ba1d8b0b688af3deb731ed53dca582e6106805d1bc3cfdef55f570493f4",
        source="foamliu/MobileFaceNet PyTorch state_dict (BatchNorm unfused)", license="none stated upstream",
        notes="the BTNet trunk that training/ loads",
    ),
)

ARTIFACTS: tuple[Artifact, ...] = (YUNET, SCRFD, MOBILEFACENET_ORIGINAL, MOBILEFACENET_STATE_DICT)

# The service's default embedder: MobileFaceNet with its batch dimension made dynamic (see dynamic_batch.py).
EMBEDDER_NAME = "mobilefacenet"
EMBEDDER_FILE = "mobilefacenet_dynamic.onnx"

# Cosine-similarity thresholds calibrated on LFW pairsDevTrain.txt through the full service pipeline
# (`python -m bench.calibrate`, see docs/thresholds.md).
EMBEDDER_THRESHOLDS: dict[str, float] = {"best_accuracy": 0.2744, "far_1e-3": 0.3908}


def embedder_entry(sha256: str) -> ModelEntry:
    return MOBILEFACENET_ORIGINAL.entry.model_copy(
        update={
            "role": "embedder",
            "file": EMBEDDER_FILE,
            "sha256": sha256,
            "dynamic_batch": True,
            "thresholds": dict(EMBEDDER_THRESHOLDS),
            "notes": "mobilefacenet.onnx with the batch dimension made dynamic; equal to it within 1e-4",
        }
    )

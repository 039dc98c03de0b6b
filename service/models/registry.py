"""The pinned pretrained artifacts: file name, sha256, upstream URL and how the service feeds each one.

Also the manifest entries of the files the fetch step derives from them: the dynamic-batch embedder and the two
landmark models (`face_mesh` converted from TFLite, `onet` built from its torch state dict, read without torch).
"""

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
    url: str | None  # None: mirror only (no upstream copy of this exact file); `origin` says where it comes from
    entry: ModelEntry
    origin: str = ""


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

FACE_MESH_TFLITE = Artifact(
    name="face_mesh_tflite",
    file="face_landmark.tflite",
    sha256="1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814",
    url="https://storage.googleapis.com/mediapipe-assets/face_landmark.tflite",
    entry=ModelEntry(
        role="weights", family="face_mesh", file="face_landmark.tflite",
        sha256="1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814",
        input_size=(192, 192), layout="NHWC", color_order="RGB", mean=0.0, std=255.0, dynamic_batch=False,
        source="MediaPipe face mesh (face_landmark.tflite, fp16 weights)", license="Apache-2.0",
        notes="the source of `face_mesh` (face_mesh.onnx), converted by service/models/tflite_to_onnx.py",
    ),
)

# facenet-pytorch's O-Net state dict, a torch file in the legacy (pre-1.6, non-zip) pickle layout. The fetch step
# reads its tensors without torch (torch_state_dict.py) to build `onet`.
ONET_UPSTREAM_PT = "https://github.com/timesler/facenet-pytorch/raw/v2.6.0/data/onet.pt"
ONET_STATE_DICT = Artifact(
    name="onet_state_dict",
    file="mtcnn_onet.pt",
    sha256="165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d",
    url=ONET_UPSTREAM_PT,
    entry=ModelEntry(
        role="weights", family="onet", file="mtcnn_onet.pt",
        sha256="165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d",
        input_size=(48, 48), color_order="RGB", mean=127.5, std=128.0, dynamic_batch=False,
        source=f"facenet-pytorch 2.6.0 O-Net state dict ({ONET_UPSTREAM_PT}; also in the facenet-pytorch 2.6.0 "
               "wheel as facenet_pytorch/data/onet.pt)",
        license="MIT (facenet-pytorch)",
        notes="the source of `onet` (mtcnn_onet.onnx), built by service/models/onet_onnx.py; a torch file in the "
              "legacy non-zip layout, read without torch by service/models/torch_state_dict.py",
    ),
)

ARTIFACTS: tuple[Artifact, ...] = (
    YUNET, SCRFD, MOBILEFACENET_ORIGINAL, MOBILEFACENET_STATE_DICT, FACE_MESH_TFLITE, ONET_STATE_DICT,
)

# Manifest entries of artifacts the fetch step no longer installs: removed from the manifest by the next fetch.
# `onet_npz` (mtcnn_onet.npz): the O-Net tensors saved with numpy, mirror-only; replaced by `onet_state_dict`.
RETIRED_ARTIFACTS: tuple[str, ...] = ("onet_npz",)

# The service's default embedder: MobileFaceNet with its batch dimension made dynamic (see dynamic_batch.py).
EMBEDDER_NAME = "mobilefacenet"
EMBEDDER_FILE = "mobilefacenet_dynamic.onnx"

# Cosine-similarity thresholds calibrated on LFW pairsDevTrain.txt through the full service pipeline
# (`python -m bench.calibrate`, see docs/thresholds.md).
EMBEDDER_THRESHOLDS: dict[str, float] = {"best_accuracy": 0.3089, "far_1e-3": 0.3493}


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


# The landmark models the fetch step derives (role "landmarks"): manifest name -> file.
FACE_MESH_NAME = "face_mesh"
FACE_MESH_FILE = "face_mesh.onnx"
ONET_NAME = "onet"
ONET_FILE = "mtcnn_onet.onnx"


def face_mesh_entry(sha256: str) -> ModelEntry:
    return ModelEntry(
        role="landmarks", family="face_mesh", file=FACE_MESH_FILE, sha256=sha256,
        input_size=(192, 192), layout="NHWC", color_order="RGB", mean=0.0, std=255.0, dynamic_batch=True,
        source="MediaPipe face mesh face_landmark.tflite, converted to ONNX at fetch time (tflite_to_onnx.py)",
        license="Apache-2.0",
        notes=(
            "input `image` N x 192 x 192 x 3 float32 RGB, a square crop of the face turned upright; outputs "
            "`landmarks` N x 1404 (468 x (x, y, z) in the crop's pixels) and `presence` N x 1 (face-presence "
            "logit). Input range [0, 1]: on 200 LFW faces it places 5 mesh points closer to SCRFD's than [-1, 1] "
            "does (normalised error 0.044 vs 0.049, better on 75% of faces) and keeps every non-face below "
            "logit 0 (max -2.5; [-1, 1]: +4.3). Equal to LiteRT within 2e-4 px on 40 LFW faces"
        ),
    )


def onet_entry(sha256: str) -> ModelEntry:
    return ModelEntry(
        role="landmarks", family="onet", file=ONET_FILE, sha256=sha256,
        input_size=(48, 48), layout="NCHW", color_order="RGB", mean=127.5, std=128.0, dynamic_batch=True,
        source=f"MTCNN O-Net of facenet-pytorch 2.6.0 ({ONET_UPSTREAM_PT}), built as ONNX at fetch time "
               "from mtcnn_onet.pt (onet_onnx.py, read without torch)",
        license="MIT (facenet-pytorch)",
        notes=(
            "input `image` N x 3 x 48 x 48 float32 RGB (rows = y), a square crop around the face box; outputs "
            "`points` N x 10 (x of left eye, right eye, nose, left and right mouth corner as seen in the image, "
            "then their y, in crop units [0, 1]), `box` N x 4 (box offsets) and `score` N x 1 (face probability). "
            "Equal to facenet-pytorch's ONet (torch) within 1.2e-7 on 40 LFW faces"
        ),
    )

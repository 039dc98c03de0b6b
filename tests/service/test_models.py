"""The model-fetch step and the dynamic-batch embedder, on the real pinned files."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from service.detection.yunet import YuNetDetector
from service.embedding.preprocess import to_tensor
from service.imaging.align import align_face
from service.models.fetch import FetchError, fetch_all
from service.models.manifest import load_manifest, sha256_of
from service.models.registry import ARTIFACTS, EMBEDDER_NAME, MOBILEFACENET_ORIGINAL
from tests.conftest import people_with_photos


def test_fetch_installs_pinned_files_and_manifest(model_dir: Path) -> None:
    manifest = load_manifest(model_dir)
    for artifact in ARTIFACTS:
        assert sha256_of(model_dir / artifact.file) == artifact.sha256
    embedder = manifest.models[EMBEDDER_NAME]
    assert embedder.role == "embedder" and embedder.dynamic_batch and embedder.resolution == 112
    assert sha256_of(model_dir / embedder.file) == embedder.sha256
    assert {"best_accuracy", "far_1e-3"} <= set(embedder.thresholds)
    assert manifest.models["yunet"].role == "detector"


def test_fetch_without_mirror_or_network_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="ANYFACE_MODEL_MIRROR"):
        fetch_all(tmp_path / "models", tmp_path / "empty-mirror")


def test_fetch_rejects_a_corrupted_mirror_file(model_dir: Path, tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for artifact in ARTIFACTS:
        shutil.copy(model_dir / artifact.file, mirror / artifact.file)
    with (mirror / ARTIFACTS[0].file).open("r+b") as fh:  # flip one byte
        first = fh.read(1)
        fh.seek(0)
        fh.write(bytes([first[0] ^ 0xFF]))
    with pytest.raises(FetchError, match="wrong sha256"):
        fetch_all(tmp_path / "models", mirror)
    assert not (tmp_path / "models" / ARTIFACTS[0].file).exists()


def test_dynamic_batch_embedder_equals_the_original(model_dir: Path, lfw_dir: Path) -> None:
    detector = YuNetDetector(model_dir / "face_detection_yunet_2023mar.onnx", 0.6, 1280)
    crops = []
    for person in people_with_photos(lfw_dir, minimum=1, limit=12):
        image = np.asarray(Image.open(lfw_dir / "images_deepfunneled" / person / f"{person}_0001.jpg").convert("RGB"))
        face = max(detector.detect(image), key=lambda f: f.size)
        crops.append(align_face(image, face.landmarks, 112))
    entry = load_manifest(model_dir).models[EMBEDDER_NAME]
    batch = to_tensor(np.stack(crops), entry)
    original = ort.InferenceSession(str(model_dir / MOBILEFACENET_ORIGINAL.file), providers=["CPUExecutionProvider"])
    dynamic = ort.InferenceSession(str(model_dir / entry.file), providers=["CPUExecutionProvider"])
    reference = np.concatenate([original.run(None, {"input": x[None]})[0] for x in batch])
    batched = dynamic.run(None, {dynamic.get_inputs()[0].name: batch})[0]
    assert batched.shape == (12, 128)
    assert float(np.abs(batched - reference).max()) <= 1e-4


def test_the_embedder_setting_picks_a_112_pixel_embedder_from_the_manifest() -> None:
    from service.embedding.backend import select_embedders
    from service.models.manifest import Manifest, ModelEntry

    def entry(family: str, resolution: int, **extra: str) -> ModelEntry:
        return ModelEntry(role="embedder", file=f"{family}{resolution}.onnx", sha256="0" * 64, family=family,
                          resolution=resolution, embedding_size=128, **extra)

    manifest = Manifest(models={"mobilefacenet": entry("", 112), "btnet_r14": entry("btnet", 14),
                                "sranet": entry("variant", 112, method="sranet", trunk="mobilefacenet")})
    assert sorted(select_embedders(manifest, "mobilefacenet", "btnet", use_branches=True)) == [14, 112]
    chosen = select_embedders(manifest, "sranet", "btnet", use_branches=False)
    assert list(chosen) == [112] and chosen[112][0] == "sranet"
    with pytest.raises(RuntimeError, match=r"'mobilefacenet', 'sranet'.*make variants"):
        select_embedders(manifest, "hpda", "btnet", use_branches=False)
    with pytest.raises(RuntimeError, match="serves 14-pixel faces"):
        select_embedders(manifest, "btnet_r14", "btnet", use_branches=False)

"""YuNet instances come from a bounded pool shared by the worker's threads (docs/memory.md): concurrent calls give
the same faces as one call at a time, and no more instances are made than allowed."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from service.detection.yunet import YuNetDetector
from service.imaging.decode import decode_image
from service.settings import DecodeLimits
from tests.conftest import lfw_photo, people_with_photos


def test_concurrent_calls_share_a_bounded_pool(model_dir: Path, lfw_dir: Path) -> None:
    detector = YuNetDetector(model_dir / "face_detection_yunet_2023mar.onnx", 0.6, 1280, instances=2)
    images = [decode_image(lfw_photo(lfw_dir, name).read_bytes(), DecodeLimits())
              for name in people_with_photos(lfw_dir, 1, 8)]
    one_at_a_time = [detector.detect(image) for image in images]
    with ThreadPoolExecutor(16) as pool:
        concurrent = list(pool.map(detector.detect, images * 4))
    assert detector.created == 2
    for expected, got in zip(one_at_a_time * 4, concurrent, strict=True):
        assert len(got) == len(expected) >= 1
        for a, b in zip(expected, got, strict=True):
            np.testing.assert_allclose(a.box, b.box, atol=1e-3)
            np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1e-3)

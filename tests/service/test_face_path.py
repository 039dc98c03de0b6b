"""The face path and the pipeline without models: a fake detector (faces we place), real PNG bytes made with
Pillow, and a fake embedding backend with known outputs."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest
from PIL import Image

from service.core.face_path import (
    AnalyzedImage,
    FaceFilter,
    FacePath,
    prominence,
    rank_by_prominence,
)
from service.core.pipeline import FacePipeline
from service.detection import DetectedFace, Detector
from service.embedding.backend import EmbeddingBackend
from service.embedding.router import Rule
from service.errors import InvalidImage, NoFace
from service.imaging.align import ARCFACE_TEMPLATE_112
from service.models.manifest import ModelEntry
from service.settings import BatchingSettings, DecodeLimits

RESOLUTIONS = [14, 28, 112]
NAMES = {14: "branch14", 28: "branch28", 112: "trunk"}
LIMITS = DecodeLimits(max_image_bytes=10_000_000, max_image_pixels=10_000_000, min_image_side=16)
ALL = FaceFilter(min_face_size=0, score_threshold=0.0, max_faces=100)


def face(x: float, y: float, size: float, score: float = 0.9, height: float | None = None) -> DetectedFace:
    """A face whose box starts at (x, y), with landmarks where the ArcFace template puts them in that box."""
    h = size if height is None else height
    box = np.array([x, y, x + size, y + h], dtype=np.float32)
    landmarks = (np.array([x, y]) + ARCFACE_TEMPLATE_112 / 112.0 * np.array([size, h])).astype(np.float32)
    return DetectedFace(box, landmarks, score)


class FakeDetector(Detector):
    """Returns the faces it was given (in the coordinates of the image it is handed) and records that image."""

    name = "fake"

    def __init__(self, faces: Sequence[DetectedFace], max_side: int = 4096) -> None:
        super().__init__(score_threshold=0.0, max_side=max_side)
        self.faces = list(faces)
        self.seen: list[tuple[int, ...]] = []

    def _detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        self.seen.append(rgb.shape)
        return list(self.faces)


def png(width: int = 400, height: int = 300) -> bytes:
    """A real PNG whose colour changes with the position (so crops of different places differ)."""
    ys, xs = np.mgrid[0:height, 0:width]
    pixels = np.stack([xs * 255 // width, ys * 255 // height, (xs * 7 + ys * 3) % 256], axis=-1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def path_with(faces: Sequence[DetectedFace], rule: Rule = "ceil") -> FacePath:
    return FacePath(FakeDetector(faces), LIMITS, RESOLUTIONS, NAMES, rule)


def boxes(faces: Sequence[DetectedFace]) -> list[list[float]]:
    return [[float(v) for v in f.box] for f in faces]


# --- filter, cap and ranking ------------------------------------------------------------------------------------


def test_filter_drops_low_scores_and_small_faces() -> None:
    keep = face(100, 100, 40, score=0.8)
    low_score = face(200, 100, 40, score=0.4)
    small = face(50, 50, 9, score=0.99)
    tall_narrow = face(300, 50, 5, score=0.9, height=20)  # size is the larger side: 20 px, kept
    flt = FaceFilter(min_face_size=10, score_threshold=0.5, max_faces=10)
    kept = flt.keep([keep, low_score, small, tall_narrow])
    assert kept == [keep, tall_narrow]
    # the thresholds themselves pass
    assert FaceFilter(min_face_size=40, score_threshold=0.8, max_faces=10).keep([keep]) == [keep]


def test_find_faces_applies_the_filter() -> None:
    faces = [face(100, 100, 40, 0.9), face(200, 100, 40, 0.3), face(20, 20, 6, 0.95)]
    _, kept = path_with(faces).find_faces(png(), "image", FaceFilter(min_face_size=8, score_threshold=0.5,
                                                                          max_faces=10))
    assert boxes(kept) == boxes(faces[:1])


def test_max_faces_caps_keeping_the_most_prominent() -> None:
    centre = face(170, 120, 60)  # centred in 400 x 300
    near = face(60, 40, 60)
    far = face(0, 0, 30)
    _, kept = path_with([far, near, centre]).find_faces(png(), "image", FaceFilter(0, 0.0, max_faces=2))
    assert boxes(kept) == boxes([centre, near])


def test_prominence_prefers_a_centred_face_over_a_larger_one_cut_off_at_the_border() -> None:
    width, height = 400, 300
    centred = face(170, 120, 60, score=0.7)
    cut_off = face(-50, 75, 150, score=0.99)  # bigger box, but a third of it is outside and it is off-centre
    assert prominence(cut_off, width, height) < prominence(centred, width, height)
    assert rank_by_prominence([cut_off, centred], width, height) == [centred, cut_off]
    # the area counted is the part inside the image
    assert prominence(face(-100, 100, 200), 200, 400) == pytest.approx(100 * 200 - 2 * (100**2 + 0**2))
    assert prominence(face(0, 0, 400, height=300), width, height) == pytest.approx(400 * 300)


def test_main_face_first_even_when_the_detector_ranks_it_lower() -> None:
    centred = face(170, 120, 60, score=0.7)
    cut_off = face(-50, 75, 150, score=0.99)
    result, _ = path_with([cut_off, centred]).analyze(png(), "image", ALL)
    assert boxes([f.face for f in result.faces]) == boxes([centred, cut_off])
    assert result.main_face("image").face.score == pytest.approx(0.7)
    assert (result.width, result.height) == (400, 300)


# --- routing and crops ------------------------------------------------------------------------------------------


def test_faces_are_routed_to_resolutions_and_cropped_at_them() -> None:
    tiny, small, exact, big = face(20, 20, 10), face(60, 20, 20), face(120, 20, 28), face(200, 100, 90)
    result, crops = path_with([tiny, small, exact, big]).analyze(png(), "image", ALL)
    by_size = {round(f.face.size): f for f in result.faces}
    assert {s: f.resolution for s, f in by_size.items()} == {10: 14, 20: 28, 28: 28, 90: 112}
    assert {s: f.branch for s, f in by_size.items()} == {10: "branch14", 20: "branch28", 28: "branch28",
                                                         90: "trunk"}
    assert len(crops) == len(result.faces)
    for f, crop in zip(result.faces, crops, strict=True):
        assert crop.shape == (f.resolution, f.resolution, 3)
        assert crop.dtype == np.uint8


@pytest.mark.parametrize(("rule", "expected"), [("ceil", 28), ("floor", 14), ("nearest", 14)])
def test_routing_rule_is_applied(rule: Rule, expected: int) -> None:
    result, crops = path_with([face(100, 100, 20)], rule=rule).analyze(png(), "image", ALL)
    assert result.faces[0].resolution == expected
    assert crops[0].shape == (expected, expected, 3)


def test_path_sorts_its_resolutions() -> None:
    path = FacePath(FakeDetector([]), LIMITS, [112, 14, 28], NAMES)
    assert path.resolutions == [14, 28, 112]
    assert path.route(face(0, 0, 20)) == 28


def test_crop_is_the_aligned_face() -> None:
    """Landmarks on the template of a box -> the crop is that box, resampled (here: a flat-coloured square)."""
    pixels = np.full((300, 400, 3), 20, dtype=np.uint8)
    pixels[100:212, 150:262] = (200, 60, 10)  # a 112 x 112 coloured square where the face is
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    result, crops = path_with([face(150, 100, 112)]).analyze(buf.getvalue(), "image", ALL)
    assert result.faces[0].resolution == 112
    inner = crops[0][8:-8, 8:-8].reshape(-1, 3)
    assert np.abs(inner.astype(int) - [200, 60, 10]).max() <= 2


def test_analyze_without_align_returns_no_crops() -> None:
    result, crops = path_with([face(100, 100, 20)]).analyze(png(), "image", ALL, align=False)
    assert len(result.faces) == 1 and crops == []
    assert result.faces[0].embedding is None


# --- main face --------------------------------------------------------------------------------------------------


def test_main_face_raises_no_face_naming_the_field() -> None:
    result, crops = path_with([]).analyze(png(), "probe", ALL)
    assert result.faces == [] and crops == []
    with pytest.raises(NoFace) as err:
        result.main_face("probe")
    assert err.value.code == "no_face"
    assert "probe" in err.value.message
    with pytest.raises(NoFace, match="reference"):
        AnalyzedImage(10, 10, []).main_face("reference")


def test_faces_filtered_away_also_mean_no_main_face() -> None:
    result, _ = path_with([face(100, 100, 20, score=0.2)]).analyze(png(), "image", FaceFilter(0, 0.5, 10))
    with pytest.raises(NoFace):
        result.main_face("image")


def test_main_face_crop() -> None:
    centred = face(170, 120, 60, score=0.6)
    cut_off = face(-50, 75, 150, score=0.99)
    path = path_with([cut_off, centred])
    crop = path.main_face_crop(png(), ALL, resolution=28)
    assert crop is not None and crop.shape == (28, 28, 3)  # the requested resolution, whatever the face size
    # it is the crop of the main face (the centred one), not of the first detection
    at_28 = path_with([centred]).main_face_crop(png(), ALL, resolution=28)
    assert at_28 is not None
    np.testing.assert_array_equal(crop, at_28)
    assert path_with([]).main_face_crop(png(), ALL, resolution=112) is None
    assert path_with([face(10, 10, 20, score=0.1)]).main_face_crop(png(), FaceFilter(0, 0.5, 10), 112) is None


def test_undecodable_upload_fails_with_the_field_before_detection() -> None:
    detector = FakeDetector([face(0, 0, 20)])
    path = FacePath(detector, LIMITS, RESOLUTIONS, NAMES)
    with pytest.raises(InvalidImage, match="probe"):
        path.analyze(b"definitely not an image", "probe", ALL)
    assert detector.seen == []


# --- detector base: downscaling --------------------------------------------------------------------------------


def test_detector_downscales_large_images_and_maps_boxes_back() -> None:
    # the fake finds a face at (50, 40) .. (100, 90) in the image it is handed, which is half size
    detector = FakeDetector([face(50, 40, 50, score=0.5), face(10, 10, 20, score=0.9)], max_side=200)
    image = np.zeros((300, 400, 3), dtype=np.uint8)
    faces = detector.detect(image)
    assert detector.seen == [(150, 200, 3)]
    assert [f.score for f in faces] == [0.9, 0.5]  # best score first
    np.testing.assert_allclose(faces[1].box, [100, 80, 200, 180])
    np.testing.assert_allclose(faces[1].landmarks, face(100, 80, 100).landmarks, atol=1e-4)
    assert faces[1].size == pytest.approx(100)


def test_detector_leaves_small_images_alone() -> None:
    original = face(50, 40, 50)
    detector = FakeDetector([original], max_side=400)
    faces = detector.detect(np.zeros((300, 400, 3), dtype=np.uint8))
    assert detector.seen == [(300, 400, 3)]
    np.testing.assert_array_equal(faces[0].box, original.box)


def test_face_path_routes_by_the_size_in_source_pixels() -> None:
    """A face the detector sees at 14 px in a half-size image is 28 px in the photo: it goes to the 28 branch."""
    detector = FakeDetector([face(50, 50, 14)], max_side=200)
    path = FacePath(detector, LIMITS, RESOLUTIONS, NAMES)
    result, crops = path.analyze(png(400, 300), "image", ALL)
    assert detector.seen == [(150, 200, 3)]
    assert result.faces[0].face.size == pytest.approx(28)
    assert result.faces[0].resolution == 28
    assert crops[0].shape == (28, 28, 3)


# --- FacePipeline end to end with a fake backend ----------------------------------------------------------------


class FakeBackend(EmbeddingBackend):
    """Embedding of a crop: a one-hot of its model's slot plus the crop's mean colour, so that both the model and
    the face can be told from it. Records every call."""

    name = "fake"
    DIM = 6

    def __init__(self, resolutions: Sequence[int]) -> None:
        self.models = {
            r: (NAMES[r], ModelEntry(role="embedder", file=f"{r}.onnx", sha256="0" * 64, embedding_size=self.DIM,
                                     resolution=r, layout="NHWC", std=255.0))
            for r in resolutions
        }
        self.calls: list[tuple[int, int]] = []

    def _run(self, resolution: int, tensor: np.ndarray) -> np.ndarray:
        self.calls.append((resolution, len(tensor)))
        out = np.zeros((len(tensor), self.DIM), dtype=np.float32)
        out[:, self.resolutions.index(resolution)] = 1.0
        out[:, 3:] = tensor.mean(axis=(1, 2)) * 0.1
        return out


def run_pipeline(pipeline: FacePipeline, data: bytes, embed: bool = True) -> AnalyzedImage:
    async def main() -> AnalyzedImage:
        return await asyncio.wait_for(pipeline.analyze(data, "image", ALL, embed=embed), 10)

    try:
        return asyncio.run(main())
    finally:
        pipeline.close()


def test_pipeline_embeds_each_face_with_the_model_of_its_resolution() -> None:
    faces = [face(20, 20, 10), face(60, 20, 12), face(100, 40, 20), face(170, 100, 80), face(300, 200, 60)]
    path = path_with(faces)
    backend = FakeBackend(RESOLUTIONS)
    pipeline = FacePipeline(path, backend, BatchingSettings(max_batch=32, max_batch_wait_ms=1))
    data = png()
    result = run_pipeline(pipeline, data)

    assert sorted(f.resolution for f in result.faces) == [14, 14, 28, 112, 112]
    # one model call per resolution, holding all of that resolution's faces
    assert sorted(backend.calls) == [(14, 2), (28, 1), (112, 2)]
    # the embedding of each face is the one its own model gives its own crop
    reference, crops = path.analyze(data, "image", ALL)
    assert boxes([f.face for f in reference.faces]) == boxes([f.face for f in result.faces])
    for f, crop in zip(result.faces, crops, strict=True):
        assert f.embedding is not None
        assert f.embedding.shape == (FakeBackend.DIM,)
        assert float(np.linalg.norm(f.embedding)) == pytest.approx(1.0, abs=1e-5)
        assert int(np.argmax(f.embedding[:3])) == RESOLUTIONS.index(f.resolution)
        np.testing.assert_allclose(f.embedding, backend.embed(f.resolution, crop[None])[0], atol=1e-6)
    # different faces of one resolution got different rows
    trunk = [f.embedding for f in result.faces if f.resolution == 112]
    assert trunk[0] is not None and trunk[1] is not None
    assert not np.allclose(trunk[0], trunk[1])


def test_pipeline_without_embed_leaves_embeddings_none_and_calls_no_model() -> None:
    backend = FakeBackend(RESOLUTIONS)
    pipeline = FacePipeline(path_with([face(100, 100, 20), face(200, 100, 90)]), backend, BatchingSettings())
    result = run_pipeline(pipeline, png(), embed=False)
    assert len(result.faces) == 2
    assert all(f.embedding is None for f in result.faces)
    assert backend.calls == []


def test_pipeline_without_faces_calls_no_model() -> None:
    backend = FakeBackend(RESOLUTIONS)
    pipeline = FacePipeline(path_with([]), backend, BatchingSettings())
    result = run_pipeline(pipeline, png())
    assert result.faces == []
    assert backend.calls == []


def test_pipeline_has_one_batcher_per_backend_resolution() -> None:
    backend = FakeBackend(RESOLUTIONS)
    pipeline = FacePipeline(path_with([]), backend, BatchingSettings(max_batch=5, max_batch_wait_ms=7))
    try:
        assert sorted(pipeline.batchers) == RESOLUTIONS
        assert all(b.max_batch == 5 and b.max_wait_s == pytest.approx(0.007) for b in pipeline.batchers.values())
    finally:
        pipeline.close()



class CountingPath(FacePath):
    """A face path that notes how many of its calls run at the same time."""

    def __init__(self) -> None:
        super().__init__(FakeDetector([face(100, 100, 40)]), LIMITS, RESOLUTIONS, NAMES)
        self.running = 0
        self.most = 0
        self._lock = threading.Lock()

    def analyze(self, data: bytes, field: str, flt: FaceFilter, align: bool = True, thumbnail: int | None = None
                ) -> tuple[AnalyzedImage, list[np.ndarray]]:
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            time.sleep(0.02)
            return super().analyze(data, field, flt, align, thumbnail)
        finally:
            with self._lock:
                self.running -= 1


@pytest.mark.parametrize("concurrency", [1, 3])
def test_pipeline_runs_at_most_its_concurrency_of_face_paths_at_once(concurrency: int) -> None:
    path = CountingPath()
    pipeline = FacePipeline(path, FakeBackend(RESOLUTIONS), BatchingSettings(), concurrency=concurrency)
    data = png()

    async def main() -> list[AnalyzedImage]:
        return await asyncio.wait_for(asyncio.gather(*(pipeline.analyze(data, "image", ALL) for _ in range(8))), 20)

    try:
        results = asyncio.run(main())
    finally:
        pipeline.close()
    assert len(results) == 8 and all(len(r.faces) == 1 and r.faces[0].embedding is not None for r in results)
    assert path.most == concurrency  # never more, and the slots are used

"""Memory of worst-case uploads (docs/memory.md): one decode holds no more than the estimate the decode budget
reserves for it (before: about 1.1 GB for a 170 KB RGBA PNG of 39.7 MP), a photo decoded reduced still reports
its faces in its own pixels, and a real worker under 8 concurrent worst-case uploads stays under the documented
bound and answers each with JSON: 2xx, 4xx or 503, never 500."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from bench.memory import MIXED, Upload, jpeg_progressive, mixed, png_rgba, proc_status_kib, tiff16, webp
from service.core.face_path import FaceFilter, FacePath
from service.detection import DetectedFace, Detector, build_detector
from service.imaging.align import ARCFACE_TEMPLATE_112
from service.models.manifest import load_manifest
from service.settings import DecodeLimits, DetectionSettings
from tests.conftest import REPO, ServiceProcess, lfw_photo

BOUND_MIB = 1280  # 8 worst-case uploads to one worker (docs/memory.md): 961-973 MiB measured with the face-path pool
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def worst_cases() -> dict[str, Upload]:
    return {"png_rgba": png_rgba(), "jpeg_progressive": jpeg_progressive(), "tiff16": tiff16()}


# --- one decode, in a fresh process -----------------------------------------------------------------------------

MEASURE = """
import io, json, re, sys
from pathlib import Path
from PIL import Image
from service.imaging.decode import decode, estimate_bytes, reduced_size
from service.settings import DecodeLimits

def kib(key):
    return int(re.search(rf"^{key}:\\s+(\\d+) kB", Path("/proc/self/status").read_text(), re.M).group(1))

data = Path(sys.argv[1]).read_bytes()
limits = DecodeLimits()
image = Image.open(io.BytesIO(data))
width, height = image.size
out = reduced_size(width, height, limits.max_decode_side)
if image.format in ("JPEG", "MPO"):
    image.draft(image.mode, out)
estimate = estimate_bytes(image, width, height, out) + len(data)
del image
before = kib("VmRSS")
decoded = decode(data, limits)
print(json.dumps({"held": (kib("VmHWM") - before) * 1024, "estimate": estimate, "shape": decoded.pixels.shape}))
"""


def measure_one_decode(upload: Upload, tmp_path: Path) -> dict[str, int]:
    path = tmp_path / upload[0]
    path.write_bytes(upload[1])
    done = subprocess.run([sys.executable, "-c", MEASURE, str(path)], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def test_one_decode_holds_at_most_its_estimate_and_far_less_than_before(worst_cases: dict[str, Upload],
                                                                        tmp_path: Path) -> None:
    """The budget only bounds memory if the estimate from the header is not below what a decode really holds.
    Before the fix one decode of the RGBA PNG held about 1.1 GB: full-size RGBA copies for the compositing."""
    for name, upload in [*worst_cases.items(), ("webp", webp(4000))]:
        result = measure_one_decode(upload, tmp_path)
        assert result["shape"] == [2560, 2560, 3] or name == "webp", name
        assert result["held"] <= result["estimate"], (name, result)
        if name != "webp":  # Pillow's WebP decoding alone holds 4 copies; it runs alone under the budget
            assert result["held"] < 300 * MIB, (name, result)


# --- coordinates of a photo decoded reduced ---------------------------------------------------------------------


class FixedDetector(Detector):
    """Finds one face at a fixed place of the image it is handed (records what it was handed)."""

    name = "fixed"

    def __init__(self, face: DetectedFace) -> None:
        super().__init__(score_threshold=0.0, max_side=10_000)
        self.face = face
        self.seen: list[tuple[int, ...]] = []

    def _detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        self.seen.append(rgb.shape)
        return [self.face]


def square_face(x: float, y: float, size: float) -> DetectedFace:
    box = np.array([x, y, x + size, y + size], dtype=np.float32)
    return DetectedFace(box, (np.array([x, y]) + ARCFACE_TEMPLATE_112 / 112.0 * size).astype(np.float32), 0.9)


def test_a_reduced_photo_reports_faces_in_its_own_pixels() -> None:
    """A 3000 x 1800 photo decoded at 1000 x 600: the detector sees the reduced image, the client gets the box,
    landmarks, size and image size of its photo; the crop is cut from the reduced image, routed by the face's
    size there (the resolution the crop really has)."""
    pixels = np.full((1800, 3000, 3), 30, dtype=np.uint8)
    pixels[300:636, 600:936] = (200, 60, 10)  # the face's box in the photo: (600, 300) .. (936, 636)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    detector = FixedDetector(square_face(200, 100, 112))  # the same place in the 1/3 image
    path = FacePath(detector, DecodeLimits(max_decode_side=1000), [14, 28, 112], {14: "b14", 28: "b28", 112: "t"})
    result, crops = path.analyze(buf.getvalue(), "image", FaceFilter(min_face_size=200, score_threshold=0.0,
                                                                       max_faces=5))
    assert detector.seen == [(600, 1000, 3)]
    assert (result.width, result.height) == (3000, 1800)
    face = result.faces[0]
    np.testing.assert_allclose(face.face.box, [600, 300, 936, 636], atol=1e-3)
    np.testing.assert_allclose(face.face.landmarks, square_face(600, 300, 336).landmarks, atol=1e-3)
    assert face.face.size == pytest.approx(336, abs=1e-3)  # min_face_size 200 applies to the photo's pixels
    assert face.resolution == 112 and crops[0].shape == (112, 112, 3)
    assert np.abs(crops[0][8:-8, 8:-8].astype(int) - [200, 60, 10]).max() <= 2
    # the offline callers get the image and the faces in the same (reduced) pixels, to align themselves
    image, kept = path.find_faces(buf.getvalue(), "image", FaceFilter(0, 0.0, 5))
    assert image.shape == (600, 1000, 3)
    np.testing.assert_allclose(kept[0].box, [200, 100, 312, 212], atol=1e-3)


def test_a_large_lfw_photo_is_found_where_it_is(model_dir: Path, lfw_dir: Path) -> None:
    """A real face in a 4000 x 4000 photo: decoded at 2560 (the default) it is reported where it is found when
    the photo is decoded whole (the detector sees the same 1280 image either way), in the photo's pixels."""
    detector = build_detector(DetectionSettings(), load_manifest(model_dir), model_dir)
    photo = Image.open(lfw_photo(lfw_dir, "Aaron_Peirsol")).convert("RGB")
    buf = io.BytesIO()
    photo.resize((4000, 4000), Image.Resampling.BICUBIC).save(buf, format="JPEG", quality=92)
    found = {}
    for side in (2560, 4000):
        path = FacePath(detector, DecodeLimits(max_decode_side=side), [112], {112: "trunk"})
        found[side], _ = path.analyze(buf.getvalue(), "image", FaceFilter(0, 0.5, 1), align=False)
        assert (found[side].width, found[side].height) == (4000, 4000)
    reduced, whole = found[2560].faces[0].face, found[4000].faces[0].face
    np.testing.assert_allclose(reduced.box, whole.box, atol=12)  # 12 px of 4000: 4 px where the detector looks
    np.testing.assert_allclose(reduced.landmarks, whole.landmarks, atol=12)
    assert 40 * 16 < reduced.box[0] < reduced.box[2] < 220 * 16  # the face of the 250 px photo, scaled by 16


# --- a real worker under 8 concurrent worst-case uploads ---------------------------------------------------------


def test_eight_concurrent_worst_case_uploads_stay_under_the_bound(
        model_dir: Path, service_factory: type[ServiceProcess], tmp_path: Path,
        worst_cases: dict[str, Upload]) -> None:
    """Before the fix: a peak of about 5 GB for this mix (7 GB for 8 RGBA PNGs), and 2.8 GB still held after."""
    service = service_factory({"ANYFACE_STORE": f"sqlite:///{tmp_path}/gallery.sqlite3", "ANYFACE_API_KEYS": "",
                               "ANYFACE_WORKERS": "1", "ANYFACE_DETECTOR_INSTANCES": "2"}).start()
    assert service.proc is not None
    uploads = mixed([worst_cases[name] for name in MIXED], 8)
    answers: list[tuple[int, dict[str, object] | None]] = []
    gate = threading.Barrier(len(uploads))

    def send(upload: Upload) -> None:
        gate.wait()
        response = httpx.post(service.url + "/v1/detect", files={"image": upload}, timeout=60)
        try:
            answers.append((response.status_code, response.json()))
        except ValueError:
            answers.append((response.status_code, None))

    threads = [threading.Thread(target=send, args=(u,)) for u in uploads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    peak_mib = proc_status_kib(service.proc.pid, "VmHWM") / 1024
    assert len(answers) == 8
    for status, body in answers:
        assert body is not None, status
        assert status < 300 or 400 <= status < 500 or status == 503, (status, body)
        if status == 503:
            assert body["error"]["code"] == "overloaded"  # type: ignore[index]
    assert any(status == 200 for status, _ in answers)
    assert peak_mib < BOUND_MIB, f"peak RSS {peak_mib:.0f} MiB, answers {[s for s, _ in answers]}"

"""The two landmark models the fetch step builds: MediaPipe's face mesh (TFLite -> ONNX) and MTCNN's O-Net
(torch state dict read without torch -> ONNX), compared with their reference runtimes on real LFW faces; the
torch-free state-dict reader (equal to the numpy copy of the same tensors, and refusing any other pickled global);
and the fetch step's rebuild rule for derived files."""

from __future__ import annotations

import os
import pickle
import shutil
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from service.detection.base import DetectedFace
from service.detection.yunet import YuNetDetector
from service.models import fetch as fetch_module
from service.models.fetch import DERIVED, FetchError, fetch_all
from service.models.manifest import ModelEntry, load_manifest, save_manifest, sha256_of
from service.models.onet_onnx import load_onet_weights, onet_model
from service.models.registry import (
    ARTIFACTS,
    FACE_MESH_FILE,
    FACE_MESH_NAME,
    FACE_MESH_TFLITE,
    ONET_FILE,
    ONET_NAME,
    ONET_STATE_DICT,
    ONET_UPSTREAM_PT,
    RETIRED_ARTIFACTS,
)
from service.models.torch_state_dict import TorchStateDictError, load_state_dict
from tests.conftest import lfw_photo, people_with_photos

MESH_SIZE = 192
ONET_SIZE = 48
# Measured on 40 LFW faces: the converted mesh differs from LiteRT (XNNPACK) by at most 1.8e-4 px in the landmarks
# and 2.7e-5 in the presence logit (float summation order; both run the fp16 weights widened to fp32).
MESH_LANDMARK_TOL_PX = 1e-3
MESH_PRESENCE_TOL = 1e-3
# O-Net ONNX against the torch re-implementation: measured at most 1.2e-7 on every output (40 faces).
ONET_TOL = 1e-4
# Mesh indices of the 5 alignment points, image-left first: eye corners (33, 133) and (263, 362), nose tip 1,
# mouth corners 61 and 291.
MESH_FIVE = ((33, 133), (263, 362), (1,), (61,), (291,))


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _photos(lfw: Path, count: int) -> list[np.ndarray]:
    return [np.asarray(Image.open(lfw_photo(lfw, p)).convert("RGB"))
            for p in people_with_photos(lfw, minimum=1, limit=count)]


def _centre_crop(rgb: np.ndarray, size: int) -> np.ndarray:
    """The central 150 x 150 of a 250 x 250 LFW photo (the face sits there), resized to size x size."""
    crop = Image.fromarray(rgb).crop((50, 50, 200, 200)).resize((size, size), Image.BILINEAR)
    return np.asarray(crop, dtype=np.float32)


def _normalise(pixels: np.ndarray, entry: ModelEntry) -> np.ndarray:
    return np.ascontiguousarray((pixels - entry.mean) / entry.std, dtype=np.float32)


@pytest.fixture(scope="module")
def detector(model_dir: Path) -> YuNetDetector:
    return YuNetDetector(model_dir / "face_detection_yunet_2023mar.onnx", 0.6, 1280)


def _main_face(detector: YuNetDetector, rgb: np.ndarray) -> DetectedFace:
    centre = np.array(rgb.shape[1::-1]) / 2
    return min(detector.detect(rgb), key=lambda f: float(np.linalg.norm(f.landmarks.mean(axis=0) - centre)))


# --- manifest -------------------------------------------------------------------------------------------------


def test_manifest_describes_the_landmark_models(model_dir: Path) -> None:
    manifest = load_manifest(model_dir)
    mesh, onet = manifest.models[FACE_MESH_NAME], manifest.models[ONET_NAME]
    assert (mesh.role, mesh.family, mesh.file) == ("landmarks", "face_mesh", FACE_MESH_FILE)
    assert (mesh.input_size, mesh.layout, mesh.color_order) == ((192, 192), "NHWC", "RGB")
    assert (mesh.mean, mesh.std) == (0.0, 255.0)  # [0, 1]: see the entry's notes and docs/models.md
    assert (onet.role, onet.family, onet.file) == ("landmarks", "onet", ONET_FILE)
    assert (onet.input_size, onet.layout, onet.color_order, onet.mean, onet.std) == ((48, 48), "NCHW", "RGB",
                                                                                     127.5, 128.0)
    for entry in (mesh, onet):
        assert entry.dynamic_batch and entry.license and entry.source and entry.notes
        assert sha256_of(model_dir / entry.file) == entry.sha256
    for source in (FACE_MESH_TFLITE, ONET_STATE_DICT):
        assert manifest.models[source.name].role == "weights"
        assert sha256_of(model_dir / source.file) == source.sha256
    # the mirror-only numpy copy of the O-Net tensors is no longer part of the fetch step, nor of the manifest
    assert "mtcnn_onet.npz" not in {a.file for a in ARTIFACTS} | {e.file for e in manifest.models.values()}
    assert not set(RETIRED_ARTIFACTS) & manifest.models.keys()


def test_onnx_boundaries_follow_the_contract(model_dir: Path) -> None:
    mesh = _session(model_dir / FACE_MESH_FILE)
    assert [(i.name, i.shape) for i in mesh.get_inputs()] == [("image", ["batch", 192, 192, 3])]
    assert [(o.name, o.shape) for o in mesh.get_outputs()] == [("landmarks", ["batch", 1404]),
                                                               ("presence", ["batch", 1])]
    onet = _session(model_dir / ONET_FILE)
    assert [(i.name, i.shape) for i in onet.get_inputs()] == [("image", ["batch", 3, 48, 48])]
    assert sorted((o.name, tuple(o.shape)) for o in onet.get_outputs()) == [
        ("box", ("batch", 4)), ("points", ("batch", 10)), ("score", ("batch", 1))]


# --- face mesh --------------------------------------------------------------------------------------------------


def test_face_mesh_equals_litert_on_real_faces(model_dir: Path, lfw_dir: Path) -> None:
    interpreter_mod = pytest.importorskip("ai_edge_litert.interpreter")
    entry = load_manifest(model_dir).models[FACE_MESH_NAME]
    crops = _normalise(np.stack([_centre_crop(p, MESH_SIZE) for p in _photos(lfw_dir, 8)]), entry)

    interpreter = interpreter_mod.Interpreter(model_path=str(model_dir / FACE_MESH_TFLITE.file))
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    outputs = {d["name"]: d["index"] for d in interpreter.get_output_details()}
    ref_landmarks, ref_presence = [], []
    for crop in crops:
        interpreter.set_tensor(inp["index"], crop[None])
        interpreter.invoke()
        ref_landmarks.append(interpreter.get_tensor(outputs["conv2d_21"]).reshape(1404))
        ref_presence.append(interpreter.get_tensor(outputs["conv2d_31"]).reshape(1))

    session = _session(model_dir / entry.file)
    single = [session.run(None, {"image": crop[None]}) for crop in crops]
    landmarks = np.concatenate([s[0] for s in single])
    presence = np.concatenate([s[1] for s in single])
    assert landmarks.shape == (8, 1404) and presence.shape == (8, 1)
    assert float(np.abs(landmarks - np.stack(ref_landmarks)).max()) < MESH_LANDMARK_TOL_PX
    assert float(np.abs(presence - np.stack(ref_presence)).max()) < MESH_PRESENCE_TOL
    assert (presence > 0).all()  # real faces: a confident face-presence logit

    batched_landmarks, batched_presence = session.run(None, {"image": crops[:4]})
    assert float(np.abs(batched_landmarks - landmarks[:4]).max()) < MESH_LANDMARK_TOL_PX
    assert float(np.abs(batched_presence - presence[:4]).max()) < MESH_PRESENCE_TOL


def test_face_mesh_lands_on_the_face(model_dir: Path, lfw_dir: Path, detector: YuNetDetector) -> None:
    """With the manifest's normalisation the mesh's 5 points lie near the detector's on centred LFW faces."""
    entry = load_manifest(model_dir).models[FACE_MESH_NAME]
    photos = _photos(lfw_dir, 12)
    crops = _normalise(np.stack([_centre_crop(p, MESH_SIZE) for p in photos]), entry)
    landmarks, presence = _session(model_dir / entry.file).run(None, {"image": crops})
    mesh = landmarks.reshape(-1, 468, 3)
    errors = []
    for photo, points in zip(photos, mesh, strict=True):
        five = np.array([points[list(idx), :2].mean(axis=0) for idx in MESH_FIVE]) * 150 / MESH_SIZE + 50
        reference = _main_face(detector, photo).landmarks
        errors.append(np.linalg.norm(five - reference, axis=1).mean() / np.linalg.norm(reference[0] - reference[1]))
        assert five[0, 0] < five[1, 0] and five[3, 0] < five[4, 0]  # image-left eye and mouth corner first
        assert max(five[0, 1], five[1, 1]) < five[2, 1] < min(five[3, 1], five[4, 1])  # eyes, nose, mouth
    assert (presence > 0).all()
    # mean distance as a fraction of the eye distance; measured median 0.11 on 40 faces (YuNet's points are a
    # little coarse and its eye centres are not the mesh's eye-corner midpoints); a transposed crop gives ~0.5
    assert float(np.median(errors)) < 0.2, errors


# --- O-Net ------------------------------------------------------------------------------------------------------


def _torch_onet(weights_path: Path) -> object:
    """facenet-pytorch's ONet as a small torch module, loaded strictly from the published state dict."""
    import torch as t
    from torch import nn

    class ONet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
            self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
            self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
            self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
            self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
            self.dense6_1, self.dense6_2, self.dense6_3 = nn.Linear(256, 2), nn.Linear(256, 4), nn.Linear(256, 10)

        def forward(self, x: t.Tensor) -> tuple[t.Tensor, t.Tensor, t.Tensor]:
            x = nn.functional.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
            x = nn.functional.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
            x = nn.functional.max_pool2d(self.prelu3(self.conv3(x)), 2, 2, ceil_mode=True)
            x = self.prelu4(self.conv4(x))
            x = self.prelu5(self.dense5(x.permute(0, 3, 2, 1).contiguous().view(x.shape[0], -1)))
            return self.dense6_3(x), self.dense6_2(x), t.softmax(self.dense6_1(x), dim=1)

    net = ONet()
    net.load_state_dict(t.load(weights_path, map_location="cpu", weights_only=True), strict=True)
    return net.eval()


def _onet_crops(photos: list[np.ndarray], detector: YuNetDetector) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """48 x 48 RGB crops of the square around each main face box, as MTCNN feeds its O-Net; also each square
    (x1, y1, side) and the detector's 5 points."""
    crops, squares, references = [], [], []
    for photo in photos:
        face = _main_face(detector, photo)
        x1, y1, x2, y2 = face.box
        side = max(x2 - x1, y2 - y1)
        left, top = (x1 + x2 - side) / 2, (y1 + y2 - side) / 2
        box = (left, top, left + side, top + side)
        crops.append(np.asarray(Image.fromarray(photo).resize((ONET_SIZE, ONET_SIZE), Image.BILINEAR, box=box),
                                dtype=np.float32))
        squares.append((left, top, side))
        references.append(face.landmarks)
    return np.stack(crops), np.array(squares), np.stack(references)


def test_onet_equals_torch_on_real_faces(model_dir: Path, lfw_dir: Path, detector: YuNetDetector) -> None:
    torch = pytest.importorskip("torch")
    pt = model_dir / ONET_STATE_DICT.file  # loaded here by torch itself
    entry = load_manifest(model_dir).models[ONET_NAME]
    batch = _normalise(_onet_crops(_photos(lfw_dir, 8), detector)[0], entry).transpose(0, 3, 1, 2).copy()
    with torch.no_grad():
        ref_points, ref_box, ref_prob = (o.numpy() for o in _torch_onet(pt)(torch.from_numpy(batch)))
    session = _session(model_dir / entry.file)
    points, box, score = session.run(["points", "box", "score"], {"image": batch})
    assert points.shape == (8, 10) and box.shape == (8, 4) and score.shape == (8, 1)
    assert float(np.abs(points - ref_points).max()) < ONET_TOL
    assert float(np.abs(box - ref_box).max()) < ONET_TOL
    assert float(np.abs(score[:, 0] - ref_prob[:, 1]).max()) < ONET_TOL
    assert (score[:, 0] > 0.9).all()  # every crop is a face
    one_by_one = np.concatenate([session.run(["points"], {"image": b[None]})[0] for b in batch])
    assert float(np.abs(one_by_one - points).max()) < ONET_TOL


def test_onet_points_land_in_plausible_places(model_dir: Path, lfw_dir: Path, detector: YuNetDetector) -> None:
    entry = load_manifest(model_dir).models[ONET_NAME]
    crops, squares, references = _onet_crops(_photos(lfw_dir, 12), detector)
    batch = _normalise(crops, entry).transpose(0, 3, 1, 2).copy()
    (points,) = _session(model_dir / entry.file).run(["points"], {"image": batch})
    xs, ys = points[:, :5], points[:, 5:]
    assert ((points > 0) & (points < 1)).all()
    assert (xs[:, 0] < xs[:, 1]).all() and (xs[:, 3] < xs[:, 4]).all()  # left eye / mouth corner left of right
    assert (np.maximum(ys[:, 0], ys[:, 1]) < ys[:, 2]).all()  # eyes above the nose
    assert (ys[:, 2] < np.minimum(ys[:, 3], ys[:, 4])).all()  # nose above the mouth
    # in photo pixels, next to the detector's points: the crop is read rows = y, x first
    in_photo = np.stack([xs, ys], axis=-1) * squares[:, None, 2:3] + squares[:, None, :2]
    eye_distance = np.linalg.norm(references[:, 0] - references[:, 1], axis=1)
    errors = np.linalg.norm(in_photo - references, axis=2).mean(axis=1) / eye_distance
    # mean distance as a fraction of the eye distance; measured median 0.10 on 40 faces, 0.46 with the crop
    # transposed (x and y swapped)
    assert float(np.median(errors)) < 0.2, errors


# --- fetch step -------------------------------------------------------------------------------------------------


def test_fetch_rebuilds_derived_files_only_when_needed(model_dir: Path, tmp_path: Path) -> None:
    mirror = Path(os.environ["ANYFACE_MODEL_MIRROR"])
    target = tmp_path / "models"
    assert sorted(fetch_all(target, mirror)) == sorted(d.name for d in DERIVED)  # a fresh directory: all built
    stamps = {d.file: (target / d.file).stat().st_mtime_ns for d in DERIVED}
    assert fetch_all(target, mirror) == []  # second run: nothing rebuilt, nothing rewritten
    assert {d.file: (target / d.file).stat().st_mtime_ns for d in DERIVED} == stamps
    manifest = load_manifest(target)
    for derived in DERIVED:
        assert sha256_of(target / derived.file) == manifest.models[derived.name].sha256
    # the builds are deterministic: the same bytes as the session's model directory
    assert manifest.models[FACE_MESH_NAME].sha256 == load_manifest(model_dir).models[FACE_MESH_NAME].sha256
    assert manifest.models[ONET_NAME].sha256 == load_manifest(model_dir).models[ONET_NAME].sha256

    with (target / FACE_MESH_FILE).open("ab") as fh:  # a damaged derived file is rebuilt, and only that one
        fh.write(b"\0")
    (target / ONET_FILE).unlink()  # so is a missing one
    assert sorted(fetch_all(target, mirror)) == sorted([FACE_MESH_NAME, ONET_NAME])
    assert sha256_of(target / FACE_MESH_FILE) == manifest.models[FACE_MESH_NAME].sha256
    assert sha256_of(target / ONET_FILE) == manifest.models[ONET_NAME].sha256


def _mirror_without_npz(model_dir: Path, mirror: Path, leave_out: tuple[str, ...] = ()) -> Path:
    """A mirror holding the pinned artifacts (less `leave_out`) and no mtcnn_onet.npz."""
    mirror.mkdir()
    for artifact in ARTIFACTS:
        if artifact.file not in leave_out:
            shutil.copy(model_dir / artifact.file, mirror / artifact.file)
    return mirror


def test_fetch_builds_onet_from_the_upstream_pt(model_dir: Path, tmp_path: Path) -> None:
    """No npz anywhere: the O-Net is built from mtcnn_onet.pt, the same bytes as the session's build."""
    mirror = _mirror_without_npz(model_dir, tmp_path / "mirror")
    target = tmp_path / "models"
    fetch_all(target, mirror)
    assert not (target / "mtcnn_onet.npz").exists()
    manifest = load_manifest(target)
    assert manifest.models[ONET_NAME].sha256 == load_manifest(model_dir).models[ONET_NAME].sha256
    assert manifest.models[ONET_STATE_DICT.name].file == "mtcnn_onet.pt"


def test_fetch_without_mirror_downloads_the_pt(model_dir: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """With no mirror at all (the API image's default) every file comes from its URL; the downloads are served
    here from the local copies, so no network is needed. mtcnn_onet.pt comes from facenet-pytorch's URL."""
    by_url = {a.url: model_dir / a.file for a in ARTIFACTS}
    assert None not in by_url  # every pinned artifact has an upstream URL now
    requested: list[str] = []

    def serve(url: str, dst: Path) -> None:
        requested.append(url)
        shutil.copyfile(by_url[url], dst)

    monkeypatch.setattr(fetch_module, "_download", serve)
    fetch_all(tmp_path / "models", None)
    assert ONET_UPSTREAM_PT in requested and sorted(requested) == sorted(a.url for a in ARTIFACTS if a.url)
    assert load_manifest(tmp_path / "models").models[ONET_NAME].sha256 == \
        load_manifest(model_dir).models[ONET_NAME].sha256


def test_missing_pt_is_a_clear_fetch_error(model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(url: str, dst: Path) -> None:
        raise OSError("network is unreachable")

    monkeypatch.setattr(fetch_module, "_download", offline)
    mirror = _mirror_without_npz(model_dir, tmp_path / "mirror", leave_out=(ONET_STATE_DICT.file,))
    with pytest.raises(FetchError) as info:
        fetch_all(tmp_path / "models", mirror)
    message = str(info.value)
    assert "ANYFACE_MODEL_MIRROR" in message and ONET_STATE_DICT.file in message and ONET_STATE_DICT.sha256 in message
    assert f"download of {ONET_UPSTREAM_PT} failed: network is unreachable" in message
    assert str(mirror / ONET_STATE_DICT.file) in message and "npz" not in message


def test_fetch_drops_the_retired_npz_entry(model_dir: Path, tmp_path: Path) -> None:
    """An install made before the switch lists `onet_npz`; the next fetch removes that entry."""
    mirror = _mirror_without_npz(model_dir, tmp_path / "mirror")
    target = tmp_path / "models"
    fetch_all(target, mirror)
    stale = load_manifest(target)
    stale.models["onet_npz"] = ModelEntry(role="weights", file="mtcnn_onet.npz", sha256="0" * 64)
    save_manifest(target, stale)
    assert fetch_all(target, mirror) == []  # the O-Net ONNX is unchanged: nothing rebuilt
    assert "onet_npz" not in load_manifest(target).models


# --- the torch-free state-dict reader ----------------------------------------------------------------------------


def _mirror_file(name: str) -> Path:
    path = Path(os.environ.get("ANYFACE_MODEL_MIRROR", "")) / name
    if not path.is_file():
        pytest.skip(f"{path} is not in ANYFACE_MODEL_MIRROR")
    return path


def test_pt_tensors_equal_the_npz_exactly() -> None:
    pt, npz = _mirror_file(ONET_STATE_DICT.file), _mirror_file("mtcnn_onet.npz")
    assert not zipfile.is_zipfile(pt)  # facenet-pytorch 2.6.0 ships the legacy (torch < 1.6) stream layout
    tensors = load_state_dict(pt)
    with np.load(npz, allow_pickle=False) as archive:
        reference = {key: archive[key] for key in archive.files}
    assert list(tensors) == list(reference)  # same keys, same order
    for key, array in reference.items():
        assert (tensors[key].dtype, tensors[key].shape) == (array.dtype, array.shape), key
        assert np.array_equal(tensors[key], array), key
        assert tensors[key].flags.c_contiguous and tensors[key].flags.writeable


def test_onet_onnx_from_pt_is_byte_identical_to_the_npz_build(model_dir: Path) -> None:
    pt, npz = _mirror_file(ONET_STATE_DICT.file), _mirror_file("mtcnn_onet.npz")
    with np.load(npz, allow_pickle=False) as archive:
        from_npz = onet_model({key: archive[key].astype(np.float32) for key in archive.files})
    from_pt = onet_model(load_onet_weights(pt)).SerializeToString()
    assert from_pt == from_npz.SerializeToString()
    assert from_pt == (model_dir / ONET_FILE).read_bytes()  # what the fetch step installed


def test_reader_matches_torch_on_zip_checkpoints(tmp_path: Path) -> None:
    """torch >= 1.6 writes a zip; strided, offset, half and integer tensors come out as torch sees them."""
    torch = pytest.importorskip("torch")
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    state = OrderedDict([
        ("transposed", base.t()),  # strides (1, 6)
        ("row", base[2]),  # storage offset 12, sharing base's storage
        ("column", base[:, 3]),  # offset 3, stride 6
        ("base", base),
        ("half", torch.linspace(-1, 1, 5, dtype=torch.float16)),
        ("count", torch.tensor(7, dtype=torch.int64)),  # 0-d
        ("empty", torch.zeros(0, 3)),
    ])
    path = tmp_path / "state.pt"
    torch.save(state, path)
    assert zipfile.is_zipfile(path)
    tensors = load_state_dict(path)
    assert list(tensors) == list(state)
    for key, tensor in state.items():
        expected = tensor.numpy()
        assert (tensors[key].dtype, tensors[key].shape) == (expected.dtype, expected.shape), key
        assert np.array_equal(tensors[key], expected), key
    legacy = tmp_path / "legacy.pt"  # the same through torch's legacy writer
    torch.save(state, legacy, _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(legacy)
    assert all(np.array_equal(load_state_dict(legacy)[k], v) for k, v in tensors.items())


class _RunsACommand:
    """Unpickling this runs `os.system(command)`: the classic malicious pickle."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (self.command,)


def _zip_checkpoint(path: Path, data_pkl: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/version", "3\n")
    return path


def _legacy_checkpoint(path: Path, data_pkl: bytes) -> Path:
    head = [0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}]
    path.write_bytes(b"".join(pickle.dumps(p, protocol=2) for p in head) + data_pkl + pickle.dumps([], protocol=2))
    return path


@pytest.mark.parametrize("layout", [_zip_checkpoint, _legacy_checkpoint])
def test_reader_refuses_other_globals_without_running_them(tmp_path: Path,
                                                           layout: Callable[[Path, bytes], Path]) -> None:
    marker = tmp_path / "ran"
    payload = pickle.dumps(OrderedDict([("conv1.weight", _RunsACommand(f"touch {marker}"))]), protocol=2)
    assert b"system" in payload  # the pickle really asks for os.system (posix.system)
    path = layout(tmp_path / "evil.pt", payload)
    with pytest.raises(TorchStateDictError, match=r"asks for (os|posix)\.system, which this reader refuses"):
        load_state_dict(path)
    assert not marker.exists()
    calls_eval = b"\x80\x02cbuiltins\neval\nX\x01\x00\x00\x001\x85R."  # eval("1"), written by hand
    with pytest.raises(TorchStateDictError, match=r"asks for builtins\.eval"):  # nor any other callable
        load_state_dict(layout(tmp_path / "eval.pt", calls_eval))


@pytest.mark.parametrize("glob", [b"torch\nFloatStorage", b"torch._utils\n_rebuild_tensor_v2",
                                  b"collections\nOrderedDict"])
def test_reader_stand_ins_cannot_be_altered_by_build(tmp_path: Path, glob: bytes) -> None:
    """GLOBAL then BUILD with a state would set attributes on the reader's stand-ins: it fails instead, and a
    later read is unaffected."""
    for state in (b"}X\x05\x00\x00\x00dtypeK\x01s", b"N}X\x05\x00\x00\x00dtypeK\x01s\x86"):
        with pytest.raises(TorchStateDictError, match="cannot unpickle"):  # the BUILD itself fails
            load_state_dict(_zip_checkpoint(tmp_path / "build.pt", b"\x80\x02c" + glob + b"\n" + state + b"b."))
    assert load_state_dict(_mirror_file(ONET_STATE_DICT.file))["conv1.bias"].dtype == np.float32


def test_reader_refuses_tensors_outside_their_storage(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    path = tmp_path / "state.pt"
    torch.save({"w": torch.ones(2, 3)}, path)
    with zipfile.ZipFile(path) as archive:
        names = {n: archive.read(n) for n in archive.namelist()}
    (data,) = [n for n in names if "/data/" in n]
    names[data] = names[data][:12]  # 3 floats instead of 6: the storage no longer matches its declared size
    with zipfile.ZipFile(path, "w") as archive:
        for name, raw in names.items():
            archive.writestr(name, raw)
    with pytest.raises(TorchStateDictError, match="holds 12 bytes, expected 6 x 4"):
        load_state_dict(path)

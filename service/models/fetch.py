"""Install the pinned artifacts into the model directory: local mirror first, then the upstream URL.

Each file is checked against its pinned sha256; a mismatch or a file found nowhere is a `FetchError` that names
`ANYFACE_MODEL_MIRROR`. After the downloads the derived files are built (the dynamic-batch embedder, the face mesh
converted from TFLite, the O-Net built from its torch state dict read without torch), each only when it is missing
or no longer matches its manifest sha256, and the manifest is written (less the entries of retired artifacts).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from service.models.dynamic_batch import make_batch_dynamic
from service.models.face_mesh_onnx import build_face_mesh
from service.models.manifest import Manifest, ModelEntry, load_manifest, sha256_of, update_manifest
from service.models.onet_onnx import build_onet
from service.models.registry import (
    ARTIFACTS,
    EMBEDDER_FILE,
    EMBEDDER_NAME,
    FACE_MESH_FILE,
    FACE_MESH_NAME,
    FACE_MESH_TFLITE,
    MOBILEFACENET_ORIGINAL,
    ONET_FILE,
    ONET_NAME,
    ONET_STATE_DICT,
    RETIRED_ARTIFACTS,
    Artifact,
    embedder_entry,
    face_mesh_entry,
    onet_entry,
)

log = logging.getLogger(__name__)
MIRROR_VAR = "ANYFACE_MODEL_MIRROR"


class FetchError(RuntimeError):
    """A model file could not be installed with the right checksum."""


@dataclass(frozen=True)
class Derived:
    """A model file the fetch step builds from a pinned artifact, and its manifest entry."""

    name: str
    file: str
    source: Artifact
    build: Callable[[Path, Path], None]  # (source path, destination path)
    entry: Callable[[str], ModelEntry]  # sha256 of the built file -> manifest entry


DERIVED: tuple[Derived, ...] = (
    Derived(EMBEDDER_NAME, EMBEDDER_FILE, MOBILEFACENET_ORIGINAL, make_batch_dynamic, embedder_entry),
    Derived(FACE_MESH_NAME, FACE_MESH_FILE, FACE_MESH_TFLITE, build_face_mesh, face_mesh_entry),
    Derived(ONET_NAME, ONET_FILE, ONET_STATE_DICT, build_onet, onet_entry),
)


def _download(url: str, dst: Path) -> None:
    with urllib.request.urlopen(url, timeout=30) as resp:
        total = int(resp.headers.get("Content-Length") or 0)
        with dst.open("wb") as fh, tqdm(total=total or None, unit="B", unit_scale=True, desc=dst.name) as bar:
            for chunk in iter(lambda: resp.read(1 << 16), b""):
                fh.write(chunk)
                bar.update(len(chunk))


def fetch_artifact(artifact: Artifact, model_dir: Path, mirror: Path | None) -> Path:
    target = model_dir / artifact.file
    if target.exists() and sha256_of(target) == artifact.sha256:
        return target
    model_dir.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    with tempfile.TemporaryDirectory(dir=model_dir) as tmp:
        staged = Path(tmp) / artifact.file
        if mirror is not None:
            candidate = mirror / artifact.file
            if candidate.is_file():
                shutil.copyfile(candidate, staged)
                if sha256_of(staged) == artifact.sha256:
                    staged.replace(target)
                    log.info("installed %s from mirror %s", artifact.file, mirror)
                    return target
                problems.append(f"{candidate} has the wrong sha256 (expected {artifact.sha256})")
            else:
                problems.append(f"{candidate} does not exist")
        else:
            problems.append(f"{MIRROR_VAR} is not set")
        if artifact.url is None:
            problems.append(f"{artifact.file} is installed from the mirror only: {artifact.origin}")
        else:
            try:
                _download(artifact.url, staged)
            except OSError as exc:
                problems.append(f"download of {artifact.url} failed: {exc}")
            else:
                if sha256_of(staged) == artifact.sha256:
                    staged.replace(target)
                    log.info("downloaded %s", artifact.file)
                    return target
                problems.append(f"{artifact.url} served a file with the wrong sha256")
    raise FetchError(
        f"could not install {artifact.file}: " + "; ".join(problems)
        + f". Point {MIRROR_VAR} at a directory holding {artifact.file} (sha256 {artifact.sha256})."
    )


def build_derived(derived: Derived, model_dir: Path, manifest: Manifest) -> bool:
    """Build `derived` from its (installed) source unless the file is there and matches its manifest entry.
    Returns whether it was built. The file appears atomically: a reader never sees half of it."""
    target = model_dir / derived.file
    existing = manifest.models.get(derived.name)
    if target.exists() and existing is not None and existing.file == derived.file \
            and sha256_of(target) == existing.sha256:
        return False
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=model_dir) as tmp:
        staged = Path(tmp) / derived.file
        derived.build(model_dir / derived.source.file, staged)
        staged.replace(target)
    log.info("built %s from %s in %.1f s", derived.file, derived.source.file, time.perf_counter() - started)
    return True


def fetch_all(model_dir: Path, mirror: Path | None) -> list[str]:
    """Install every pinned artifact, build the derived files and write the manifest. Returns the names of the
    derived files built by this call (empty when everything was already in place)."""
    entries: dict[str, ModelEntry] = {}
    for artifact in ARTIFACTS:
        fetch_artifact(artifact, model_dir, mirror)
        entries[artifact.name] = artifact.entry
    manifest = load_manifest(model_dir)
    built = []
    for derived in DERIVED:
        if build_derived(derived, model_dir, manifest):
            built.append(derived.name)
        entries[derived.name] = derived.entry(sha256_of(model_dir / derived.file))
    update_manifest(model_dir, entries, retired=RETIRED_ARTIFACTS)
    log.info("models ready in %s", model_dir)
    return built


def verify_all(model_dir: Path) -> None:
    manifest = load_manifest(model_dir)
    if not manifest.models:
        raise FetchError(f"no manifest in {model_dir}; run `python -m service.models fetch`")
    for name, entry in manifest.models.items():
        path = model_dir / entry.file
        if entry.role == "triton":
            continue
        if not path.exists():
            raise FetchError(f"{name}: {path} is missing")
        if sha256_of(path) != entry.sha256:
            raise FetchError(f"{name}: {path} does not match its manifest sha256")
    log.info("%d models verified in %s", len(manifest.models), model_dir)

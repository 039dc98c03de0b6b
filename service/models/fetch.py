"""Install the pinned artifacts into the model directory: local mirror first, then the upstream URL.

Each file is checked against its pinned sha256; a mismatch or a file found nowhere is a `FetchError` that names
`ANYFACE_MODEL_MIRROR`. After the downloads the derived dynamic-batch embedder is built and the manifest written.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import urllib.request
from pathlib import Path

from tqdm import tqdm

from service.models.dynamic_batch import make_batch_dynamic
from service.models.manifest import ModelEntry, load_manifest, sha256_of, update_manifest
from service.models.registry import (
    ARTIFACTS,
    EMBEDDER_FILE,
    EMBEDDER_NAME,
    MOBILEFACENET_ORIGINAL,
    Artifact,
    embedder_entry,
)

log = logging.getLogger(__name__)
MIRROR_VAR = "ANYFACE_MODEL_MIRROR"


class FetchError(RuntimeError):
    """A model file could not be installed with the right checksum."""


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


def fetch_all(model_dir: Path, mirror: Path | None) -> None:
    entries: dict[str, ModelEntry] = {}
    for artifact in ARTIFACTS:
        fetch_artifact(artifact, model_dir, mirror)
        entries[artifact.name] = artifact.entry
    dynamic = model_dir / EMBEDDER_FILE
    existing = load_manifest(model_dir).models.get(EMBEDDER_NAME)
    if not (dynamic.exists() and existing is not None and sha256_of(dynamic) == existing.sha256):
        make_batch_dynamic(model_dir / MOBILEFACENET_ORIGINAL.file, dynamic)
        log.info("built %s (dynamic batch)", EMBEDDER_FILE)
    entries[EMBEDDER_NAME] = embedder_entry(sha256_of(dynamic))
    update_manifest(model_dir, entries)
    log.info("models ready in %s", model_dir)


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

"""`models/manifest.json`: the contract between `training/` (which writes embedder entries) and `service/`.

Every model the service may load is described here: role, file, checksum, input geometry and normalisation.
The service reads nothing else about a model.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

MANIFEST_NAME = "manifest.json"


class ModelEntry(BaseModel):
    """One model file and how to feed it."""

    role: Literal["detector", "embedder", "landmarks", "weights", "triton"]
    file: str
    sha256: str
    family: str = ""
    input_size: tuple[int, int] | None = Field(None, description="(width, height); None = any size")
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    color_order: Literal["RGB", "BGR"] = "RGB"
    mean: float = 0.0
    std: float = 1.0
    embedding_size: int | None = None
    resolution: int | None = Field(None, description="embedders: the face resolution (pixels) this model serves")
    dynamic_batch: bool = True
    thresholds: dict[str, float] = Field(default_factory=dict)
    method: str = Field("", description="embedders: the method a fine-tuned variant implements (sranet, ...)")
    trunk: str = Field("", description="embedders: the trunk a variant was fine-tuned from (its embedding space)")
    source: str = ""
    license: str = ""
    notes: str = ""


class Manifest(BaseModel):
    version: int = 1
    models: dict[str, ModelEntry] = Field(default_factory=dict)

    def embedders(self, family: str | None = None) -> dict[str, ModelEntry]:
        return {
            name: entry
            for name, entry in self.models.items()
            if entry.role == "embedder" and (family is None or entry.family == family)
        }


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_manifest(model_dir: Path) -> Manifest:
    path = model_dir / MANIFEST_NAME
    if not path.exists():
        return Manifest()
    return Manifest.model_validate_json(path.read_text())


def save_manifest(model_dir: Path, manifest: Manifest) -> Path:
    """Write atomically so that a reader never sees half a manifest."""
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / MANIFEST_NAME
    fd, tmp = tempfile.mkstemp(dir=model_dir, prefix=".manifest-", suffix=".json")
    with os.fdopen(fd, "w") as fh:
        json.dump(manifest.model_dump(mode="json"), fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path


def update_manifest(model_dir: Path, entries: dict[str, ModelEntry], retired: tuple[str, ...] = ()) -> Manifest:
    """Merge entries into the manifest, keeping the ones other tools wrote, less the `retired` names."""
    manifest = load_manifest(model_dir)
    for name in retired:
        manifest.models.pop(name, None)
    manifest.models.update(entries)
    save_manifest(model_dir, manifest)
    return manifest

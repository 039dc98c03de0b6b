"""Export the trained BTNet branches: fused ONNX files, manifest entries and a Triton model repository.

    python -m training.export --run runs/btnet_scan            # models/btnet_r{56,28,14,7}.onnx + models/triton/

For every branch `runs/.../r{r}/branch.pt`: SCAN convs are collapsed and BatchNorm folded (`fuse_model`), the
whole r-path (branch + trunk tail) is exported with a dynamic batch to `models/btnet_r{r}.onnx`, checked with
`onnx.checker` and compared with the PyTorch model under ONNX Runtime (max abs diff <= 1e-4, on random inputs
and on real aligned faces), and registered in `models/manifest.json` as embedder `btnet_r{r}` (family "btnet").
The Triton repository (`training.triton_repo`) is written to `models/triton/`, its ensembles checked step by
step under ONNX Runtime against the single files, and registered as `btnet_triton` (role "triton").
Each manifest entry's `source` names the run, the training profile (`training.config.PROFILES`), the conv type,
the steps and the number of training images of its branch.

    python -m training.export --installed ci   # exit 0 when models/ already holds branches of that profile (or full)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
import torch

from service.models.manifest import ModelEntry, load_manifest, sha256_of, update_manifest
from training.checkpoints import load_branch
from training.config import (
    DEFAULT_PROFILE,
    EMBEDDING_SIZE,
    MEAN,
    PROFILES,
    STD,
    model_dir,
    trunk_weights,
)
from training.data.degrade import downsample, normalise
from training.layers.fuse import fuse_model
from training.models.btnet import BranchNet
from training.models.mobilefacenet import MobileFaceNet, load_trunk
from training.onnx_utils import export_onnx, run, session, torch_run
from training.triton_repo import TRUNK_ENSEMBLE, repository_digest, run_ensemble, write_repository

TOLERANCE = 1e-4


def sample_faces(resolution: int, n: int = 8) -> np.ndarray | None:
    """A few real aligned faces at `resolution` (normalised NCHW), or None without the crop cache."""
    try:
        from training.data.lfw_crops import load_cache

        cache = load_cache(build=False)
    except (FileNotFoundError, OSError):
        return None
    crops = np.asarray(cache.crops[: n * 50 : 50])
    return normalise(np.stack([downsample(c, resolution) for c in crops]))


def check_equal(model: torch.nn.Module, onnx_path: Path, resolution: int, seed: int = 0) -> float:
    """Max abs difference between PyTorch and ONNX Runtime on random inputs and real faces."""
    rng = np.random.default_rng(seed)
    inputs = [rng.uniform(-1, 1, size=(5, 3, resolution, resolution)).astype(np.float32)]
    faces = sample_faces(resolution)
    if faces is not None:
        inputs.append(faces)
    sess = session(onnx_path)
    return max(float(np.abs(run(sess, x) - torch_run(model, x)).max()) for x in inputs)


def export_branch(net: BranchNet, out_dir: Path, name: str | None = None) -> tuple[Path, float]:
    r = net.resolution
    fused = net.fuse()
    path = export_onnx(fused, out_dir / f"{name or f'btnet_r{r}'}.onnx", (3, r, r))
    diff = max(check_equal(fused, path, r), check_equal(net.eval(), path, r))
    if diff > TOLERANCE:
        raise RuntimeError(f"{path}: ONNX Runtime differs from PyTorch by {diff:.2e} > {TOLERANCE}")
    return path, diff


def manifest_entry(
    path: Path, resolution: int, run: Path, conv: str, steps: int, profile: str | None = None,
    train_images: int | None = None,
) -> ModelEntry:
    made = ", ".join(
        [str(run), *([f"profile {profile}"] if profile else []), f"{conv} convs", f"{steps} steps",
         *([f"{train_images} training images"] if train_images else [])]
    )
    return ModelEntry(
        role="embedder",
        family="btnet",
        file=path.name,
        sha256=sha256_of(path),
        input_size=(resolution, resolution),
        layout="NCHW",
        color_order="RGB",
        mean=MEAN,
        std=STD,
        embedding_size=EMBEDDING_SIZE,
        resolution=resolution,
        dynamic_batch=True,
        source=f"training.distill ({made}) from the frozen MobileFaceNet trunk",
        license="same terms as the MobileFaceNet trunk weights (research use)",
        notes=(
            f"BTNet branch for {resolution} x {resolution} faces (aligned with the template scaled by "
            f"{resolution}/112) + the trunk tail, SCAN convs fused, BN folded; embeddings live in the "
            "space of `mobilefacenet`"
        ),
    )


def export_all(run_dir: Path, out_dir: Path, resolutions: list[int] | None, triton: bool) -> dict[str, object]:
    trunk: MobileFaceNet = load_trunk(trunk_weights())
    branches: dict[int, BranchNet] = {}
    for path in sorted(run_dir.glob("r*/branch.pt")):
        net = load_branch(trunk, path)
        if resolutions is None or net.resolution in resolutions:
            branches[net.resolution] = net
    if not branches:
        raise SystemExit(f"no trained branches (r*/branch.pt) under {run_dir}")
    report: dict[str, object] = {}
    entries: dict[str, ModelEntry] = {}
    for r, net in sorted(branches.items(), reverse=True):
        ckpt = torch.load(run_dir / f"r{r}" / "branch.pt", map_location="cpu", weights_only=False)
        path, diff = export_branch(net, out_dir)
        made = ckpt.get("config", {})
        profile = made.get("profile", DEFAULT_PROFILE)  # branches trained before profiles existed: the full one
        entries[f"btnet_r{r}"] = manifest_entry(
            path, r, run_dir, ckpt["conv"], ckpt["steps"], profile, made.get("max_train_images")
        )
        report[f"btnet_r{r}"] = {"file": str(path), "max_abs_diff_vs_torch": diff, "profile": profile,
                                 "steps": ckpt["steps"]}
        print(f"btnet_r{r}: {path} (ONNX Runtime vs PyTorch max abs diff {diff:.2e})")
    if triton:
        root = out_dir / "triton"
        fused_trunk = fuse_model(trunk)
        assert isinstance(fused_trunk, MobileFaceNet)
        fused = {r: fuse_model(net) for r, net in branches.items()}
        ensembles = write_repository(fused_trunk, fused, root)  # type: ignore[arg-type]
        for name in ensembles:
            r = 112 if name == TRUNK_ENSEMBLE else int(name.removeprefix("btnet_r"))
            x = np.random.default_rng(1).uniform(-1, 1, size=(4, 3, r, r)).astype(np.float32)
            ref = torch_run(trunk, x) if name == TRUNK_ENSEMBLE else run(session(out_dir / f"{name}.onnx"), x)
            diff = float(np.abs(run_ensemble(root, name, x) - ref).max())
            if diff > TOLERANCE:
                raise RuntimeError(f"triton ensemble {name} differs from the single model by {diff:.2e}")
            report[f"triton/{name}"] = {"max_abs_diff_vs_single": diff}
            print(f"triton ensemble {name}: chained pieces vs single model max abs diff {diff:.2e}")
        entries["btnet_triton"] = ModelEntry(
            role="triton",
            family="btnet",
            file="triton",
            sha256=repository_digest(root),
            input_size=None,
            resolution=None,
            layout="NCHW",
            color_order="RGB",
            mean=MEAN,
            std=STD,
            embedding_size=EMBEDDING_SIZE,
            dynamic_batch=True,
            source="training.export",
            notes=(
                "Triton repository: ensembles " + ", ".join(ensembles) + " (input `input` N x 3 x r x r FP32, "
                "output `embedding` N x 128 FP32); trunk stored once as segments mfn_*; sha256 is over the "
                "sorted (path, file sha256) listing"
            ),
        )
    update_manifest(out_dir, entries)
    (out_dir / "btnet_export.json").write_text(json.dumps(report, indent=2))
    return report


_PROFILE = re.compile(r"\bprofile (\w+)")


def installed_profiles(folder: Path) -> dict[int, str]:
    """resolution -> training profile of the BTNet branches registered in `folder`'s manifest (entries written
    before profiles were recorded count as the full profile, the only one `make branches` made then)."""
    found = {}
    for entry in load_manifest(folder).embedders("btnet").values():
        if entry.resolution and (folder / entry.file).exists():
            match = _PROFILE.search(entry.source)
            found[entry.resolution] = match.group(1) if match else DEFAULT_PROFILE
    return found


def has_branches(folder: Path, profile: str) -> bool:
    """Whether `folder` holds every branch of `profile`, each trained with `profile` or with the full profile."""
    found = installed_profiles(folder)
    return all(found.get(r) in {profile, DEFAULT_PROFILE} for r in PROFILES[profile].resolutions)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, default=Path("runs/btnet_scan"), help="the distill --out folder")
    p.add_argument("--out", type=Path, default=None, help="model folder (default: ANYFACE_MODEL_DIR or models)")
    p.add_argument("--resolutions", type=int, nargs="*", default=None)
    p.add_argument("--no-triton", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--installed", choices=sorted(PROFILES), default=None,
        help="export nothing: exit 0 when the model folder already holds every branch trained with this profile "
        "(or the full one), else 1",
    )
    a = p.parse_args(argv)
    if a.installed:
        folder = a.out or model_dir()
        ok = has_branches(folder, a.installed)
        print(f"BTNet branches in {folder}: {installed_profiles(folder) or 'none'}", file=sys.stderr)
        sys.exit(0 if ok else 1)
    torch.set_num_threads(a.threads)
    export_all(a.run, a.out or model_dir(), a.resolutions, not a.no_triton)


if __name__ == "__main__":
    main()

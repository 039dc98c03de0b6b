"""The occlusion benchmarks on real LFW faces with the real trunk: a small View 1-shaped set (its own pairs and
people files), clean and occluded probes, the same occluded crops for every embedder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.core.wiring import build_offline
from service.settings import Settings
from tests.conftest import lfw_photo, people_with_photos
from training.data.lfw_crops import CropCache
from training.evaluation import occluded


@pytest.fixture(scope="module")
def small_lfw(model_dir: Path, lfw_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CropCache]:
    """8 peopleDevTest identities with 3+ photos and their first 3 photos, aligned by the service's face path;
    pairs: each person's photos 1-2 and 2-3 (genuine), and photo 1 of each person against the next (impostor)."""
    people = people_with_photos(lfw_dir, 3, 8)
    folder = tmp_path_factory.mktemp("lfw")
    faces = build_offline(Settings(model_dir=model_dir))
    names, crops = [], []
    for person in people:
        for number in (1, 2, 3):
            crop = faces.path.main_face_crop(lfw_photo(lfw_dir, person, number).read_bytes(), faces.face_filter, 112)
            assert crop is not None
            names.append(f"{person}/{person}_{number:04d}.jpg")
            crops.append(crop)
    genuine = [f"{p}\t1\t2" for p in people] + [f"{p}\t2\t3" for p in people]
    impostor = [f"{a}\t1\t{b}\t1" for a, b in zip(people, people[1:] + people[:1], strict=True)]
    impostor += [f"{a}\t2\t{b}\t3" for a, b in zip(people, people[2:] + people[:2], strict=True)]
    (folder / "pairsDevTest.txt").write_text("\n".join([str(len(genuine)), *genuine, *impostor]) + "\n")
    (folder / "peopleDevTest.txt").write_text("\n".join([str(len(people)), *(f"{p}\t3" for p in people)]) + "\n")
    cache = CropCache(crops=np.stack(crops), names=names, index={n: i for i, n in enumerate(names)})
    return folder, cache


def test_occluded_crops_are_fixed_by_seed_and_position() -> None:
    crops = np.random.default_rng(0).integers(0, 256, size=(4, 112, 112, 3), dtype=np.uint8)
    a, b = occluded.occluded(crops, "mask"), occluded.occluded(crops, "mask")
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(occluded.occluded(crops, "block")[0], occluded.occluded(crops, "block", seed=1)[0])
    np.testing.assert_array_equal(occluded.occluded(crops, "clean"), crops)


def test_benchmarks_on_real_faces(model_dir: Path, small_lfw: tuple[Path, CropCache]) -> None:
    folder, cache = small_lfw
    embed = occluded.onnx_embedder(model_dir / "mobilefacenet_dynamic.onnx")
    verify = occluded.verification(folder, cache, embed)
    ident = occluded.identification(folder, cache, embed)
    assert set(verify) == set(occluded.CONDITIONS) and set(occluded.CONDITIONS) <= set(ident)
    assert verify["clean"]["accuracy"] >= 0.9  # the trunk separates these real pairs
    assert ident["clean"]["rank1"] >= 0.9
    assert ident["gallery"] == 4 and ident["mated_probes"] == 8 and ident["non_mated_probes"] == 12
    for condition in occluded.KINDS:
        assert 0.0 <= verify[condition]["accuracy"] <= 1.0 and 0.0 <= ident[condition]["rank1"] <= 1.0

    # a mask or sunglasses on the probe side lower how well genuine probes match their clean photos
    pairs = [line.split("\t") for line in (folder / "pairsDevTest.txt").read_text().splitlines()[1:]]
    a = [f"{p[0]}/{p[0]}_{int(p[1]):04d}.jpg" for p in pairs if len(p) == 3]
    b = [f"{p[0]}/{p[0]}_{int(p[2]):04d}.jpg" for p in pairs if len(p) == 3]
    gallery = occluded.embed_all(embed, cache.crops[cache.rows(a)])
    similarity = {c: float(np.mean(np.sum(gallery * occluded.embed_all(
        embed, occluded.occluded(cache.crops[cache.rows(b)], c)), axis=1))) for c in occluded.CONDITIONS}
    assert all(similarity[c] < similarity["clean"] - 0.03 for c in ("mask", "sunglasses")), similarity


def test_variant_protocols_and_report(model_dir: Path, small_lfw: tuple[Path, CropCache]) -> None:
    """Every protocol of the variants' table on real faces; an embedder scored against its own galleries through
    the compatibility path gets exactly its own figures; the report renders every row."""
    from training.evaluation import variants
    from training.run_variants import report

    folder, cache = small_lfw
    people = sorted({n.split("/")[0] for n in cache.names})
    folds = []
    for k in (0, 1):  # View 2's layout: folds of genuine then impostor pairs
        group = people[4 * k: 4 * k + 4]
        folds += [f"{p}\t1\t3" for p in group]
        folds += [f"{a}\t2\t{b}\t2" for a, b in zip(group, group[1:] + group[:1], strict=True)]
    (folder / "pairs.txt").write_text("2\t4\n" + "\n".join(folds) + "\n")
    embed = occluded.onnx_embedder(model_dir / "mobilefacenet_dynamic.onnx", flip=False)
    own, galleries = variants.evaluate(folder, cache, embed, label="trunk")
    again, _ = variants.evaluate(folder, cache, embed, galleries, label="trunk vs trunk")
    assert set(own["verification"]) == {*occluded.CONDITIONS, "28 px", "14 px"}
    assert own["verification"]["clean"]["accuracy"] >= 0.9 and own["view2"]["accuracy"] >= 0.9
    assert own["verification"]["14 px"]["accuracy"] <= own["verification"]["clean"]["accuracy"]
    for condition in variants.COMPAT_CONDITIONS:
        assert again["compatibility"][condition]["verification"] == own["verification"][condition]
        assert again["compatibility"][condition]["identification"] == own["identification"][condition]
    cost = {"trunk": {"params": 1e6, "macs": 2.3e8, "ms_1": 5.0, "ms_32": 90.0, "latency_ratio_1": 1.0,
                      "latency_ratio_32": 1.0}}
    # the tuning split's protocol: with DevTest's pairs standing in for DevTrain's, the figures must be the same
    (folder / "pairsDevTrain.txt").write_text((folder / "pairsDevTest.txt").read_text())
    tuning = variants.devtrain(folder, cache, embed, label="trunk")
    assert set(tuning) == set(occluded.CONDITIONS)
    assert tuning["clean"] == own["verification"]["clean"] and tuning["mask"] == own["verification"]["mask"]
    text = report({"trunk": own, "same/seed0": again, "same/seed1": {**again, "devtrain": tuning}}, cost,
                  ["trunk", "same/seed0", "same/seed1"], "header")
    assert "| same/seed0 |" in text and "| trunk | 1 |" in text and "| same | 2 |" in text
    assert "| trunk | (same) |" not in text and "(same) | (same)" in text
    sweep = text.split("### Sweeps on pairsDevTrain")[1]
    assert "| same/seed1 |" in sweep and "| same/seed0 |" not in sweep

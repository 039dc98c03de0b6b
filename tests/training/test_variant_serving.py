"""Fine-tuned variants served by the service (`ANYFACE_EMBEDDER=sranet`, `=hpda`, `=arface`): each answers verify and
identify through its exported ONNX file; galleries record the embedder that filled them, a service with another
embedder refuses to search or extend them (409 `embedder_mismatch`), and `service.reembed` copies a gallery into a
new one filled by the current embedder. Real LFW photos, real SQLite store shared by both services.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training needs PyTorch: pip install .[train]")
torch.set_num_threads(1)

from fastapi.testclient import TestClient  # noqa: E402

from service.api.app import create_app  # noqa: E402
from service.gallery.sqlite_store import SqliteStore  # noqa: E402
from service.gallery.store import NewFace  # noqa: E402
from service.reembed import reembed  # noqa: E402
from service.settings import Settings  # noqa: E402
from tests.conftest import lfw_photo  # noqa: E402
from tests.training.test_finetune import tiny  # noqa: E402
from training import finetune  # noqa: E402
from training.export_variant import export_variant  # noqa: E402

PEOPLE = ["Abdullah_Gul", "Alvaro_Uribe", "Amelia_Vega"]


@pytest.fixture(scope="module")
def variant_models(model_dir: Path, crop_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The service's model folder (linked) plus SRANet, HPDA and ARFace, each fine-tuned for a few steps and
    exported into it."""
    folder = tmp_path_factory.mktemp("models")
    for path in model_dir.iterdir():
        if path.name == "manifest.json":
            shutil.copyfile(path, folder / path.name)
        elif path.name != "triton":
            (folder / path.name).symlink_to(path.resolve())
    runs = tmp_path_factory.mktemp("runs")
    for name in ("sranet", "hpda", "arface"):
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("ANYFACE_CACHE_DIR", str(crop_cache))
            # the shipped schedule's single learning rate: a few steps leave a servable embedder
            model = finetune.train(tiny(name, tmp_path_factory.mktemp("variant"), new_module_lr_scale=1.0), 0, runs)
        export_variant(model, folder, triton=False, thresholds=False)
    return folder


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("store") / "gallery.sqlite3"


def _client(models: Path, store: Path, embedder: str) -> TestClient:
    return TestClient(create_app(Settings(model_dir=models, store=f"sqlite:///{store}", embedder=embedder,
                                          follow_interval_s=0.05)), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def trunk_api(variant_models: Path, store_path: Path) -> Iterator[TestClient]:
    with _client(variant_models, store_path, "mobilefacenet") as client:
        yield client


@pytest.fixture(scope="module")
def sranet_api(variant_models: Path, store_path: Path) -> Iterator[TestClient]:
    with _client(variant_models, store_path, "sranet") as client:
        yield client


def photo(lfw: Path, name: str, number: int) -> tuple[str, bytes, str]:
    return (f"{name}_{number}.jpg", lfw_photo(lfw, name, number).read_bytes(), "image/jpeg")


def enrol(api: TestClient, lfw: Path, gallery: str, sid: str, name: str, numbers: list[int]) -> object:
    files = [("images", photo(lfw, name, n)) for n in numbers]
    return api.post(f"/v1/galleries/{gallery}/subjects/{sid}/faces", files=files,
                    data={"name": name, "metadata": json.dumps({"desk": sid})})


def code(response: object) -> str:
    return str(response.json()["error"]["code"])  # type: ignore[attr-defined]


@pytest.mark.parametrize("embedder", ["sranet", "hpda", "arface"])
def test_a_variant_answers_verify_and_identify(embedder: str, variant_models: Path, store_path: Path,
                                               lfw_dir: Path) -> None:
    with _client(variant_models, store_path, embedder) as api:
        same = api.post("/v1/verify", files={"image_a": photo(lfw_dir, "Aaron_Peirsol", 1),
                                             "image_b": photo(lfw_dir, "Aaron_Peirsol", 2)}).json()
        other = api.post("/v1/verify", files={"image_a": photo(lfw_dir, "Aaron_Peirsol", 1),
                                              "image_b": photo(lfw_dir, "Abdullah_Gul", 1)}).json()
        assert same["face_a"]["branch"] == embedder and same["face_a"]["resolution"] == 112
        assert same["similarity"] > other["similarity"] + 0.2
        gallery = f"desk-{embedder}"
        for i, name in enumerate(PEOPLE):
            assert enrol(api, lfw_dir, gallery, f"s{i}", name, [1, 2]).status_code == 201  # type: ignore[attr-defined]
        assert api.get(f"/v1/galleries/{gallery}").json()["embedder"].startswith(f"{embedder}@")
        for i, name in enumerate(PEOPLE):
            found = api.post("/v1/identify", files={"image": photo(lfw_dir, name, 3)},
                             data={"gallery": gallery, "threshold": "-1", "top_k": "3"}).json()
            assert found["faces"][0]["candidates"][0]["subject_id"] == f"s{i}"


def test_a_gallery_refuses_another_embedder(trunk_api: TestClient, sranet_api: TestClient, lfw_dir: Path,
                                            store_path: Path) -> None:
    for i, name in enumerate(PEOPLE):
        assert enrol(trunk_api, lfw_dir, "desk", f"s{i}", name, [1, 2]).status_code == 201  # type: ignore[attr-defined]
    assert trunk_api.get("/v1/galleries/desk").json()["embedder"].startswith("mobilefacenet@")
    probe = {"image": photo(lfw_dir, PEOPLE[0], 3)}
    identify = sranet_api.post("/v1/identify", files=probe, data={"gallery": "desk"})
    assert identify.status_code == 409 and code(identify) == "embedder_mismatch"
    assert "mobilefacenet@" in identify.json()["error"]["message"]
    assert "service.reembed" in identify.json()["error"]["message"]
    verify = sranet_api.post("/v1/verify", files=probe, data={"gallery": "desk", "subject_id": "s0"})
    assert verify.status_code == 409 and code(verify) == "embedder_mismatch"
    extend = enrol(sranet_api, lfw_dir, "desk", "s9", "Ari_Fleischer", [1])
    assert extend.status_code == 409 and code(extend) == "embedder_mismatch"  # type: ignore[attr-defined]
    assert trunk_api.get("/v1/galleries/desk/subjects/s9").status_code == 404  # nothing was written
    # management still works, and the trunk still searches its own gallery; the variant's gallery is refused to it
    assert sranet_api.get("/v1/galleries/desk/subjects").json()["subjects"][0]["subject_id"] == "s0"
    assert trunk_api.post("/v1/identify", files=probe, data={"gallery": "desk"}).status_code == 200
    assert code(trunk_api.post("/v1/identify", files=probe, data={"gallery": "desk-sranet"})) == "embedder_mismatch"

    # a gallery made before embedders were recorded is the trunk's: the trunk extends it, the variant may not
    store = SqliteStore(store_path)
    try:
        store.add_faces("legacy", "old", None, None, [NewFace(np.eye(1, 128, 0, dtype=np.float32)[0])])
    finally:
        store.close()
    assert enrol(trunk_api, lfw_dir, "legacy", "s1", PEOPLE[1], [1]).status_code == 201  # type: ignore[attr-defined]
    assert code(sranet_api.post("/v1/identify", files=probe, data={"gallery": "legacy"})) == "embedder_mismatch"


def test_reembed_copies_a_gallery_to_the_current_embedder(trunk_api: TestClient, sranet_api: TestClient,
                                                          lfw_dir: Path, tmp_path: Path) -> None:
    for i, name in enumerate(PEOPLE):
        assert enrol(trunk_api, lfw_dir, "front", f"s{i}", name, [1, 2]).status_code == 201  # type: ignore[attr-defined]
    photos = tmp_path / "photos"
    for i, name in enumerate(PEOPLE[:2]):  # the third subject's photos are not on file
        (photos / f"s{i}").mkdir(parents=True)
        for n in (1, 2):
            shutil.copyfile(lfw_photo(lfw_dir, name, n), photos / f"s{i}" / f"{n}.jpg")
    outcome = reembed(sranet_api, "front", "front-sranet", photos)
    assert sorted(outcome.enrolled) == ["s0", "s1"] and outcome.enrolled["s0"] == 2
    assert outcome.missing == ["s2"] and outcome.failed == {}
    copied = sranet_api.get("/v1/galleries/front-sranet/subjects/s1").json()
    assert (copied["name"], copied["metadata"], copied["face_count"]) == (PEOPLE[1], {"desk": "s1"}, 2)
    assert sranet_api.get("/v1/galleries/front-sranet").json()["embedder"].startswith("sranet@")
    found = sranet_api.post("/v1/identify", files={"image": photo(lfw_dir, PEOPLE[1], 3)},
                            data={"gallery": "front-sranet", "threshold": "-1"}).json()
    assert found["faces"][0]["candidates"][0]["subject_id"] == "s1"
    # run again: the subjects already copied are skipped, not enrolled twice
    again = reembed(sranet_api, "front", "front-sranet", photos)
    assert again.enrolled == {} and sorted(again.skipped) == ["s0", "s1"]
    with pytest.raises(ValueError):
        reembed(sranet_api, "front", "front", photos)

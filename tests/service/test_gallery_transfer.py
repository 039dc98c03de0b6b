"""Gallery export and import (JSON Lines) on real models and LFW photos: a gallery moved from the SQLite store to
the Redis store answers 100 identify probes exactly as before; another embedder's file is refused; broken and
cut-off files are refused with their line; importing again adds nothing twice; the command line does the same."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from client.cli import main
from service.api.app import create_app
from service.settings import Settings
from tests.conftest import ServiceProcess, lfw_photo, people_with_photos
from tests.gallery.test_redis_store import _redis_url, redis_server, redis_server_bin  # noqa: F401 - fixtures

SUBJECTS = 30


@pytest.fixture(scope="module")
def source_api(model_dir: Path, lfw_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    store = tmp_path_factory.mktemp("sqlite") / "g.sqlite3"
    with TestClient(create_app(Settings(model_dir=model_dir, store=f"sqlite:///{store}")),
                    raise_server_exceptions=False) as client:
        for person in people_with_photos(lfw_dir, minimum=3, limit=SUBJECTS):
            files = [("images", (f"{n}.jpg", lfw_photo(lfw_dir, person, n).read_bytes(), "image/jpeg"))
                     for n in (1, 2)]
            response = client.post(f"/v1/galleries/staff/subjects/{person}/faces", files=files,
                                   data={"name": person.replace("_", " "), "metadata": json.dumps({"src": "lfw"}),
                                         "allow_multiple": "true"})
            assert response.status_code == 201, response.text
        yield client


@pytest.fixture(scope="module")
def exported(source_api: TestClient) -> bytes:
    response = source_api.get("/v1/galleries/staff/export")
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/x-ndjson")
    return response.content


@pytest.fixture(scope="module")
def redis_api(model_dir: Path, redis_server: object) -> Iterator[TestClient]:  # noqa: F811
    settings = Settings(model_dir=model_dir, store=_redis_url(redis_server) + "?prefix=transfer:")  # type: ignore[arg-type]
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def _probes(lfw: Path) -> list[Path]:
    """100 photos: third and later photos of the enrolled people, then people never enrolled."""
    enrolled = people_with_photos(lfw, minimum=3, limit=SUBJECTS)
    probes = [lfw_photo(lfw, p, n) for p in enrolled for n in (3, 4) if lfw_photo(lfw, p, n).exists()]
    strangers = people_with_photos(lfw, minimum=1, limit=400, split="peopleDevTrain.txt")
    probes += [lfw_photo(lfw, p, 1) for p in strangers if p not in enrolled]
    return probes[:100]


def _answers(api: TestClient, gallery: str, probes: list[Path]) -> list[list[tuple[str, float]]]:
    answers = []
    for probe in probes:
        body = api.post("/v1/identify", files={"image": ("p.jpg", probe.read_bytes(), "image/jpeg")},
                        data={"gallery": gallery, "top_k": "5"}).json()
        answers.append([(c["subject_id"], c["similarity"]) for f in body.get("faces", []) for c in f["candidates"]])
    return answers


def test_export_format(exported: bytes) -> None:
    lines = [json.loads(line) for line in exported.splitlines()]
    header, subjects, end = lines[0], lines[1:-1], lines[-1]
    assert header["kind"] == "gallery" and header["format"] == "anyface-gallery/1" and header["dim"] == 128
    assert header["embedder"].startswith("mobilefacenet@")
    assert end == {"kind": "end", "subjects": SUBJECTS, "faces": 2 * SUBJECTS}
    assert len(subjects) == SUBJECTS and all(len(s["faces"]) == 2 for s in subjects)
    face = subjects[0]["faces"][0]
    vector = np.frombuffer(base64.b64decode(face["embedding"]), dtype="<f4")
    assert vector.shape == (128,) and abs(np.linalg.norm(vector) - 1) < 1e-3
    assert base64.b64decode(face["thumbnail"]).startswith(b"\xff\xd8")
    assert subjects[0]["metadata"] == {"src": "lfw"} and len(face["box"]) == 4


def test_sqlite_to_redis_round_trip_answers_the_same(source_api: TestClient, redis_api: TestClient,
                                                      exported: bytes, lfw_dir: Path) -> None:
    imported = redis_api.post("/v1/galleries/moved/import", files={"file": ("g.jsonl", exported)})
    assert imported.status_code == 200, imported.text
    assert imported.json() == {"gallery": "moved", "subjects": SUBJECTS, "faces_added": 2 * SUBJECTS,
                               "faces_existing": 0}
    probes = _probes(lfw_dir)
    assert len(probes) == 100
    before, after = _answers(source_api, "staff", probes), _answers(redis_api, "moved", probes)
    assert before == after
    assert sum(bool(a) for a in before) >= 40  # the comparison covers real matches, not only empty answers
    person = json.loads(exported.splitlines()[1])["subject_id"]
    a = source_api.get(f"/v1/galleries/staff/subjects/{person}").json()
    b = redis_api.get(f"/v1/galleries/moved/subjects/{person}").json()
    assert (a["name"], a["metadata"]) == (b["name"], b["metadata"])
    assert [f["box"] for f in a["faces"]] == [f["box"] for f in b["faces"]]
    thumb = redis_api.get(f"/v1/galleries/moved/subjects/{person}/faces/{b['faces'][0]['face_id']}/thumbnail")
    assert thumb.status_code == 200 and thumb.content == source_api.get(
        f"/v1/galleries/staff/subjects/{person}/faces/{a['faces'][0]['face_id']}/thumbnail").content
    # importing again adds nothing twice
    again = redis_api.post("/v1/galleries/moved/import", files={"file": ("g.jsonl", exported)}).json()
    assert (again["faces_added"], again["faces_existing"]) == (0, 2 * SUBJECTS)
    assert redis_api.get("/v1/galleries/moved").json()["faces"] == 2 * SUBJECTS


def test_another_embedders_export_is_refused(source_api: TestClient, exported: bytes) -> None:
    lines = exported.splitlines()
    header = json.loads(lines[0])
    header["embedder"] = "sranet@0123456789ab"
    forged = b"\n".join([json.dumps(header).encode(), *lines[1:]])
    refused = source_api.post("/v1/galleries/other/import", files={"file": ("g.jsonl", forged)})
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "embedder_mismatch"
    assert source_api.get("/v1/galleries/other").status_code == 404  # nothing written


@pytest.mark.parametrize(("body", "expected"), [
    (b"not json\n", "line 1: not JSON"),
    (b'{"kind": "subject"}\n', "gallery header"),
    (b'{"kind": "gallery", "format": "anyface-gallery/1", "name": "x", "dim": 512, "embedder": null}\n', "512"),
])
def test_broken_files_are_refused_with_their_line(source_api: TestClient, body: bytes, expected: str) -> None:
    response = source_api.post("/v1/galleries/broken/import", files={"file": ("g.jsonl", body)})
    assert response.status_code in (409, 422)
    assert expected in response.json()["error"]["message"]


def test_bad_faces_and_cut_off_files(source_api: TestClient, exported: bytes) -> None:
    lines = exported.splitlines()
    subject = json.loads(lines[1])
    subject["faces"][0]["embedding"] = base64.b64encode(np.zeros(64, dtype="<f4").tobytes()).decode()
    bad = b"\n".join([lines[0], json.dumps(subject).encode(), lines[-1]])
    response = source_api.post("/v1/galleries/bad/import", files={"file": ("g.jsonl", bad)})
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_import"
    assert "line 2" in response.json()["error"]["message"]
    cut = b"\n".join(lines[:6])  # header and 5 subjects, no end line
    response = source_api.post("/v1/galleries/cut/import", files={"file": ("g.jsonl", cut)})
    assert response.status_code == 422 and "cut off" in response.json()["error"]["message"]
    assert source_api.get("/v1/galleries/cut").json()["subjects"] == 5  # what came before is imported
    whole = source_api.post("/v1/galleries/cut/import", files={"file": ("g.jsonl", exported)}).json()
    assert (whole["faces_added"], whole["faces_existing"]) == (2 * SUBJECTS - 10, 10)


def test_command_line_export_and_import(model_dir: Path, lfw_dir: Path, tmp_path: Path,
                                        service_factory: type[ServiceProcess],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    first = service_factory({"ANYFACE_STORE": f"sqlite:///{tmp_path / 'a.sqlite3'}"}).start(timeout=120)
    second = service_factory({"ANYFACE_STORE": f"sqlite:///{tmp_path / 'b.sqlite3'}"}).start(timeout=120)
    people = people_with_photos(lfw_dir, minimum=2, limit=6)
    with first.client() as c:
        for person in people:
            c.post(f"/v1/galleries/g/subjects/{person}/faces", data={"allow_multiple": "true"},
                   files=[("images", ("1.jpg", lfw_photo(lfw_dir, person, 1).read_bytes(), "image/jpeg"))])
    out = tmp_path / "g.jsonl"
    assert main(["--url", first.url, "galleries", "export", "g", "-o", str(out)]) == 0
    # small chunks: the file goes in several requests
    assert main(["--url", second.url, "galleries", "import", "g", str(out), "--chunk-mb", "0.01"]) == 0
    assert "6 subjects, 6 faces added, 0 already there" in capsys.readouterr().err
    with second.client() as c:
        assert c.get("/v1/galleries/g").json()["faces"] == 6
    assert main(["--url", first.url, "galleries", "export", "nope", "-o", str(tmp_path / "n.jsonl")]) == 5

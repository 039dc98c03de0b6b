"""`anyface`, the command line, against a real service process on real LFW photos: folder and manifest enrolment
(refused photos reported with their reason, a second run and an interrupted run that add nothing twice),
identify, verify, detect, galleries, and the exit codes scripts rely on."""

from __future__ import annotations

import csv
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from client.cli import main
from tests.conftest import REPO, ServiceProcess, free_port, lfw_photo, people_with_photos
from tests.images import blank

KEY = "cli-test-key-1234"


@pytest.fixture(scope="module")
def service(model_dir: Path, lfw_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    store = tmp_path_factory.mktemp("cli-store") / "gallery.sqlite3"
    proc = ServiceProcess({"ANYFACE_STORE": f"sqlite:///{store}", "ANYFACE_API_KEYS": KEY})
    proc.start(timeout=120)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def people(lfw_dir: Path) -> list[str]:
    return people_with_photos(lfw_dir, minimum=3, limit=12)


@pytest.fixture(scope="module")
def folder(lfw_dir: Path, people: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 subjects with 2 photos each, and one subject whose photos the service must refuse."""
    root = tmp_path_factory.mktemp("people")
    for person in people:
        (root / person).mkdir()
        for n in (1, 2):
            shutil.copy(lfw_photo(lfw_dir, person, n), root / person / f"{n}.jpg")
    (root / "nobody").mkdir()
    (root / "nobody" / "wall.png").write_bytes(blank(200, 200))
    (root / "nobody" / "notes.jpg").write_text("not an image")
    return root


def run(service: ServiceProcess, capsys: pytest.CaptureFixture[str], *argv: str, key: str = KEY
        ) -> tuple[int, str, str]:
    code = main(["--url", service.url, "--key", key, *argv])
    out, err = capsys.readouterr()
    return code, out, err


def faces_in(service: ServiceProcess, gallery: str) -> int:
    with service.client(headers={"X-API-Key": KEY}) as c:
        response = c.get(f"/v1/galleries/{gallery}")
        return int(response.json()["faces"]) if response.status_code == 200 else 0


def test_enroll_a_folder_reports_refusals_and_adds_nothing_twice(service: ServiceProcess, folder: Path,
                                                                 people: list[str], tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "report.jsonl"
    # LFW photos may show other people beside the subject: enrol the main face
    code, _, err = run(service, capsys, "enroll", "staff", str(folder), "--report", str(report), "--quiet",
                       "--allow-multiple")
    assert code == 1, err  # done, but some photos refused
    assert "24 photos enrolled, 0 already enrolled (skipped), 2 refused" in err
    results = [json.loads(line) for line in report.read_text().splitlines()]
    refused = {Path(r["path"]).name: r["code"] for r in results if r["status"] == "refused"}
    assert refused == {"wall.png": "no_face", "notes.jpg": "invalid_image"}
    assert "no_face" in err and "invalid_image" in err  # the reasons are shown too
    assert faces_in(service, "staff") == 24
    with service.client(headers={"X-API-Key": KEY}) as c:
        subject = c.get(f"/v1/galleries/staff/subjects/{people[0]}").json()
        assert subject["face_count"] == 2 and all(len(f["source"]) == 64 for f in subject["faces"])

    code, _, err = run(service, capsys, "enroll", "staff", str(folder), "--quiet", "--allow-multiple")
    assert code == 1 and "0 photos enrolled, 24 already enrolled (skipped), 2 refused" in err
    assert faces_in(service, "staff") == 24


def test_an_interrupted_enrolment_resumes_without_duplicates(service: ServiceProcess, folder: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    command = [sys.executable, "-m", "client", "--url", service.url, "--key", KEY, "enroll", "resume", str(folder),
               "--concurrency", "1", "--batch", "1", "--allow-multiple"]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while faces_in(service, "resume") < 4:
        assert proc.poll() is None and time.monotonic() < deadline, "the enrolment ended before it was interrupted"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # no chance to finish a request or write anything
    proc.wait(10)
    partial = faces_in(service, "resume")
    assert 4 <= partial < 24
    code, _, err = run(service, capsys, "enroll", "resume", str(folder), "--quiet", "--allow-multiple")
    assert code == 1 and f"{24 - partial} photos enrolled, {partial} already enrolled (skipped)" in err
    assert faces_in(service, "resume") == 24


def test_progress_bar_and_ctrl_c(service: ServiceProcess, folder: Path) -> None:
    command = [sys.executable, "-m", "client", "--url", service.url, "--key", KEY, "enroll", "ctrl-c", str(folder),
               "--concurrency", "1", "--batch", "1"]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while faces_in(service, "ctrl-c") < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "photo/s" in err or "photo]" in err  # tqdm's bar
    assert "interrupted: " in err


def test_enroll_a_manifest_with_names_and_metadata(service: ServiceProcess, lfw_dir: Path, people: list[str],
                                                   tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = tmp_path / "people.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "subject_id", "name", "metadata"])
        for i, person in enumerate(people[:3]):
            for n in (1, 2):
                writer.writerow([str(lfw_photo(lfw_dir, person, n)), f"emp-{i}", person.replace("_", " "),
                                 json.dumps({"desk": i})])
    code, _, err = run(service, capsys, "enroll", "hr", str(manifest), "--quiet", "--allow-multiple")
    assert code == 0, err
    with service.client(headers={"X-API-Key": KEY}) as c:
        subject = c.get("/v1/galleries/hr/subjects/emp-1").json()
    assert (subject["name"], subject["metadata"], subject["face_count"]) == (people[1].replace("_", " "),
                                                                              {"desk": 1}, 2)
    lines = tmp_path / "people.jsonl"
    lines.write_text(json.dumps({"path": str(lfw_photo(lfw_dir, people[3], 1)), "subject_id": "emp-9"}) + "\n")
    assert run(service, capsys, "enroll", "hr", str(lines), "--quiet")[0] == 0
    bad = tmp_path / "bad.csv"
    bad.write_text("file,who\nx.jpg,a\n")
    code, _, err = run(service, capsys, "enroll", "hr", str(bad))
    assert code == 2 and "needs `path` and `subject_id`" in err


def test_identify_verify_detect(service: ServiceProcess, folder: Path, lfw_dir: Path, people: list[str],
                                capsys: pytest.CaptureFixture[str]) -> None:
    run(service, capsys, "enroll", "look", str(folder), "--quiet", "--allow-multiple")
    probes = [lfw_photo(lfw_dir, person, 3) for person in people[:3]]
    code, out, _ = run(service, capsys, "identify", "look", *map(str, probes), "--json")
    assert code == 0
    answers = [json.loads(line) for line in out.splitlines()]
    assert [a["faces"][0]["candidates"][0]["subject_id"] for a in answers] == people[:3]
    code, out, _ = run(service, capsys, "identify", "look", str(probes[0]))
    assert code == 0 and people[0] in out and "best candidate" in out  # the table

    same = run(service, capsys, "verify", str(lfw_photo(lfw_dir, people[0], 1)), str(probes[0]), "--json")
    assert same[0] == 0 and json.loads(same[1])["match"] is True
    other = run(service, capsys, "verify", str(lfw_photo(lfw_dir, people[1], 1)), str(probes[0]))
    assert other[0] == 1 and other[1].splitlines()[2].startswith("no")
    against = run(service, capsys, "verify", str(probes[0]), "--gallery", "look", "--subject", people[0])
    assert against[0] == 0

    code, out, _ = run(service, capsys, "detect", str(folder / people[0]), "--json")
    assert code == 0 and [len(json.loads(line)["faces"]) for line in out.splitlines()] == [1, 1]
    code, out, _ = run(service, capsys, "detect", str(folder / "nobody"))
    assert code == 1  # one file is no image


def test_galleries_and_exit_codes(service: ServiceProcess, folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(service, capsys, "enroll", "temp", str(folder / "nobody"), "--quiet")
    assert code == 2 and "no subject with photos" in err  # a folder of photos, not of sub-folders
    code, out, _ = run(service, capsys, "galleries", "--json")
    assert code == 0 and {"staff"} <= {json.loads(line)["name"] for line in out.splitlines()}
    code, out, _ = run(service, capsys, "galleries", "show", "staff")
    assert code == 0 and "faces: 24" in out
    assert run(service, capsys, "galleries", "delete", "look")[0] == 2  # needs --yes
    assert run(service, capsys, "galleries", "delete", "look", "--yes")[0] == 0
    assert run(service, capsys, "galleries", "show", "look")[0] == 5
    assert run(service, capsys, "identify", "look", str(folder / "nobody" / "wall.png"))[0] == 5
    assert run(service, capsys, "galleries", key="wrong-key-0000")[0] == 4
    code = main(["--url", f"http://127.0.0.1:{free_port()}", "galleries"])
    assert code == 3 and "cannot reach the service" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        main(["enroll"])
    assert usage.value.code == 2
    assert httpx.get(service.url + "/healthz").status_code == 200


def test_a_zip_as_a_server_side_job(service: ServiceProcess, folder: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    archive = Path(shutil.make_archive(str(tmp_path / "people"), "zip", folder))
    report = tmp_path / "job.jsonl"
    code, _, err = run(service, capsys, "job", "zipped", str(archive), "--allow-multiple", "--quiet",
                       "--report", str(report))
    assert code == 1, err
    assert "24 enrolled, 0 already enrolled, 2 refused of 26" in err
    refused = {Path(r["name"]).name: r["code"] for r in map(json.loads, report.read_text().splitlines())
               if r["status"] == "refused"}
    assert refused == {"wall.png": "no_face", "notes.jpg": "invalid_image"}
    assert faces_in(service, "zipped") == 24

"""Bulk enrolment on this machine, against one service process (`python -m service`, SQLite store):

1. throughput on the same LFW photos, each mode into a fresh gallery:
   - one photo per request, one request after another: what a user scripts by hand today (the baseline);
   - `anyface enroll` of the folder: a bounded pool of subjects, several photos per request;
   - the server-side job: the folder zipped, submitted, followed until done;
2. `anyface enroll` of 1,000 subjects from a folder, interrupted with Ctrl-C (SIGINT) part way, then started again:
   the second run must skip what the first enrolled, and the gallery must end with each accepted photo once.

    python -m bench.bulk                       # writes runs/bench-bulk/results.json; docs/bulk.md quotes it
    python -m bench.bulk --photos 100 --subjects 200
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def people(lfw: Path, count: int, per_person: int) -> list[tuple[str, list[Path]]]:
    """The first `count` people of peopleDevTrain.txt with up to `per_person` photos each."""
    chosen = []
    for line in (lfw / "peopleDevTrain.txt").read_text().splitlines()[1:]:
        name, n = line.split("\t")
        photos = [lfw / "images_deepfunneled" / name / f"{name}_{i:04d}.jpg" for i in range(1, min(int(n), per_person)
                                                                                                + 1)]
        chosen.append((name, photos))
        if len(chosen) == count:
            break
    return chosen


def folder_of(chosen: list[tuple[str, list[Path]]], root: Path) -> Path:
    for name, photos in chosen:
        (root / name).mkdir(parents=True)
        for photo in photos:
            (root / name / photo.name).symlink_to(photo)
    return root


class Service:
    def __init__(self, work: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "ANYFACE_PORT": str(self.port), "ANYFACE_HOST": "127.0.0.1",
               "ANYFACE_STORE": f"sqlite:///{work / 'gallery.sqlite3'}", "ANYFACE_MODEL_DIR": str(REPO / "models")}
        self.log = (work / "service.log").open("wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "service"], cwd=REPO, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("the service did not start; see " + str(work / "service.log"))
            time.sleep(0.2)
        self.http = httpx.Client(base_url=self.url, timeout=120)

    def faces(self, gallery: str) -> int:
        response = self.http.get(f"/v1/galleries/{gallery}")
        return int(response.json()["faces"]) if response.status_code == 200 else 0

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


def one_by_one(service: Service, chosen: list[tuple[str, list[Path]]]) -> dict[str, Any]:
    started, enrolled = time.perf_counter(), 0
    for name, photos in tqdm(chosen, desc="one photo per request", unit="subject"):
        for photo in photos:
            response = service.http.post(f"/v1/galleries/by-hand/subjects/{name}/faces",
                                         files={"images": (photo.name, photo.read_bytes(), "image/jpeg")},
                                         data={"allow_multiple": "true"})
            enrolled += response.status_code == 201
    seconds = time.perf_counter() - started
    return {"mode": "one photo per request", "seconds": seconds, "enrolled": enrolled}


def cli(service: Service, folder: Path, gallery: str, *extra: str) -> tuple[float, int, str]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "client", "--url", service.url, "enroll", gallery, str(folder),
                           "--allow-multiple", "--quiet", *extra], cwd=REPO, capture_output=True, text=True)
    return time.perf_counter() - started, done.returncode, done.stderr.strip().splitlines()[0]


def job(service: Service, folder: Path, work: Path) -> dict[str, Any]:
    started = time.perf_counter()
    archive = Path(shutil.make_archive(str(work / "people"), "zip", folder))
    zipped = time.perf_counter() - started
    with archive.open("rb") as f:
        submitted = service.http.post("/v1/galleries/job/jobs", files={"archive": ("people.zip", f)},
                                      data={"allow_multiple": "true"}).json()
    while True:
        status = service.http.get(f"/v1/jobs/{submitted['job_id']}").json()
        if status["status"] in ("done", "failed"):
            break
        time.sleep(0.1)
    return {"mode": "zip job", "seconds": time.perf_counter() - started, "zip_seconds": zipped,
            "enrolled": status["enrolled"], "refused": status["refused"], "archive_mb": archive.stat().st_size / 1e6}


def interrupted_run(service: Service, folder: Path, photos: int, stop_at: float, work: Path) -> dict[str, Any]:
    command = [sys.executable, "-m", "client", "--url", service.url, "enroll", "thousand", str(folder),
               "--allow-multiple"]
    log = (work / "first-run.log").open("w")
    started = time.perf_counter()
    proc = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, text=True)
    while service.faces("thousand") < stop_at * photos and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    first_code = proc.wait(60)
    log.close()
    first_seconds = time.perf_counter() - started
    at_interrupt = service.faces("thousand")
    second = subprocess.run([*command, "--report", str(work / "second-run.jsonl")], cwd=REPO, capture_output=True,
                            text=True)
    results = [json.loads(line) for line in (work / "second-run.jsonl").read_text().splitlines()]
    counts = {s: sum(r["status"] == s for r in results) for s in ("enrolled", "skipped", "refused")}
    subjects = service.http.get("/v1/galleries/thousand").json()
    return {"subjects": subjects["subjects"], "photos": photos, "first_run_exit": first_code,
            "first_run_seconds": first_seconds, "faces_at_interrupt": at_interrupt,
            "first_run_last_lines": (work / "first-run.log").read_text().strip().splitlines()[-2:],
            "second_run_exit": second.returncode, "second_run": counts,
            "second_run_summary": second.stderr.strip().splitlines()[-1:],
            "faces_after": subjects["faces"],
            "no_duplicates": subjects["faces"] == counts["enrolled"] + counts["skipped"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bulk", description=__doc__.split("\n\n")[0])
    parser.add_argument("--lfw", type=Path, default=Path(os.environ.get("ANYFACE_DATA_DIR", "../shared/data")) / "lfw")
    parser.add_argument("--photos", type=int, default=300, help="photos of the throughput comparison")
    parser.add_argument("--subjects", type=int, default=1000, help="subjects of the interrupted run")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-bulk")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="anyface-bulk-") as tmp:
        work = Path(tmp)
        service = Service(work)
        try:
            chosen, total = [], 0
            for name, photos in people(args.lfw, 10_000, 2):
                chosen.append((name, photos))
                total += len(photos)
                if total >= args.photos:
                    break
            small = folder_of(chosen, work / "small")
            rows = [one_by_one(service, chosen)]
            seconds, code, summary = cli(service, small, "cli")
            rows.append({"mode": "anyface enroll (4 subjects at once, 8 photos per request)", "seconds": seconds,
                         "enrolled": service.faces("cli"), "exit": code, "summary": summary})
            rows.append(job(service, small, work))
            for row in rows:
                row["photos"] = total
                row["photos_per_s"] = row["enrolled"] / row["seconds"]
                row["vs_one_by_one"] = row["photos_per_s"] / rows[0]["photos_per_s"]
            big = people(args.lfw, args.subjects, 2)
            demo = interrupted_run(service, folder_of(big, work / "big"), sum(len(p) for _, p in big), 0.4, work)
        finally:
            service.stop()
    result = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}, "date": time.strftime("%F %T"),
              "throughput": rows, "interrupted": demo}
    (args.out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

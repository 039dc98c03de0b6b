"""`kill -9` rounds during concurrent enrolment, longer than `test_persistence.py`: acknowledged vs present.

    python -m tests.gallery.crash_rounds --rounds 10 --writers 4

Each round starts `python -m service` on the same SQLite file, enrols from `--writers` concurrent clients, sends
SIGKILL after a random delay (requests in flight), then checks the file (`PRAGMA integrity_check`) and, from a
restarted service, that every enrolment answered 201 is there with its face and indexed. An enrolment cut off by
the kill may be there or not (it was never acknowledged); an acknowledged one missing is a loss. Prints one line
per round and the totals; exits 1 on any loss or corruption.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from tests.conftest import MODEL_DIR, ServiceProcess, lfw_photo, people_with_photos


def _enrol(client: httpx.Client, lfw: Path, subject: str, person: str) -> httpx.Response:
    photo = lfw_photo(lfw, person, 1)
    return client.post(f"/v1/galleries/crash/subjects/{subject}/faces",
                       files=[("images", (photo.name, photo.read_bytes(), "image/jpeg"))],
                       data={"name": person, "allow_multiple": "true"})


def one_round(number: int, db: Path, lfw: Path, people: list[str], writers: int, rng: random.Random) -> dict[str, int]:
    env = {"ANYFACE_STORE": f"sqlite:///{db}", "ANYFACE_MODEL_DIR": str(MODEL_DIR)}
    server = ServiceProcess(env).start(timeout=120)
    acknowledged: list[str] = []
    attempted: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def writer(k: int) -> None:
        with server.client(timeout=10.0) as client:
            i = k
            while not stop.is_set():
                subject = f"r{number}-w{k}-{i}"
                with lock:
                    attempted.append(subject)
                try:
                    response = _enrol(client, lfw, subject, people[i % len(people)])
                except httpx.HTTPError:
                    return  # the server died under us: never acknowledged
                if response.status_code == 201:
                    with lock:
                        acknowledged.append(subject)
                i += writers

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(writers)]
    for thread in threads:
        thread.start()
    time.sleep(rng.uniform(1.0, 4.0))
    server.kill()  # SIGKILL with requests in flight
    stop.set()
    for thread in threads:
        thread.join(30)
    server.log.unlink(missing_ok=True)

    with sqlite3.connect(db) as conn:
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
    restarted = ServiceProcess(env).start(timeout=120)
    try:
        with restarted.client() as client:
            present = 0
            for subject in acknowledged:
                got = client.get(f"/v1/galleries/crash/subjects/{subject}")
                present += int(got.status_code == 200 and got.json()["face_count"] == 1)
            unacknowledged = [s for s in attempted if s not in set(acknowledged)]
            kept_unacked = sum(client.get(f"/v1/galleries/crash/subjects/{s}").status_code == 200
                               for s in unacknowledged)
            info = client.get("/v1/galleries/crash").json()
    finally:
        restarted.stop()
        restarted.log.unlink(missing_ok=True)
    return {"acknowledged": len(acknowledged), "present": present, "lost": len(acknowledged) - present,
            "in_flight": len(unacknowledged), "in_flight_kept": kept_unacked,
            "index_matches": int(info["indexed_faces"] == info["faces"]), "integrity_ok": int(integrity == "ok")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    data = os.environ.get("ANYFACE_DATA_DIR")
    if not data:
        print("ANYFACE_DATA_DIR must point at a directory with lfw/", file=sys.stderr)
        return 2
    lfw = Path(data) / "lfw"
    people = people_with_photos(lfw, minimum=1, limit=200, split="peopleDevTrain.txt")
    rng = random.Random(args.seed)
    totals: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="anyface-crash-") as tmp:
        db = Path(tmp) / "gallery.sqlite3"
        for number in range(1, args.rounds + 1):
            counts = one_round(number, db, lfw, people, args.writers, rng)
            for key, value in counts.items():
                totals[key] = totals.get(key, 0) + value
            print(f"round {number}: " + ", ".join(f"{k} {v}" for k, v in counts.items()), flush=True)
    print("total: " + ", ".join(f"{k} {v}" for k, v in totals.items()))
    bad = totals["lost"] or totals["integrity_ok"] != args.rounds or totals["index_matches"] != args.rounds
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

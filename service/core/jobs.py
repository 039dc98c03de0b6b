"""Bulk enrolment jobs: a zip of subject folders (`archive.py`) enrolled in the background, with an id, progress
and a result per photo, that survive a restart without losing or duplicating an acknowledged face.

Each job is a folder under `ANYFACE_JOBS_DIR`:
- `archive.zip`, the upload as received;
- `job.json`, the gallery and the options;
- `results.jsonl`, one line per photo handled, appended (and flushed to disk) after its enrolment committed;
- `done.json` once every photo is handled;
- `lock`, held (`flock`) by the one worker process that runs the job.

Every photo is enrolled with its sha256 as its source (`Galleries.enroll`), so a photo whose enrolment committed
just before a crash, but whose result line was not yet written, is found on the subject when the job resumes.
It is reported as `skipped` then, and never added twice.

A job runs in the worker process that accepted it. Every worker also looks for unfinished jobs that no process
holds, at start and every `job_scan_interval_s`, so a job resumes after a restart or the death of its worker.
Workers and replicas that share `ANYFACE_JOBS_DIR` share its jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from anyio import to_thread

from service.core.archive import ArchiveLimits, Entry, InvalidArchive, read_entries, read_photo
from service.core.galleries import Galleries
from service.core.inputs import BytesImage
from service.core.job_results import JobResults
from service.errors import JobNotFound, ServiceError
from service.settings import Settings

log = logging.getLogger(__name__)
JOB_ID_PATTERN = r"^[0-9a-f]{32}$"
SERVICE_TROUBLE = ("overloaded", "store_unavailable", "storage_full", "backend_unavailable")


@dataclass(frozen=True)
class JobView:
    job_id: str
    gallery: str
    status: str  # queued, running, done, failed
    created_at: float
    photos: int
    handled: int
    enrolled: int
    skipped: int
    refused: int
    finished_at: float | None = None
    error: str | None = None  # failed: why the job could not go on (its archive unreadable, ...)


class Jobs:
    def __init__(self, settings: Settings, galleries: Galleries) -> None:
        self.settings = settings
        self.galleries = galleries
        self.root = settings.jobs_path
        self.limits = ArchiveLimits(settings.max_archive_entries, settings.max_archive_uncompressed_bytes,
                                    settings.decode.max_image_bytes)
        self._running: dict[str, asyncio.Task[None]] = {}
        self._results = JobResults()
        self._watcher: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Look for unfinished jobs now and every `job_scan_interval_s` (call from the event loop)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        tasks = [t for t in [self._watcher, *self._running.values()] if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _watch(self) -> None:
        while True:
            try:
                for job_id in await to_thread.run_sync(self._unfinished):
                    self._launch(job_id)
            except Exception:  # a job folder a human broke must not stop the others
                log.exception("looking for unfinished jobs failed")
            await asyncio.sleep(self.settings.job_scan_interval_s)

    def _unfinished(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(d.name for d in self.root.iterdir()
                      if (d / "job.json").is_file() and not (d / "done.json").exists() and d.name not in self._running)

    def _launch(self, job_id: str) -> None:
        if job_id in self._running:
            return
        task = asyncio.get_running_loop().create_task(self._run(job_id))
        self._running[job_id] = task
        task.add_done_callback(lambda _: self._running.pop(job_id, None))

    # -- submission and views -------------------------------------------------------------------------------
    async def submit(self, gallery: str, upload: IO[bytes], allow_multiple: bool) -> JobView:
        """Keep the archive, check it (a bad one is refused now, and nothing stays), and start the job."""
        job_id = uuid.uuid4().hex
        folder = self.root / job_id
        staging = self.root / f".{job_id}.partial"

        def save() -> int:
            staging.mkdir(parents=True)
            with (staging / "archive.zip").open("wb") as out:
                shutil.copyfileobj(upload, out, 1024 * 1024)
            try:
                entries = read_entries(staging / "archive.zip", self.limits)
            except InvalidArchive:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            meta = {"job_id": job_id, "gallery": gallery, "allow_multiple": allow_multiple,
                    "created_at": time.time(), "photos": len(entries)}
            (staging / "job.json").write_text(json.dumps(meta))
            (staging / "results.jsonl").touch()
            _fsync_dir(staging)
            staging.rename(folder)  # the job appears whole or not at all
            _fsync_dir(self.root)
            return len(entries)

        await self.galleries.require_writable_by_embedder(gallery)
        await to_thread.run_sync(save)
        self._launch(job_id)
        return await self.view(job_id)

    def _meta(self, job_id: str) -> dict[str, Any]:
        path = self.root / job_id / "job.json"
        if len(job_id) != 32 or not path.is_file():
            raise JobNotFound(f"job {job_id!r} does not exist")
        meta: dict[str, Any] = json.loads(path.read_text())
        return meta

    async def gallery_of(self, job_id: str) -> str:
        return str((await to_thread.run_sync(self._meta, job_id))["gallery"])

    async def view(self, job_id: str) -> JobView:
        def read() -> JobView:
            meta = self._meta(job_id)
            handled, counts = self._results.counts(self.root / job_id / "results.jsonl")
            path = self.root / job_id / "done.json"
            done = json.loads(path.read_text()) if path.exists() else {}
            finished, error = done.get("finished_at"), done.get("error")
            status = ("failed" if error else "done") if finished is not None else (
                "running" if job_id in self._running or handled else "queued")
            return JobView(job_id, meta["gallery"], status, meta["created_at"], meta["photos"], handled,
                           finished_at=finished, error=error, **counts)

        return await to_thread.run_sync(read)

    async def results(self, job_id: str, offset: int, limit: int) -> list[dict[str, Any]]:
        def read() -> list[dict[str, Any]]:
            self._meta(job_id)
            return self._results.page(self.root / job_id / "results.jsonl", offset, limit)

        return await to_thread.run_sync(read)

    # -- running --------------------------------------------------------------------------------------------
    async def _run(self, job_id: str) -> None:
        folder = self.root / job_id
        lock = await to_thread.run_sync(_try_lock, folder / "lock")
        if lock is None:
            return  # another process runs it
        try:
            await self._process(job_id, folder)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the job cannot go on (its archive was removed or damaged): say so, once
            log.exception("job %s failed", job_id)
            (folder / "done.json").write_text(json.dumps({"finished_at": time.time(), "error": str(exc)[:500]}))
        finally:
            os.close(lock)

    async def _process(self, job_id: str, folder: Path) -> None:
        meta = self._meta(job_id)
        if (folder / "done.json").exists():
            return
        _drop_cut_line(folder / "results.jsonl")
        self._results.forget(folder / "results.jsonl")
        handled = {r["index"] for r in self._results.page(folder / "results.jsonl", 0, 2**62)}
        entries = read_entries(folder / "archive.zip", self.limits)
        todo = [e for e in entries if e.index not in handled]
        log.info("job %s: %d of %d photos to enrol into %s", job_id, len(todo), len(entries), meta["gallery"])
        with zipfile.ZipFile(folder / "archive.zip") as archive, \
                (folder / "results.jsonl").open("a") as out:
            queue: asyncio.Queue[Entry] = asyncio.Queue()
            for entry in todo:
                queue.put_nowait(entry)
            workers = [asyncio.create_task(self._worker(queue, archive, out, meta))
                       for _ in range(self.settings.job_concurrency)]
            await asyncio.gather(*workers)
        (folder / "done.json").write_text(json.dumps({"finished_at": time.time()}))
        _fsync_dir(folder)
        log.info("job %s: done", job_id)

    async def _worker(self, queue: asyncio.Queue[Entry], archive: zipfile.ZipFile, out: IO[str],
                      meta: dict[str, Any]) -> None:
        while not queue.empty():
            entry = queue.get_nowait()
            result = await self._enrol(entry, archive, meta)
            line = json.dumps(result) + "\n"
            await to_thread.run_sync(_append, out, line)

    async def _enrol(self, entry: Entry, archive: zipfile.ZipFile, meta: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = {"index": entry.index, "name": entry.name, "subject_id": entry.subject_id}
        if entry.refusal is not None:
            return {**result, "status": "refused", "code": entry.refusal[0], "message": entry.refusal[1]}
        data = await to_thread.run_sync(read_photo, archive, entry.name, self.settings.decode.max_image_bytes)
        if data is None:
            return {**result, "status": "refused", "code": "image_too_large",
                    "message": f"{entry.name!r}: more than {self.settings.decode.max_image_bytes} bytes"}
        while True:
            try:
                enrolment = await self.galleries.enroll(
                    meta["gallery"], entry.subject_id or "", [BytesImage(data, entry.name)],
                    allow_multiple=meta["allow_multiple"], sources=[hashlib.sha256(data).hexdigest()])
            except ServiceError as exc:
                if exc.code in SERVICE_TROUBLE:  # the service's trouble, not the photo's: wait and retry
                    await asyncio.sleep(self.settings.job_scan_interval_s)
                    continue
                return {**result, "status": "refused", "code": exc.code, "message": exc.message}
            face = enrolment.faces[0]
            return {**result, "status": "skipped" if face.existing else "enrolled", "face_id": face.face_id}


def _drop_cut_line(path: Path) -> None:
    """Cut a last line that a crash left unfinished (no newline), so that appending goes on cleanly."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)
            os.fsync(f.fileno())


def _append(out: IO[str], line: str) -> None:
    out.write(line)
    out.flush()
    os.fsync(out.fileno())


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

"""`anyface enroll`: every subject of a plan enrolled through the REST API, several at a time (a bounded pool),
each photo sent with its sha256 as its source, so the service adds each photo once: a run that is interrupted and
started again skips what is already enrolled.

A subject's photos go in requests of up to `batch` photos. Enrolment is all or nothing per request, so when the
service refuses one for a photo's sake, that subject's photos are sent one by one to learn which photo, and why."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Literal

from tqdm import tqdm

from client.api import AnyFace, ApiError
from client.plan import SUBJECT_ID, SubjectPlan

Status = Literal["enrolled", "skipped", "refused"]
FATAL = {401, 403, 404, 409}  # the key, the gallery or its embedder: no other photo would fare better


@dataclass(frozen=True)
class PhotoResult:
    subject_id: str
    path: str
    status: Status
    face_id: int | None = None
    code: str | None = None
    message: str | None = None


@dataclass
class Summary:
    results: list[PhotoResult] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def counts(self) -> Counter[str]:
        return Counter(r.status for r in self.results)

    @property
    def refused(self) -> list[PhotoResult]:
        return [r for r in self.results if r.status == "refused"]


class Enroller:
    def __init__(self, client: AnyFace, gallery: str, batch: int = 8, allow_multiple: bool = False) -> None:
        self.client, self.gallery, self.batch, self.allow_multiple = client, gallery, batch, allow_multiple

    def _send(self, plan: SubjectPlan, photos: list[tuple[str, str, bytes]]) -> list[PhotoResult]:
        """One request; `ApiError` when the service refuses it."""
        answer = self.client.enroll(self.gallery, plan.subject_id, [(name, data) for _, name, data in photos],
                                    [source for source, _, _ in photos], plan.name, plan.metadata,
                                    self.allow_multiple)
        return [PhotoResult(plan.subject_id, name, "skipped" if face["duplicate"] else "enrolled", face["face_id"])
                for (_, name, _), face in zip(photos, answer["faces"], strict=True)]

    def subject(self, plan: SubjectPlan) -> list[PhotoResult]:
        if not SUBJECT_ID.fullmatch(plan.subject_id):
            return [PhotoResult(plan.subject_id, str(p), "refused", code="invalid_subject_id",
                                message="a subject id is 1-128 letters, digits, . _ : @ - (starting with a letter or "
                                        "digit)") for p in plan.photos]
        results: list[PhotoResult] = []
        photos: list[tuple[str, str, bytes]] = []
        for path in plan.photos:
            try:
                data = path.read_bytes()
            except OSError as exc:
                results.append(PhotoResult(plan.subject_id, str(path), "refused", code="unreadable_file",
                                           message=str(exc)))
                continue
            photos.append((hashlib.sha256(data).hexdigest(), str(path), data))
        for start in range(0, len(photos), self.batch):
            chunk = photos[start:start + self.batch]
            try:
                results += self._send(plan, chunk)
            except ApiError as exc:
                if exc.status in FATAL or len(chunk) == 1:
                    if exc.status in FATAL:
                        raise
                    results.append(PhotoResult(plan.subject_id, chunk[0][1], "refused", code=exc.code,
                                               message=exc.message))
                    continue
                for photo in chunk:  # learn which photo, and why
                    try:
                        results += self._send(plan, [photo])
                    except ApiError as single:
                        if single.status in FATAL:
                            raise
                        results.append(PhotoResult(plan.subject_id, photo[1], "refused", code=single.code,
                                                   message=single.message))
        return results

    def run(self, plans: list[SubjectPlan], concurrency: int = 4, progress: bool = True) -> Summary:
        """Enrol every plan, `concurrency` subjects at a time (at most twice that many queued); on Ctrl-C, stop
        and return what was done (`interrupted`)."""
        summary = Summary()
        total = sum(len(p.photos) for p in plans)
        started = time.perf_counter()
        lock = threading.Lock()
        bar = tqdm(total=total, unit="photo", desc=f"enrol into {self.gallery}", disable=not progress,
                   dynamic_ncols=True)
        pool = ThreadPoolExecutor(max_workers=concurrency)
        pending: set[Future[list[PhotoResult]]] = set()
        queue = iter(plans)
        try:
            while True:
                while len(pending) < 2 * concurrency:
                    plan = next(queue, None)
                    if plan is None:
                        break
                    pending.add(pool.submit(self.subject, plan))
                if not pending:
                    break
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    results = future.result()  # a fatal ApiError or Unreachable leaves here
                    with lock:
                        summary.results += results
                    bar.update(len(results))
                    counts = summary.counts
                    bar.set_postfix(enrolled=counts["enrolled"], skipped=counts["skipped"],
                                    refused=counts["refused"], refresh=False)
        except KeyboardInterrupt:
            summary.interrupted = True
        finally:
            for future in pending:
                future.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
            for future in pending:  # requests in flight when stopped: they finished, so count them
                if future.done() and not future.cancelled() and future.exception() is None:
                    summary.results += future.result()
            bar.close()
            summary.seconds = time.perf_counter() - started
        return summary

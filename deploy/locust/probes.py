"""Background threads that run beside the Locust steps: the cross-replica propagation probe (enrol a fresh
subject through one worker, identify it through the other) and the resource monitor (load average, CPU per
process tree, connections per worker), each tagging its records with the users of the current step."""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import random
import threading
import time
import uuid
from pathlib import Path

import psutil  # a dependency of locust (the `load` extra)

from deploy.locust import prefill as pf
from deploy.locust.analysis import ProbeResult
from deploy.locust.workers import Client, WorkerMap, pinned_clients

log = logging.getLogger("anyface.run_load")


class PropagationProbe(threading.Thread):
    """Enrol a fresh subject through one worker, identify it through the other, again and again."""

    def __init__(self, port: int, api_key: str, workers: WorkerMap, gallery: str, images: list[Path],
                 interval: float, give_up_s: float = 5.0) -> None:
        super().__init__(name="propagation-probe", daemon=True)
        self.port, self.api_key, self.workers, self.gallery = port, api_key, workers, gallery
        self.images, self.interval, self.give_up_s = images, interval, give_up_s
        self.stop_event = threading.Event()
        self.step_users = 0
        self.results: list[ProbeResult] = []
        self.rng = random.Random(1)
        self.n = 0

    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            try:
                self.once()
            except Exception as exc:  # the probe must never take the run down
                log.warning("probe: %r", exc)

    def once(self) -> None:
        clients = pinned_clients(self.port, self.api_key, self.workers)
        try:
            if len(clients) < 2:
                log.warning("probe: reached only workers %s", sorted(clients))
                return
            pids = sorted(clients)
            self.n += 1
            a, b = (pids[0], pids[1]) if self.n % 2 else (pids[1], pids[0])
            self._measure(clients[a], clients[b])
        finally:
            for c in clients.values():
                c.close()

    def _measure(self, enrol_c: Client, ident_c: Client) -> None:
        image = self.rng.choice(self.images)
        fname, data, ctype = pf.image_file(image)
        subject = f"probe-{uuid.uuid4().hex[:16]}"
        path = f"/v1/galleries/{self.gallery}/subjects/{subject}/faces"
        t0 = time.monotonic()
        status, body = enrol_c.request("POST", path, [("images", (fname, data, ctype)), ("allow_multiple", "true")])
        acked = time.monotonic()
        res = ProbeResult(self.step_users, enrol_c.pid or 0, ident_c.pid or 0, (acked - t0) * 1000, None, 0)
        if status not in (200, 201):
            res.error = f"enrol HTTP {status}: {body[:200]!r}"
            if status == 422:  # no face found in this photo: do not use it again
                self.images.remove(image)
                return
            self.results.append(res)
            return
        try:
            fields = [("image", (fname, data, ctype)), ("gallery", self.gallery), ("top_k", "5")]
            while time.monotonic() - acked < self.give_up_s:
                res.attempts += 1
                t_call = time.monotonic()
                status, body = ident_c.request("POST", "/v1/identify", fields)
                res.last_call_ms = (time.monotonic() - t_call) * 1000
                if status != 200:
                    res.error = f"identify HTTP {status}: {body[:200]!r}"
                    break
                faces = json.loads(body)["faces"]
                if any(c["subject_id"] == subject for f in faces for c in f["candidates"]):
                    res.delay_ms = (time.monotonic() - acked) * 1000
                    break
            else:
                res.error = f"not found through worker {ident_c.pid} within {self.give_up_s:.0f}s"
            self.results.append(res)
        finally:
            with contextlib.suppress(OSError, http.client.HTTPException):
                enrol_c.request("DELETE", f"/v1/galleries/{self.gallery}/subjects/{subject}")



class Monitor(threading.Thread):
    """Samples every 2 s: load average, CPU of the service, Redis, Locust and everything else; connections."""

    def __init__(self, workers: WorkerMap, service_pid: int, redis_pid: int) -> None:
        super().__init__(name="monitor", daemon=True)
        self.workers, self.service_pid, self.redis_pid = workers, service_pid, redis_pid
        self.locust_pid: int | None = None
        self.stop_event = threading.Event()
        self.step_users = 0
        self.samples: list[dict] = []

    @staticmethod
    def _tree_cpu(pid: int | None) -> float:
        if pid is None:
            return 0.0
        total = 0.0
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(pid)
            for p in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    t = p.cpu_times()
                    total += t.user + t.system
        return total

    def run(self) -> None:
        psutil.cpu_percent(None)
        prev = (time.monotonic(), self._tree_cpu(self.service_pid), self._tree_cpu(self.redis_pid),
                self._tree_cpu(self.locust_pid), self.locust_pid)
        while not self.stop_event.wait(2.0):
            now = time.monotonic()
            svc, red, loc = (self._tree_cpu(self.service_pid), self._tree_cpu(self.redis_pid),
                             self._tree_cpu(self.locust_pid))
            dt = now - prev[0]
            system = psutil.cpu_percent(None) * psutil.cpu_count()  # % of one core, all cores together
            loc_pct = (loc - prev[3]) / dt * 100 if self.locust_pid == prev[4] and self.locust_pid else 0.0
            sample = {
                "users": self.step_users,
                "load1": os.getloadavg()[0],
                "system_cpu": system,
                "service_cpu": max(0.0, (svc - prev[1]) / dt * 100),
                "redis_cpu": max(0.0, (red - prev[2]) / dt * 100),
                "locust_cpu": max(0.0, loc_pct),
                "connections": self.workers.connections(),
            }
            sample["other_cpu"] = max(0.0, system - sample["service_cpu"] - sample["redis_cpu"] - sample["locust_cpu"])
            self.samples.append(sample)
            prev = (now, svc, red, loc, self.locust_pid)

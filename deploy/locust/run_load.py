"""`make load` / `python -m deploy.locust.run_load`: a bounded, headless load test of a local AnyFace stack.

It starts, on loopback addresses and free ports only:

- a `redis-server` (no persistence, data in a temporary directory);
- the service, `python -m service` with two uvicorn workers (`ANYFACE_WORKERS=2`) on that Redis store. Each
  worker holds its own FAISS index and follows the Redis change feed: the two workers are two replicas;
  the kernel spreads the connections between them (they share one listening socket).

Then it waits until both workers answer /readyz, pre-fills the gallery to a set size (`--prefill`, LFW
identities from $ANYFACE_DATA_DIR, see prefill.py), and runs Locust headless (deploy/locust/locustfile.py:
identify 70 %, verify 20 %, enrol 10 %) in steps of users, each bounded by `--step-time` and a hard timeout,
with one CSV report per step. During every step a probe thread measures cross-replica propagation: it pins
one keep-alive connection to each worker (the worker that owns a connection is read from the process
table), enrols a fresh subject through one worker and polls /v1/identify through the other until the
subject is found. It finds the saturation point (RPS stops growing with the users, or failures appear),
writes docs/load.md and docs/load_steps.png, and stops every process it started, also on errors or Ctrl-C.

Raw results (Locust CSVs and logs, service and Redis logs, results.json) go to runs/load/<timestamp>/.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import http.client
import json
import logging
import os
import platform
import random
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psutil  # a dependency of locust (the `load` extra)
from urllib3 import encode_multipart_formdata

from deploy.locust import prefill as pf

log = logging.getLogger("anyface.run_load")

ROOT = Path(__file__).resolve().parents[2]
LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
LOOPBACK = "127.0.0.1"
ENDPOINT_ORDER = [
    "/v1/identify",
    "/v1/verify [pair]",
    "/v1/verify [gallery]",
    "/v1/galleries/[gallery]/subjects/[subject_id]/faces",
    "/v1/galleries/[gallery]/subjects/[subject_id] DELETE",
    "Aggregated",
]
SHORT_NAMES = {
    "/v1/galleries/[gallery]/subjects/[subject_id]/faces": "enrol (POST …/subjects/[id]/faces)",
    "/v1/galleries/[gallery]/subjects/[subject_id] DELETE": "churn clean-up (DELETE …/subjects/[id])",
    "Aggregated": "**all requests**",
}
PROPAGATION_LIMIT_S = 1.0


# --- processes -------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen | None, name: str, grace: float = 15.0) -> None:
    """SIGTERM to the process group the process leads (it was started with a new session), then SIGKILL."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        log.warning("%s did not stop within %.0fs: SIGKILL", name, grace)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def start(cmd: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    log.info("start: %s (log %s)", shlex.join(cmd), log_path)
    with open(log_path, "wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True)


def wait_tcp(port: int, proc: subprocess.Popen, timeout: float, name: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), timeout=1):
            return
        time.sleep(0.2)
    raise TimeoutError(f"{name} did not listen on {LOOPBACK}:{port} within {timeout:.0f}s")


# --- HTTP on pinned connections --------------------------------------------------------------------------


class Client:
    """One keep-alive HTTP/1.1 connection to the service, and the pid of the worker that accepted it."""

    def __init__(self, port: int, api_key: str, workers: WorkerMap, timeout: float = 30.0) -> None:
        self.port, self.api_key, self.workers, self.timeout = port, api_key, workers, timeout
        self.conn: http.client.HTTPConnection | None = None
        self.pid: int | None = None

    def connect(self) -> int | None:
        self.close()
        self.conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=self.timeout)
        self.conn.connect()
        self.request("GET", "/healthz")  # the connection belongs to a worker once that worker accepted it
        self.pid = self.workers.owner(self.conn.sock.getsockname()[1])
        return self.pid

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.conn, self.pid = None, None

    def request(self, method: str, path: str, fields: list | None = None) -> tuple[int, bytes]:
        assert self.conn is not None
        headers = {"X-API-Key": self.api_key}
        body = None
        if fields is not None:
            body, ctype = encode_multipart_formdata(fields)
            headers["Content-Type"] = ctype
        self.conn.request(method, path, body=body, headers=headers)
        resp = self.conn.getresponse()
        return resp.status, resp.read()


class WorkerMap:
    """The uvicorn worker processes of the service, and which of them owns a client connection."""

    def __init__(self, service_pid: int, port: int) -> None:
        self.service_pid, self.port = service_pid, port

    def pids(self) -> list[int]:
        try:
            children = psutil.Process(self.service_pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        return sorted(p.pid for p in children)

    def owner(self, client_port: int) -> int | None:
        for pid in self.pids():
            with contextlib.suppress(psutil.Error):
                for c in psutil.Process(pid).net_connections(kind="tcp"):
                    if c.laddr and c.laddr.port == self.port and c.raddr and c.raddr.port == client_port:
                        return pid
        return None

    def connections(self) -> dict[int, int]:
        """Established client connections per worker pid."""
        counts = {}
        for pid in self.pids():
            with contextlib.suppress(psutil.Error):
                n = sum(1 for c in psutil.Process(pid).net_connections(kind="tcp")
                        if c.laddr and c.laddr.port == self.port and c.raddr and c.status == psutil.CONN_ESTABLISHED)
                if n:
                    counts[pid] = n
        return counts


def pinned_clients(port: int, api_key: str, workers: WorkerMap, tries: int = 40) -> dict[int, Client]:
    """Open connections until there is one to each of (at most two) workers."""
    found: dict[int, Client] = {}
    for _ in range(tries):
        c = Client(port, api_key, workers)
        try:
            pid = c.connect()
        except (OSError, http.client.HTTPException):
            c.close()
            time.sleep(0.1)
            continue
        if pid is None or pid in found:
            c.close()
        else:
            found[pid] = c
        if len(found) >= 2:
            break
    return found


def wait_ready(port: int, api_key: str, workers: WorkerMap, n_workers: int, timeout: float) -> None:
    """Until /readyz answers 200 on a connection to each worker."""
    deadline = time.monotonic() + timeout
    ready: set[int] = set()
    while time.monotonic() < deadline:
        c = Client(port, api_key, workers, timeout=5)
        with contextlib.suppress(OSError, http.client.HTTPException):
            pid = c.connect()
            status, _ = c.request("GET", "/readyz")
            if status == 200 and pid is not None:
                ready.add(pid)
        c.close()
        if len(ready) >= n_workers:
            log.info("service ready: workers %s", sorted(ready))
            return
        time.sleep(0.3)
    raise TimeoutError(f"service not ready within {timeout:.0f}s (ready workers: {sorted(ready)})")


# --- cross-worker propagation probe ----------------------------------------------------------------------


@dataclass
class ProbeResult:
    step_users: int
    enrol_pid: int
    identify_pid: int
    enrol_ms: float
    delay_ms: float | None  # enrol answered -> identify answer that finds the subject (includes that call)
    attempts: int
    last_call_ms: float | None = None  # the identify call that found it (its own latency, under load)
    error: str | None = None


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


# --- resource monitor ------------------------------------------------------------------------------------


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


# --- Locust steps ----------------------------------------------------------------------------------------


@dataclass
class Step:
    users: int
    duration_s: float
    exit_code: int | None
    stats: dict[str, dict] = field(default_factory=dict)
    failures: list[dict] = field(default_factory=list)

    @property
    def total(self) -> dict:
        return self.stats.get("Aggregated", {})

    @property
    def rps(self) -> float:
        return self.total.get("rps", 0.0)

    @property
    def n_failures(self) -> int:
        return int(self.total.get("failures", 0))


def _num(value: str) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def parse_stats(prefix: Path) -> tuple[dict[str, dict], list[dict]]:
    stats: dict[str, dict] = {}
    path = Path(f"{prefix}_stats.csv")
    if path.is_file():
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh):
                name = row["Name"]
                stats[name] = {
                    "method": row["Type"],
                    "requests": int(row["Request Count"]),
                    "failures": int(row["Failure Count"]),
                    "rps": _num(row["Requests/s"]) or 0.0,
                    "avg": _num(row["Average Response Time"]),
                    "p50": _num(row["50%"]),
                    "p95": _num(row["95%"]),
                    "p99": _num(row["99%"]),
                    "max": _num(row["Max Response Time"]),
                }
    failures = []
    fpath = Path(f"{prefix}_failures.csv")
    if fpath.is_file():
        with open(fpath, newline="") as fh:
            failures = [dict(r) for r in csv.DictReader(fh)]
    return stats, failures


def run_step(users: int, step_time: int, host: str, env: dict[str, str],
             out_dir: Path) -> tuple[Step, subprocess.Popen]:
    prefix = out_dir / f"step_{users:03d}u"
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", host,
           "-u", str(users), "-r", str(users), "--run-time", f"{step_time}s", "--stop-timeout", "10",
           "--csv", str(prefix), "--only-summary", "--reset-stats", "--loglevel", "WARNING"]
    return Step(users, step_time, None), start(cmd, Path(f"{prefix}.log"), env)


def finish_step(step: Step, proc: subprocess.Popen, out_dir: Path, hard_timeout: float) -> Step:
    try:
        step.exit_code = proc.wait(hard_timeout)
    except subprocess.TimeoutExpired:
        log.error("locust step %d users ran past %.0fs: stopped", step.users, hard_timeout)
        stop_process(proc, "locust", grace=5)
        step.exit_code = -1
    step.stats, step.failures = parse_stats(out_dir / f"step_{step.users:03d}u")
    return step


def saturation_reason(steps: list[Step], min_gain: float, p95_factor: float | None = None,
                      p95_floor_ms: float = 200.0) -> tuple[int | None, str]:
    """The first step that fails, whose RPS grows by less than `min_gain` of the users' growth, or (with
    `p95_factor`) whose aggregate p95 exceeds both `p95_factor` × the previous step's and `p95_floor_ms`."""
    for i, step in enumerate(steps):
        if step.n_failures:
            return i, f"{step.n_failures} failed requests"
        if i == 0:
            continue
        prev = steps[i - 1]
        ideal = step.users / prev.users - 1
        if prev.rps > 0 and ideal > 0 and (step.rps / prev.rps - 1) < min_gain * ideal:
            return i, (f"RPS grew only ×{step.rps / prev.rps:.2f} ({prev.rps:.1f} → {step.rps:.1f}) while the users "
                       f"grew ×{step.users / prev.users:.1f}")
        p95, p95_prev = step.total.get("p95"), prev.total.get("p95")
        if p95_factor and p95 and p95_prev and p95 > p95_factor * p95_prev and p95 > p95_floor_ms:
            return i, f"p95 rose ×{p95 / p95_prev:.1f} ({p95_prev:.0f} → {p95:.0f} ms)"
    return None, ""


def saturation(steps: list[Step], min_gain: float, p95_factor: float | None = None) -> int | None:
    return saturation_reason(steps, min_gain, p95_factor)[0]


# --- report ----------------------------------------------------------------------------------------------


def code_version() -> str:
    """The commit the service runs from, and any uncommitted change under service/ (other engineers' work)."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return ""
    head = git("rev-parse", "--short", "HEAD").strip() or "unknown"
    dirty = [line[3:] for line in git("status", "--porcelain", "--", "service").splitlines() if line.strip()]
    return head + (f" + uncommitted changes in {', '.join(dirty)}" if dirty else " (service/ clean)")


def machine_info() -> dict:
    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "redis": "Redis " + subprocess.run(["redis-server", "--version"], capture_output=True, text=True
                                           ).stdout.split("v=")[-1].split()[0],
        "locust": " ".join(subprocess.run([sys.executable, "-m", "locust", "--version"], capture_output=True,
                                          text=True).stdout.split()[:2]),
    }


def _fmt(v: float | None, digits: int = 0) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def assessed_probes(steps: list[Step], sat: int | None, probes: list[ProbeResult]) -> list[ProbeResult]:
    """The probes of the steps up to the capacity (before saturation; the first step if it is saturated)."""
    keep = {s.users for s in (steps[:max(sat, 1)] if sat is not None else steps)}
    return [p for p in probes if p.step_users in keep]


def propagation_ok(probes: list[ProbeResult]) -> bool:
    delays = [p.delay_ms for p in probes if p.delay_ms is not None]
    return bool(delays) and len(delays) == len(probes) and max(delays) < PROPAGATION_LIMIT_S * 1000


def plot(steps: list[Step], path: Path, sat: int | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    users = [s.users for s in steps]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    ax1.plot(users, [s.rps for s in steps], "o-", label="all requests")
    ax1.plot(users, [s.stats.get("/v1/identify", {}).get("rps", 0) for s in steps], "s--", label="identify")
    ax1.set_xscale("log", base=2)
    ax1.set_xticks(users, [str(u) for u in users])
    ax1.set_xlabel("Locust users")
    ax1.set_ylabel("requests / s")
    ax1.set_title("Throughput")
    ax1.grid(alpha=0.3)
    ax1.legend()
    for name in ENDPOINT_ORDER[:4]:
        ys = [s.stats.get(name, {}).get("p95") for s in steps]
        if any(y is not None for y in ys):
            ax2.plot(users, [y if y is not None else float("nan") for y in ys], "o-",
                     label=SHORT_NAMES.get(name, name).split(" (")[0])
    ax2.set_xscale("log", base=2)
    ax2.set_yscale("log")
    ax2.set_xticks(users, [str(u) for u in users])
    ax2.set_xlabel("Locust users")
    ax2.set_ylabel("p95 latency (ms)")
    ax2.set_title("p95 latency per endpoint")
    ax2.grid(alpha=0.3, which="both")
    ax2.legend(fontsize=8)
    for ax in (ax1, ax2):
        ax.tick_params(axis="x", labelrotation=45)
    if sat is not None and sat > 0:
        for ax in (ax1, ax2):
            ax.axvline(steps[sat - 1].users, color="grey", linestyle=":", label=None)
        ax1.annotate("capacity", (steps[sat - 1].users, steps[sat - 1].rps), textcoords="offset points",
                     xytext=(-60, 10), fontsize=8, color="grey")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def earlier_runs(ctx: dict) -> list[str]:
    """One table row per earlier results.json under runs/load/ (not the current run)."""
    rows = []
    for path in sorted((ROOT / "runs" / "load").glob("*/results.json")):
        if os.path.relpath(path.parent, ROOT) == ctx["out_dir"]:
            continue
        try:
            d = json.loads(path.read_text())
            steps = [Step(**{k: v for k, v in s.items() if k in Step.__dataclass_fields__}) for s in d["steps"]]
            probes = [ProbeResult(**{k: v for k, v in p.items() if k in ProbeResult.__dataclass_fields__})
                      for p in d["probes"]]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if not steps:
            continue
        sat = saturation(steps, d["ctx"].get("min_gain", 0.5), d["ctx"].get("p95_factor", 2.0))
        ok = [s for s in steps if s.n_failures == 0 and (sat is None or steps.index(s) < max(sat, 1))]
        rep = max(ok, key=lambda s: s.users) if ok else None
        rep_s = (f"{rep.users} users, {rep.rps:.1f} RPS, p95 {_fmt(rep.total.get('p95'))} ms, 0 failures"
                 if rep else "–")
        ds = [p.delay_ms for p in assessed_probes(steps, sat, probes) if p.delay_ms is not None]
        prop = f"{statistics.median(ds):.0f} / {max(ds):.0f}" if ds else "–"
        others = [x["other_cpu"] for x in d.get("samples", []) if x.get("users")]
        other = f"{statistics.mean(others):.0f} %" if others else "–"
        rows.append(f"| {path.parent.name} | {d['ctx'].get('code', '–')} | {d['ctx'].get('prefill')} | "
                    f"{d['ctx'].get('load_before')} | {other} | "
                    f"{', '.join(str(s.users) for s in steps)} | {rep_s} | "
                    f"{steps[sat].users if sat is not None else 'none'} | {prop} |")
    return rows


def write_report(path: Path, ctx: dict, steps: list[Step], sat: int | None, probes: list[ProbeResult],
                 samples: list[dict], plot_path: Path | None) -> None:
    m = ctx["machine"]
    ok_steps = [s for s in steps if s.n_failures == 0 and s.exit_code not in (None, -1)]
    highest_ok = max(ok_steps, key=lambda s: s.users) if ok_steps else None
    knee = steps[sat - 1] if sat else None
    # the reported load: the highest step without failures that is not past the saturation point
    capacity = [s for s in ok_steps if sat is None or steps.index(s) < max(sat, 1)]
    reported = max(capacity, key=lambda s: s.users) if capacity else highest_ok
    L: list[str] = []
    L += ["# Load test (Locust, two uvicorn workers on a Redis store)", ""]
    L += [f"Generated by `{ctx['command']}` (`deploy/locust/run_load.py`) on {ctx['started']}; raw results "
          f"(Locust CSVs and logs, service log, `results.json`) in `{ctx['out_dir']}` (not committed).", ""]
    L += ["## Summary", ""]
    if reported:
        t = reported.total
        ident = reported.stats.get("/v1/identify", {})
        L.append(f"- **Reported load: {reported.users} users, {reported.rps:.1f} requests/s, "
                 f"{reported.n_failures} failed requests** (the highest step without a failure before the "
                 f"saturation point; {t.get('requests', 0)} requests in {reported.duration_s:.0f} s): all requests "
                 f"p50/p95/p99 {_fmt(t.get('p50'))}/{_fmt(t.get('p95'))}/{_fmt(t.get('p99'))} ms, identify "
                 f"{_fmt(ident.get('p50'))}/{_fmt(ident.get('p95'))}/{_fmt(ident.get('p99'))} ms.")
        if highest_ok is not None and highest_ok is not reported:
            h = highest_ok.total
            L.append(f"- Highest step without a failure: {highest_ok.users} users, {highest_ok.rps:.1f} requests/s, "
                     f"but past saturation (p50/p95/p99 {_fmt(h.get('p50'))}/{_fmt(h.get('p95'))}/"
                     f"{_fmt(h.get('p99'))} ms): requests queue instead of failing.")
    else:
        L.append("- **No step ran without failures.**")
    sat_i, why = saturation_reason(steps, ctx["min_gain"], ctx["p95_factor"])
    plat_i, plat_why = saturation_reason(steps, ctx["min_gain"])
    if sat is not None:
        s = steps[sat]
        L.append(f"- **Saturation point: {s.users} users**: {why}. The last step before it, {knee.users} users at "
                 f"{knee.rps:.1f} requests/s, is the capacity of this set-up." if knee else
                 f"- **Saturation** already at the first step ({s.users} users): {why}.")
    else:
        L.append(f"- **No saturation** found up to {steps[-1].users} users (RPS still grew with the users, p95 did "
                 "not jump); the capacity is above the last step.")
    if plat_i is not None and plat_i != sat_i:
        L.append(f"- Throughput plateau at {steps[plat_i].users} users: {plat_why}.")
    elif plat_i is None and sat is not None:
        L.append(f"- Past the saturation point RPS still grew, sub-linearly, up to {steps[-1].users} users "
                 f"({steps[-1].rps:.1f} requests/s, p95 {_fmt(steps[-1].total.get('p95'))} ms): Locust users wait "
                 "for their answers, so queueing shows as latency rather than as failures.")
    assessed = assessed_probes(steps, sat, probes)
    delays = [p.delay_ms for p in assessed if p.delay_ms is not None]
    failed_probes = [p for p in assessed if p.delay_ms is None]
    if delays:
        verdict = "PASS" if propagation_ok(assessed) else "FAIL"
        upto = max(p.step_users for p in assessed)
        L.append(f"- **Cross-replica propagation under load** ({verdict}, limit {PROPAGATION_LIMIT_S:.0f} s, steps "
                 f"up to {upto} users, i.e. up to the capacity): {len(delays)} enrolments on one worker identified "
                 f"through the other worker: median {statistics.median(delays):.0f} ms, p95 "
                 f"{_pct(delays, 0.95):.0f} ms, max {max(delays):.0f} ms"
                 + (f"; {len(failed_probes)} probes failed" if failed_probes else "") + ".")
        beyond = [p for p in probes if p.step_users and p not in assessed and p.delay_ms is not None]
        if beyond:
            worst = max(beyond, key=lambda p: p.delay_ms or 0)
            L.append(f"  Past the saturation point (not part of the verdict): max {worst.delay_ms:.0f} ms (at "
                     f"{worst.step_users} users; that probe's finding identify call alone took "
                     f"{_fmt(worst.last_call_ms)} ms), {sum(1 for p in beyond if (p.delay_ms or 0) >= 1000)} of "
                     f"{len(beyond)} probes at 1 s or more; every probe found its subject with its "
                     f"{'first' if max(p.attempts for p in beyond) == 1 else 'first few'} identify call(s): "
                     "queueing, not replication, makes the delay there.")
    L.append(f"- Gallery `{ctx['gallery']}`: {ctx['gallery_before']} subjects before the steps "
             f"(pre-filled to {ctx['prefill']} LFW identities), {ctx['gallery_after']} after.")
    L.append(f"- Service errors in its log: {ctx['service_errors']} (lines with `Traceback`, `ERROR` or a 5xx access "
             "log entry).")
    L.append("")
    if plot_path:
        L += [f"![RPS and p95 per step]({plot_path.name})", ""]

    L += ["## Set-up", ""]
    L += [f"- Machine: {m['cpu']}, {m['cores']} logical cores ({m['affinity']} usable), {m['ram_gib']} GiB RAM, "
          f"Linux {m['kernel']}, Python {m['python']}, {m['redis']}, {m['locust']}.",
          "- Everything on this one machine, loopback only: `redis-server` (no persistence), the service "
          "(`python -m service`, `ANYFACE_WORKERS=2`, `ANYFACE_STORE=redis://127.0.0.1:<port>/0`, one API key, "
          "all other settings at their defaults: ONNX Runtime on CPU, exact FAISS index) and Locust (one process). "
          f"Service code: commit {ctx.get('code', 'not recorded')}.",
          "- The two uvicorn workers share one listening socket; each holds its own FAISS index and follows the "
          "Redis change feed, so they are two replicas of the gallery. Established connections per worker during "
          "each step are in the table below (Locust users keep their connection; the probe's short connections "
          "are included). The kernel does not balance them: whichever worker accepts first gets the connection, "
          "so the split can be uneven (in a trial run, 4 users all landed on one worker). In the compose stack "
          "nginx balances requests between replicas instead.",
          f"- Traffic: `deploy/locust/locustfile.py` — identify 70 %, verify 20 % (half image pairs, half against "
          f"an enrolled subject), enrol 10 % (short-lived `load-…` subjects, each user deletes them again, keeping at "
          f"most 10); probes 80 % genuine / 20 % impostor LFW photos; think time 0.5–1.5 s per user. Each step: "
          f"`locust --headless -u N -r N --run-time {ctx['step_time']}s --reset-stats` (statistics from the "
          f"moment all users run), hard timeout {ctx['step_time'] + 60} s.",
          f"- Steps: {', '.join(str(s.users) for s in steps)} users (asked: {ctx['users_asked']}); stepping stops one "
          f"step after the throughput plateau (RPS growth below {ctx['min_gain']:.0%} of the users' growth, or a "
          f"failure). The saturation point is the first step with a failure, that plateau, or an aggregate p95 above "
          f"{ctx['p95_factor']:g}× the previous step's (and above 200 ms); the reported load is the highest step "
          "before it.",
          "- Latencies are Locust's client-side response times (ms; Locust rounds percentiles above 100 ms to two "
          "significant digits). RPS = requests / step duration.", ""]

    L += ["## Background load", ""]
    L += [f"Load average before the run: {ctx['load_before']}; after: {ctx['load_after']} (`uptime`). "
          "CPU below is in % of one core (200 % = both cores busy), means over each step's 2-s samples; "
          "\"other\" is everything not started by this run (e.g. training jobs of other engineers).", ""]
    L += ["| users | load avg (1 min) | system CPU | service | Redis | Locust | other | connections per worker |",
          "|---:|---:|---:|---:|---:|---:|---:|---|"]
    for s in steps:
        ss = [x for x in samples if x["users"] == s.users]
        if not ss:
            continue
        conns = {}
        for x in ss:
            for pid, n in x["connections"].items():
                conns.setdefault(pid, []).append(n)
        conn_s = " / ".join(f"{statistics.mean(v):.1f}" for _, v in sorted(conns.items())) or "–"

        def mean(key: str, ss: list[dict] = ss) -> float:
            return statistics.mean(x[key] for x in ss)
        L.append(f"| {s.users} | {mean('load1'):.2f} | {mean('system_cpu'):.0f} % | {mean('service_cpu'):.0f} % | "
                 f"{mean('redis_cpu'):.0f} % | {mean('locust_cpu'):.0f} % | {mean('other_cpu'):.0f} % | {conn_s} |")
    if ctx.get("contended"):
        L += ["", f"**The machine was shared**: {ctx['contended']}. The figures are therefore lower bounds for "
              "this hardware; an idle machine gives the service more CPU."]
    L.append("")

    L += ["## Steps", ""]
    L += ["| users | requests | failures | RPS | p50 ms | p95 ms | p99 ms | max ms |",
          "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for i, s in enumerate(steps):
        t = s.total
        mark = " (saturated)" if sat is not None and i >= sat else ""
        L.append(f"| {s.users}{mark} | {t.get('requests', 0)} | {t.get('failures', 0)} | {s.rps:.2f} | "
                 f"{_fmt(t.get('p50'))} | "
                 f"{_fmt(t.get('p95'))} | {_fmt(t.get('p99'))} | {_fmt(t.get('max'))} |")
    L.append("")
    L += ["### Per endpoint", ""]
    L += ["| users | endpoint | requests | failures | RPS | p50 ms | p95 ms | p99 ms |",
          "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for s in steps:
        names = [n for n in ENDPOINT_ORDER if n in s.stats] + sorted(set(s.stats) - set(ENDPOINT_ORDER))
        for n in names:
            r = s.stats[n]
            L.append(f"| {s.users} | {SHORT_NAMES.get(n, n)} | {r['requests']} | {r['failures']} | {r['rps']:.2f} | "
                     f"{_fmt(r['p50'])} | {_fmt(r['p95'])} | {_fmt(r['p99'])} |")
    L.append("")
    fails = [(s.users, f) for s in steps for f in s.failures]
    L += ["### Failures", ""]
    if fails:
        L += ["| users | method | name | error | occurrences |", "|---:|---|---|---|---:|"]
        for users, f in fails:
            err = f.get("Error", "").replace("|", "\\|").replace("\n", " ")[:200]
            L.append(f"| {users} | {f.get('Method', '')} | {f.get('Name', '')} | {err} | {f.get('Occurrences', '')} |")
    else:
        L.append("None: no request failed in any step.")
    L.append("")

    L += ["## Cross-replica propagation under load", ""]
    L += ["A probe thread in `run_load.py` opens keep-alive connections until it has one to each uvicorn worker "
          "(the worker that accepted a connection is read from the process table, `psutil`), enrols a fresh "
          "`probe-…` subject through one worker, then sends `POST /v1/identify` with the same photo through the "
          "other worker until the subject is among the candidates, and deletes it; the direction alternates. "
          "The delay runs from the enrolment's `201` to the identify answer that finds the subject (it includes that "
          f"identify call, itself slowed by the load). One probe every {ctx['probe_interval']:.0f} s during every "
          "step, on top of the Locust traffic. When the first identify call already finds the subject, the "
          "replication itself took at most the measured delay; the last column shows how much of the delay was "
          "that identify call's own latency.", ""]
    L += ["| users | probes | median ms | p95 ms | max ms | identify calls until found (max) | failed | "
          "median latency of the finding identify call, ms |",
          "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in steps:
        ps = [p for p in probes if p.step_users == s.users]
        ds = [p.delay_ms for p in ps if p.delay_ms is not None]
        cs = [p.last_call_ms for p in ps if p.delay_ms is not None and p.last_call_ms is not None]
        if not ps:
            continue
        L.append(f"| {s.users} | {len(ps)} | {_fmt(statistics.median(ds) if ds else None)} | "
                 f"{_fmt(_pct(ds, 0.95) if ds else None)} | {_fmt(max(ds) if ds else None)} | "
                 f"{max(p.attempts for p in ps)} | {len(ps) - len(ds)} | "
                 f"{_fmt(statistics.median(cs) if cs else None)} |")
    errs = [p.error for p in probes if p.error]
    if errs:
        L += ["", "Probe errors: " + "; ".join(sorted(set(errs))[:5])]
    L.append("")

    L += ["## Reproduce", "", "```sh", ctx["command"], "```", "",
          "`make load` creates the virtualenv with the `load` extra, installs `redis-server` when missing and runs "
          "`python -m deploy.locust.run_load` with its defaults; `--help` lists the flags (`--prefill`, `--users`, "
          "`--step-time`, `--workers`, …). The run takes about steps × (step time + 5 s) plus the pre-fill "
          "(15–35 s for 1,000 identities on two shared cores), i.e. about 9 minutes with the defaults, "
          "and needs LFW under `$ANYFACE_DATA_DIR`.", ""]
    history = earlier_runs(ctx)
    if history:
        L += ["## Earlier runs of this checkout", "",
              "The same load test run earlier (raw results under `runs/load/`). On a shared machine the "
              "capacity moves with what else runs: compare the background load.", "",
              "| run | service code | gallery | load avg before | other CPU (mean) | steps (users) | reported load | "
              "saturation at | "
              "propagation up to the capacity: median / max ms |",
              "|---|---|---:|---|---:|---|---|---:|---|", *history, ""]
    if ctx.get("notes"):
        L += ["## Notes", ""] + [f"- {n}" for n in ctx["notes"]] + [""]
    path.write_text("\n".join(L))


# --- main ------------------------------------------------------------------------------------------------


def gallery_size(port: int, api_key: str, workers: WorkerMap, gallery: str) -> int | None:
    c = Client(port, api_key, workers, timeout=10)
    try:
        c.connect()
        status, body = c.request("GET", f"/v1/galleries/{gallery}")
        return json.loads(body)["subjects"] if status == 200 else None
    except (OSError, http.client.HTTPException, ValueError, KeyError):
        return None
    finally:
        c.close()


def count_service_errors(log_path: Path) -> tuple[int, list[str]]:
    lines = []
    with contextlib.suppress(OSError):
        for line in log_path.read_text(errors="replace").splitlines():
            if "Traceback" in line or " ERROR " in line or any(f'" {c}' in line for c in ("500", "502", "503", "504")):
                lines.append(line)
    return len(lines), lines[:20]


def report_only(results_dir: Path, out: Path, plot_path: Path) -> int:
    d = json.loads((results_dir / "results.json").read_text())
    ctx = d["ctx"]
    ctx.setdefault("p95_factor", 2.0)
    steps = [Step(**{k: v for k, v in s.items() if k in Step.__dataclass_fields__}) for s in d["steps"]]
    probes = [ProbeResult(**{k: v for k, v in p.items() if k in ProbeResult.__dataclass_fields__})
              for p in d["probes"]]
    sat = saturation(steps, ctx["min_gain"], ctx["p95_factor"])
    plot(steps, plot_path, sat)
    write_report(out, ctx, steps, sat, probes, d["samples"], plot_path)
    log.info("rewrote %s and %s from %s", out, plot_path, results_dir)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prefill", type=int, default=1000, help="LFW identities in the gallery (default 1000)")
    ap.add_argument("--gallery", default="loadtest")
    ap.add_argument("--users", default="1,2,4,8,16,32,48,64,96,128,192", help="user steps, comma-separated")
    ap.add_argument("--step-time", type=int, default=40, help="seconds per step (default 40)")
    ap.add_argument("--min-gain", type=float, default=0.5,
                    help="saturated when RPS grows by less than this share of the users' growth (default 0.5)")
    ap.add_argument("--p95-factor", type=float, default=2.0,
                    help="saturated when the p95 grows by more than this factor from one step to the next")
    ap.add_argument("--report-only", type=Path, default=None, metavar="RESULTS_DIR",
                    help="only rewrite the report and plot from RESULTS_DIR/results.json of an earlier run")
    ap.add_argument("--no-stop", action="store_true", help="run every step, also after saturation")
    ap.add_argument("--workers", type=int, default=2, help="uvicorn workers (default 2)")
    ap.add_argument("--probe-interval", type=float, default=3.0, help="seconds between propagation probes")
    ap.add_argument("--data-dir", default=os.environ.get("ANYFACE_DATA_DIR"))
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "load.md")
    ap.add_argument("--plot", type=Path, default=ROOT / "docs" / "load_steps.png")
    ap.add_argument("--results", type=Path, default=None, help="raw results dir (default runs/load/<timestamp>)")
    ap.add_argument("--max-time", type=float, default=1800, help="stop stepping after this many seconds in all")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    if args.report_only:
        return report_only(args.report_only, args.out, args.plot)
    if not shutil.which("redis-server"):
        log.error("redis-server not found (apt-get install redis-server, or `make system-deps`)")
        return 2
    t_start = time.monotonic()
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    out_dir = args.results or ROOT / "runs" / "load" / datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    users_list = [int(u) for u in args.users.split(",") if u.strip()]
    plan = pf.make_plan(pf.lfw_root(args.data_dir), args.prefill, args.gallery)
    api_key = "load-" + uuid.uuid4().hex
    load_before = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    machine = machine_info()
    code = code_version()
    command = shlex.join(["python", "-m", "deploy.locust.run_load", *(argv if argv is not None else sys.argv[1:])])
    if os.environ.get("MAKELEVEL"):
        command = "make load" + (f"  # = {command}" if argv or sys.argv[1:] else "")

    redis_proc = service = locust_proc = None

    def _terminate(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)  # run the clean-up below also on SIGTERM

    signal.signal(signal.SIGTERM, _terminate)
    tmp = Path(tempfile.mkdtemp(prefix="anyface-load-"))
    steps: list[Step] = []
    probe = monitor = None
    notes: list[str] = []
    try:
        redis_port = free_port()
        redis_proc = start(["redis-server", "--port", str(redis_port), "--bind", LOOPBACK, "--dir", str(tmp),
                            "--save", "", "--appendonly", "no", "--protected-mode", "yes"], out_dir / "redis.log")
        wait_tcp(redis_port, redis_proc, 20, "redis-server")

        port = free_port()
        env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        env.update({
            "ANYFACE_WORKERS": str(args.workers), "ANYFACE_PORT": str(port), "ANYFACE_HOST": LOOPBACK,
            "ANYFACE_STORE": f"redis://{LOOPBACK}:{redis_port}/0", "ANYFACE_API_KEYS": api_key,
        })
        env.pop("ANYFACE_API_KEYS_FILE", None)
        service = start([sys.executable, "-m", "service"], out_dir / "service.log", env)
        workers = WorkerMap(service.pid, port)
        wait_tcp(port, service, 180, "service")
        wait_ready(port, api_key, workers, args.workers, 180)
        host = f"http://{LOOPBACK}:{port}"

        t0 = time.monotonic()
        counts = pf.prefill(host, plan, api_key, timeout=60, workers=2)
        notes.append(f"Pre-fill of {len(plan.enrolled)} identities took {time.monotonic() - t0:.0f} s: {counts}.")
        gallery_before = gallery_size(port, api_key, workers, args.gallery)

        monitor = Monitor(workers, service.pid, redis_proc.pid)
        monitor.start()
        probe = PropagationProbe(port, api_key, workers, args.gallery, list(plan.impostors[:200]),
                                 args.probe_interval)
        probe.start()

        locust_env = dict(os.environ)
        locust_env.update({
            "ANYFACE_API_KEY": api_key, "ANYFACE_LOAD_GALLERY": args.gallery,
            "ANYFACE_LOAD_PREFILL": str(args.prefill), "ANYFACE_LOAD_SKIP_PREFILL": "1",
        })
        if args.data_dir:
            locust_env["ANYFACE_DATA_DIR"] = str(args.data_dir)
        for users in users_list:
            if time.monotonic() - t_start > args.max_time:
                notes.append(f"Stopped before {users} users: the run reached --max-time {args.max_time:.0f} s.")
                break
            if service.poll() is not None:
                raise RuntimeError(f"the service exited with {service.returncode}")
            log.info("step: %d users for %d s", users, args.step_time)
            monitor.step_users = probe.step_users = users
            step, locust_proc = run_step(users, args.step_time, host, locust_env, out_dir)
            monitor.locust_pid = locust_proc.pid
            finish_step(step, locust_proc, out_dir, args.step_time + 60)
            monitor.locust_pid = None
            monitor.step_users = probe.step_users = 0
            steps.append(step)
            log.info("step %d users: %.2f RPS, %d failures, p95 %s ms", users, step.rps, step.n_failures,
                     step.total.get("p95"))
            plateau = saturation(steps, args.min_gain)
            if plateau is not None and not args.no_stop and len(steps) - 1 > plateau:
                break  # one step past the throughput plateau confirms it
            time.sleep(3)  # let the churn clean-up settle between steps
        probe.stop_event.set()
        probe.join(15)
        monitor.stop_event.set()
        monitor.join(5)
        gallery_after = gallery_size(port, api_key, workers, args.gallery)
        n_err, err_lines = count_service_errors(out_dir / "service.log")
        if err_lines:
            notes.append("First service error lines: " + " / ".join(f"`{x[:160]}`" for x in err_lines[:5]))
        sat = saturation(steps, args.min_gain, args.p95_factor)
        load_after = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        others = [x["other_cpu"] for x in monitor.samples if x["users"]]
        contended = None
        if (others and statistics.mean(others) > 20) or max(os.getloadavg()[0], float(load_before.split(",")[0])) > 2:
            contended = (f"other processes used {statistics.mean(others) if others else 0:.0f} % of a core on average "
                         f"during the steps, load average {load_before} before and {load_after} after the run "
                         f"on {machine['cores']} cores")
        ctx = {
            "machine": machine, "code": code, "command": command, "started": started,
            "out_dir": os.path.relpath(out_dir, ROOT),
            "gallery": args.gallery, "prefill": args.prefill, "gallery_before": gallery_before,
            "gallery_after": gallery_after, "service_errors": n_err, "step_time": args.step_time,
            "users_asked": args.users, "min_gain": args.min_gain, "p95_factor": args.p95_factor,
            "probe_interval": args.probe_interval,
            "load_before": load_before, "load_after": load_after, "contended": contended, "notes": notes,
        }
        plot_path = None
        if steps:
            with contextlib.suppress(Exception):
                plot(steps, args.plot, sat)
                plot_path = args.plot
        write_report(args.out, ctx, steps, sat, probe.results, monitor.samples, plot_path)
        (out_dir / "results.json").write_text(json.dumps(
            {"ctx": ctx, "steps": [asdict(s) for s in steps], "probes": [asdict(p) for p in probe.results],
             "samples": monitor.samples}, indent=1, default=str))
        log.info("wrote %s and %s (raw results in %s)", args.out, plot_path, out_dir)

        assessed = assessed_probes(steps, sat, probe.results)
        delays = [p.delay_ms for p in assessed if p.delay_ms is not None]
        ok = bool(steps) and any(s.n_failures == 0 for s in steps)
        if delays:
            log.info("propagation up to the capacity: n=%d median %.0f ms max %.0f ms (limit %.0f ms)", len(delays),
                     statistics.median(delays), max(delays), PROPAGATION_LIMIT_S * 1000)
        if not propagation_ok(assessed):
            log.error("propagation: an enrolment took %.0f ms or more to reach the other worker, or was not found",
                      PROPAGATION_LIMIT_S * 1000)
            ok = False
        return 0 if ok else 1
    finally:
        for t in (probe, monitor):
            if t is not None:
                t.stop_event.set()
        stop_process(locust_proc, "locust", grace=5)
        stop_process(service, "service")
        stop_process(redis_proc, "redis-server")
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

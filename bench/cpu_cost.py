"""`make bench-cpu` / `python -m bench.cpu_cost`: what a request costs the service in CPU, one at a time and
under load, and where that CPU goes.

It starts what `make load` starts (redis-server, the service with two uvicorn workers on that Redis store, a
gallery pre-filled with 1,000 LFW identities), then for each route (identify against the gallery, verify of
two uploaded photos, enrol of one photo):

- alone: one client sends its requests one after another;
- under load: `--clients` clients send theirs back to back (no think time), which keeps both workers busy.

The CPU is the service processes' own (user + system seconds of the uvicorn parent and its workers, from
/proc through psutil) between the start and the end of a phase, divided by the requests answered in it, so the
client's CPU, which shares the machine, does not count (it is recorded beside). The service's own counter
`anyface_stage_cpu_seconds_total` (the CPU time of the thread that ran each stage, models included when their
sessions run single-threaded, as they do with one core per worker) splits it into stages; what no stage holds is
the HTTP side (multipart parsing, validation, JSON, the event loop, thread hand-offs). Last, py-spy samples the
workers during another identify phase under load: the shares of the Python threads' samples and a flame graph
(bench/stage_profile.py).

Extra service settings for an experiment: `--env ANYFACE_INTRA_OP_THREADS=1` (repeatable). Results go to
runs/cpu/<label>.json and the flame graph to docs/ when `--flame` names a PNG.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from bench.stage_profile import Profile, flame_png, record
from deploy.locust import prefill as pf
from deploy.locust.driver import code_version, machine_info
from deploy.locust.processes import LOOPBACK, ROOT, free_port, start, stop_process, wait_tcp
from deploy.locust.workers import Client, WorkerMap, wait_ready

log = logging.getLogger("anyface.cpu_cost")
GALLERY = "cpucost"
ROUTES = ("identify", "verify", "enrol")


@dataclass
class Phase:
    route: str
    mode: str  # "alone" or "load"
    clients: int
    seconds: float
    answered: int
    errors: int
    service_cpu_s: float
    client_cpu_s: float
    latencies_ms: list[float] = field(repr=False)
    stage_cpu_s: dict[str, float] = field(default_factory=dict)
    mean_batch: float | None = None  # faces per call of the trunk embedder

    def stage_ms(self) -> dict[str, float]:
        """CPU ms per answered request in each stage, and `outside stages` for the rest of the service's CPU."""
        n = max(1, self.answered)
        out = {stage: 1000 * cpu / n for stage, cpu in sorted(self.stage_cpu_s.items(), key=lambda kv: -kv[1])
               if not stage.startswith("batch ")}
        out["outside stages"] = self.cpu_ms_per_request - sum(out.values())
        return {k: round(v, 2) for k, v in out.items()}

    @property
    def cpu_ms_per_request(self) -> float:
        return 1000 * self.service_cpu_s / max(1, self.answered)

    @property
    def rps(self) -> float:
        return self.answered / self.seconds if self.seconds else 0.0

    def summary(self) -> dict:
        lat = sorted(self.latencies_ms) or [float("nan")]
        return {
            "route": self.route, "mode": self.mode, "clients": self.clients, "seconds": round(self.seconds, 2),
            "answered": self.answered, "errors": self.errors, "rps": round(self.rps, 2),
            "service_cpu_s": round(self.service_cpu_s, 3), "client_cpu_s": round(self.client_cpu_s, 3),
            "cpu_ms_per_request": round(self.cpu_ms_per_request, 2),
            "p50_ms": round(statistics.median(lat), 1), "p95_ms": round(lat[int(0.95 * (len(lat) - 1))], 1),
            "stage_cpu_ms": self.stage_ms(),
            "mean_embed_batch_faces": None if self.mean_batch is None else round(self.mean_batch, 2),
        }


class Service:
    """The service processes and their CPU seconds so far."""

    def __init__(self, pid: int) -> None:
        self.parent = psutil.Process(pid)
        self.processes = [self.parent, *self.parent.children(recursive=True)]

    def cpu_s(self) -> float:
        total = 0.0
        for p in self.processes:
            times = p.cpu_times()
            total += times.user + times.system
        return total


STAGE_CPU_LINE = re.compile(r'^anyface_stage_cpu_seconds_total\{stage="(?P<stage>[^"]+)"\} (?P<value>\S+)$')
BATCH_LINE = re.compile(r'^anyface_embed_batch_size_(?P<stat>sum|count)\{branch="112"\} (?P<value>\S+)$')


def stage_cpu(port: int, api_key: str, workers: WorkerMap) -> dict[str, float]:
    """The service's CPU seconds per stage so far, all workers together (the service runs with
    PROMETHEUS_MULTIPROC_DIR, so any worker answers for all), and under `batch sum` / `batch count` the trunk's
    embedding batches (faces per model call)."""
    c = Client(port, api_key, workers, timeout=30)
    c.connect()
    try:
        status, body = c.request("GET", "/metrics")
    finally:
        c.close()
    if status != 200:
        raise RuntimeError(f"/metrics answered {status}")
    found: dict[str, float] = {}
    for line in body.decode().splitlines():
        match = STAGE_CPU_LINE.match(line)
        if match:
            found[match["stage"]] = found.get(match["stage"], 0.0) + float(match["value"])
        batch = BATCH_LINE.match(line)
        if batch:
            key = f"batch {batch['stat']}"
            found[key] = found.get(key, 0.0) + float(batch["value"])
    return found


class Requests:
    """The requests of each route, on LFW photos of the pre-filled gallery."""

    def __init__(self, plan: pf.Plan) -> None:
        self.plan = plan
        self.enrolled: list[str] = []
        self._lock = threading.Lock()
        self._i = 0

    def _next(self) -> int:
        with self._lock:
            self._i += 1
            return self._i

    def make(self, route: str) -> tuple[str, list]:
        i = self._next()
        ident = self.plan.enrolled[i % len(self.plan.enrolled)]
        probe = ident.probes[i % len(ident.probes)]
        if route == "identify":
            return "/v1/identify", [("image", pf.image_file(probe)), ("gallery", GALLERY), ("top_k", "5")]
        if route == "verify":
            other = self.plan.enrolled[(i * 7919) % len(self.plan.enrolled)] if i % 2 else ident
            return "/v1/verify", [("image_a", pf.image_file(ident.enrol[0])),
                                  ("image_b", pf.image_file(other.probes[0]))]
        if route == "enrol":
            subject = f"cpu-{uuid.uuid4().hex[:16]}"
            with self._lock:
                self.enrolled.append(subject)
            photo = self.plan.impostors[i % len(self.plan.impostors)] if self.plan.impostors else probe
            return (f"/v1/galleries/{GALLERY}/subjects/{subject}/faces",
                    [("images", pf.image_file(photo)), ("allow_multiple", "true")])
        raise ValueError(route)


def run_phase(route: str, mode: str, clients: int, port: int, api_key: str, workers: WorkerMap, service: Service,
              reqs: Requests, seconds: float, count: int, warmup_s: float = 2.0) -> Phase:
    """Clients send requests of `route` back to back: `count` in all for one client alone, else for `seconds`
    after `warmup_s`. The CPU and the requests counted are those between the window's start and end."""
    me = psutil.Process()
    window: dict[str, float] = {}
    answered: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop = threading.Event()
    started = threading.Event()

    def client_loop() -> None:
        c = Client(port, api_key, workers, timeout=60)
        c.connect()
        done = 0
        while not stop.is_set() and (mode != "alone" or done < count):
            path, fields = reqs.make(route)
            t0 = time.perf_counter()
            status, _ = c.request("POST", path, fields)
            t1 = time.perf_counter()
            done += 1
            if started.is_set():
                with lock:
                    if status in (200, 201):
                        answered.append((t1 - t0) * 1000)
                    else:
                        errors[0] += 1
        c.close()

    threads = [threading.Thread(target=client_loop, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    if mode != "alone":
        time.sleep(warmup_s)
    stages0 = stage_cpu(port, api_key, workers)
    window["cpu0"], window["me0"], window["t0"] = service.cpu_s(), sum(me.cpu_times()[:2]), time.monotonic()
    started.set()
    if mode == "alone":
        for t in threads:
            t.join()
    else:
        time.sleep(seconds)
    with lock:
        stop_count = len(answered), errors[0]
        lat = list(answered)
    cpu1, me1, t1 = service.cpu_s(), sum(me.cpu_times()[:2]), time.monotonic()
    stages1 = stage_cpu(port, api_key, workers)
    stop.set()
    for t in threads:
        t.join(60)
    # the two /metrics scrapes bracket the CPU window (the stages' counters include a few ms more of the load)
    delta = {k: v - stages0.get(k, 0.0) for k, v in stages1.items() if v - stages0.get(k, 0.0) > 0}
    batches = delta.get("batch count")
    return Phase(route, mode, clients, t1 - window["t0"], stop_count[0], stop_count[1], cpu1 - window["cpu0"],
                 me1 - window["me0"], lat, delta, delta.get("batch sum", 0.0) / batches if batches else None)


def wait_single(port: int, api_key: str, workers: WorkerMap, timeout: float) -> None:
    """Until a single-process service answers /readyz with 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        c = Client(port, api_key, workers, timeout=5)
        try:
            c.connect()
            if c.request("GET", "/readyz")[0] == 200:
                return
        except (OSError, http.client.HTTPException):
            pass
        finally:
            c.close()
        time.sleep(0.3)
    raise TimeoutError(f"service not ready within {timeout:.0f}s")


def delete_enrolled(port: int, api_key: str, workers: WorkerMap, reqs: Requests) -> None:
    c = Client(port, api_key, workers, timeout=60)
    c.connect()
    for subject in reqs.enrolled:
        c.request("DELETE", f"/v1/galleries/{GALLERY}/subjects/{subject}")
    c.close()
    reqs.enrolled.clear()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--label", default="current", help="names the results file runs/cpu/<label>.json")
    ap.add_argument("--prefill", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2, help="uvicorn workers (default 2, as `make load`)")
    ap.add_argument("--clients", type=int, default=16, help="clients under load (default 16)")
    ap.add_argument("--seconds", type=float, default=20, help="length of each phase under load")
    ap.add_argument("--alone", type=int, default=60, help="requests per route one at a time")
    ap.add_argument("--profile-seconds", type=float, default=20, help="py-spy phase (0: none)")
    ap.add_argument("--routes", default=",".join(ROUTES))
    ap.add_argument("--flame", type=Path, default=None, help="write the flame graph PNG here")
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="extra service settings")
    ap.add_argument("--data-dir", default=os.environ.get("ANYFACE_DATA_DIR"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not shutil.which("redis-server"):
        log.error("redis-server not found (`make system-deps`)")
        return 2
    out_dir = ROOT / "runs" / "cpu"
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = pf.make_plan(pf.lfw_root(args.data_dir), args.prefill, GALLERY)
    api_key = "cpu-" + uuid.uuid4().hex
    extra = dict(kv.split("=", 1) for kv in args.env)
    tmp = Path(tempfile.mkdtemp(prefix="anyface-cpu-"))
    redis_proc = service_proc = None
    try:
        redis_port = free_port()
        redis_proc = start(["redis-server", "--port", str(redis_port), "--bind", LOOPBACK, "--dir", str(tmp),
                            "--save", "", "--appendonly", "no"], tmp / "redis.log")
        wait_tcp(redis_port, redis_proc, 20, "redis-server")
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        env.update({"ANYFACE_WORKERS": str(args.workers), "ANYFACE_PORT": str(port), "ANYFACE_HOST": LOOPBACK,
                    "ANYFACE_STORE": f"redis://{LOOPBACK}:{redis_port}/0", "ANYFACE_API_KEYS": api_key, **extra})
        env.pop("ANYFACE_API_KEYS_FILE", None)
        metrics_dir = tmp / "metrics"
        metrics_dir.mkdir()
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        service_proc = start([sys.executable, "-m", "service"], out_dir / f"{args.label}.service.log", env)
        workers = WorkerMap(service_proc.pid, port)
        wait_tcp(port, service_proc, 180, "service")
        if args.workers > 1:
            wait_ready(port, api_key, workers, args.workers, 180)
        else:  # one worker is the uvicorn process itself: no child to map connections to
            wait_single(port, api_key, workers, 180)
        pf.prefill(f"http://{LOOPBACK}:{port}", plan, api_key, timeout=60, workers=2)
        service = Service(service_proc.pid)
        reqs = Requests(plan)
        idle0, t0 = service.cpu_s(), time.monotonic()
        time.sleep(5)
        idle_cpu_per_s = (service.cpu_s() - idle0) / (time.monotonic() - t0)
        phases: list[Phase] = []
        for route in args.routes.split(","):
            for mode, clients in (("alone", 1), ("load", args.clients)):
                phase = run_phase(route, mode, clients, port, api_key, workers, service, reqs, args.seconds,
                                  args.alone)
                phases.append(phase)
                log.info("%s", phase.summary())
                delete_enrolled(port, api_key, workers, reqs)
        profile_summary: dict = {}
        if args.profile_seconds > 0:
            raw = out_dir / f"{args.label}.pyspy.txt"
            spy = record(service_proc.pid, args.profile_seconds + 2, raw)
            time.sleep(1)
            phase = run_phase("identify", "load", args.clients, port, api_key, workers, service, reqs,
                              args.profile_seconds, 0, warmup_s=0.5)
            _, err = spy.communicate(timeout=120)
            if spy.returncode != 0 or not raw.exists():
                log.warning("py-spy failed (%s): %s", spy.returncode, err.decode(errors="replace")[-500:])
            else:
                profile = Profile.parse(raw.read_text())
                profile_summary = {"samples": profile.samples, "shares": profile.stage_shares(),
                                   "phase": phase.summary()}
                log.info("stage shares: %s", {k: f"{v:.1%}" for k, v in profile_summary["shares"].items()})
                if args.flame:
                    flame_png(profile, args.flame, f"identify under load ({args.clients} clients), {args.label}")
        result = {
            "label": args.label, "code": code_version(), "machine": machine_info(),
            "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "settings": extra,
            "command": " ".join(["python -m bench.cpu_cost", *(argv if argv is not None else sys.argv[1:])]),
            "loadavg_after": os.getloadavg(), "idle_service_cpu_per_s": round(idle_cpu_per_s, 4),
            "phases": [p.summary() for p in phases], "profile": profile_summary,
        }
        path = out_dir / f"{args.label}.json"
        path.write_text(json.dumps(result, indent=1))
        print(table(result))
        log.info("wrote %s", path)
        return 0
    finally:
        stop_process(service_proc, "service")
        stop_process(redis_proc, "redis-server")
        shutil.rmtree(tmp, ignore_errors=True)


def table(result: dict) -> str:
    """The phases as a markdown table: CPU per request alone and under load, and their ratio."""
    by = {(p["route"], p["mode"]): p for p in result["phases"]}
    lines = ["| route | CPU ms alone | CPU ms under load | ratio | req/s under load | p50 / p95 ms alone | "
             "p50 / p95 ms under load |", "|---|---:|---:|---:|---:|---|---|"]
    for route in ROUTES:
        alone, load = by.get((route, "alone")), by.get((route, "load"))
        if not alone or not load:
            continue
        ratio = load["cpu_ms_per_request"] / alone["cpu_ms_per_request"]
        lines.append(f"| {route} | {alone['cpu_ms_per_request']:.1f} | {load['cpu_ms_per_request']:.1f} | "
                     f"{ratio:.2f} | {load['rps']:.1f} | {alone['p50_ms']:.0f} / {alone['p95_ms']:.0f} | "
                     f"{load['p50_ms']:.0f} / {load['p95_ms']:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

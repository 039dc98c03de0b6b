"""The load driver: starts redis-server and the service on loopback, pre-fills the gallery, runs Locust headless
in steps of users (one CSV report per step, each bounded by a hard timeout) with the propagation probe and the
resource monitor beside it, stops stepping one step past the throughput plateau, hands the results to the
report writer and stops every process it started, also on errors, SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import logging
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import psutil  # a dependency of locust (the `load` extra)

from deploy.locust import prefill as pf
from deploy.locust.analysis import (
    PROPAGATION_LIMIT_S,
    ProbeResult,
    Step,
    assessed_probes,
    propagation_ok,
    saturation,
)
from deploy.locust.probes import Monitor, PropagationProbe
from deploy.locust.processes import LOOPBACK, ROOT, free_port, start, stop_process, wait_tcp
from deploy.locust.report import plot, write_report
from deploy.locust.workers import WorkerMap, gallery_size, wait_ready

log = logging.getLogger("anyface.run_load")

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"


# --- Locust steps ----------------------------------------------------------------------------------------


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


# --- what the run ran on ---------------------------------------------------------------------------------


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


def count_service_errors(log_path: Path) -> tuple[int, list[str]]:
    lines = []
    with contextlib.suppress(OSError):
        for line in log_path.read_text(errors="replace").splitlines():
            if "Traceback" in line or " ERROR " in line or any(f'" {c}' in line for c in ("500", "502", "503", "504")):
                lines.append(line)
    return len(lines), lines[:20]



# --- the run ---------------------------------------------------------------------------------------------


def _service_env(args: argparse.Namespace, port: int, redis_port: int, api_key: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update({
        "ANYFACE_WORKERS": str(args.workers), "ANYFACE_PORT": str(port), "ANYFACE_HOST": LOOPBACK,
        "ANYFACE_STORE": f"redis://{LOOPBACK}:{redis_port}/0", "ANYFACE_API_KEYS": api_key,
    })
    env.pop("ANYFACE_API_KEYS_FILE", None)
    return env


def _locust_env(args: argparse.Namespace, api_key: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "ANYFACE_API_KEY": api_key, "ANYFACE_LOAD_GALLERY": args.gallery,
        "ANYFACE_LOAD_PREFILL": str(args.prefill), "ANYFACE_LOAD_SKIP_PREFILL": "1",
    })
    if args.data_dir:
        env["ANYFACE_DATA_DIR"] = str(args.data_dir)
    return env


def _contention(samples: list[dict], load_before: str, load_after: str, cores: int | None) -> str | None:
    """Why the machine counts as shared during the run (other processes' CPU, load average), or None."""
    others = [x["other_cpu"] for x in samples if x["users"]]
    if (others and statistics.mean(others) > 20) or max(os.getloadavg()[0], float(load_before.split(",")[0])) > 2:
        return (f"other processes used {statistics.mean(others) if others else 0:.0f} % of a core on average "
                f"during the steps, load average {load_before} before and {load_after} after the run "
                f"on {cores} cores")
    return None


def _verdict(steps: list[Step], sat: int | None, probes: list[ProbeResult]) -> bool:
    """A step ran without failures, and every probe up to the capacity found its subject within the limit."""
    assessed = assessed_probes(steps, sat, probes)
    delays = [p.delay_ms for p in assessed if p.delay_ms is not None]
    ok = bool(steps) and any(s.n_failures == 0 for s in steps)
    if delays:
        log.info("propagation up to the capacity: n=%d median %.0f ms max %.0f ms (limit %.0f ms)", len(delays),
                 statistics.median(delays), max(delays), PROPAGATION_LIMIT_S * 1000)
    if not propagation_ok(assessed):
        log.error("propagation: an enrolment took %.0f ms or more to reach the other worker, or was not found",
                  PROPAGATION_LIMIT_S * 1000)
        ok = False
    return ok


def run(args: argparse.Namespace, command: str) -> int:
    """One load test with run_load.py's options: 0 when it passed, 1 when it failed, 2 without redis-server."""
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
        service = start([sys.executable, "-m", "service"], out_dir / "service.log",
                        _service_env(args, port, redis_port, api_key))
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

        locust_env = _locust_env(args, api_key)
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
        ctx = {
            "machine": machine, "code": code, "command": command, "started": started,
            "out_dir": os.path.relpath(out_dir, ROOT),
            "gallery": args.gallery, "prefill": args.prefill, "gallery_before": gallery_before,
            "gallery_after": gallery_after, "service_errors": n_err, "step_time": args.step_time,
            "users_asked": args.users, "min_gain": args.min_gain, "p95_factor": args.p95_factor,
            "probe_interval": args.probe_interval,
            "load_before": load_before, "load_after": load_after,
            "contended": _contention(monitor.samples, load_before, load_after, machine["cores"]), "notes": notes,
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
        return 0 if _verdict(steps, sat, probe.results) else 1
    finally:
        for t in (probe, monitor):
            if t is not None:
                t.stop_event.set()
        stop_process(locust_proc, "locust", grace=5)
        stop_process(service, "service")
        stop_process(redis_proc, "redis-server")
        shutil.rmtree(tmp, ignore_errors=True)

"""The report writer: docs/load.md (summary, set-up, background load, step and endpoint tables, failures,
propagation, how to reproduce, earlier runs of this checkout) and the RPS/p95 plot, from the steps, the probes
and the monitor's samples of a run; `report_only` rewrites both from an earlier run's results.json."""

from __future__ import annotations

import json
import logging
import os
import statistics
from pathlib import Path

from deploy.locust.analysis import (
    PROPAGATION_LIMIT_S,
    ProbeResult,
    Step,
    assessed_probes,
    capacity_steps,
    load_results,
    propagation_ok,
    reported_load,
    saturation,
    saturation_reason,
)
from deploy.locust.processes import ROOT

log = logging.getLogger("anyface.run_load")

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


def _fmt(v: float | None, digits: int = 0) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


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
            steps, probes = load_results(d)
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if not steps:
            continue
        sat = saturation(steps, d["ctx"].get("min_gain", 0.5), d["ctx"].get("p95_factor", 2.0))
        ok = [s for s in capacity_steps(steps, sat) if s.n_failures == 0]
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


def _capacity_lines(ctx: dict, steps: list[Step], sat: int | None) -> list[str]:
    """Summary: the reported load, the saturation point and the throughput plateau."""
    reported, highest_ok = reported_load(steps, sat)
    knee = steps[sat - 1] if sat else None
    L: list[str] = []
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
    return L


def _propagation_verdict_lines(steps: list[Step], sat: int | None, probes: list[ProbeResult]) -> list[str]:
    """Summary: the propagation verdict up to the capacity, and the probes past the saturation point."""
    L: list[str] = []
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
    return L


def _setup(ctx: dict, steps: list[Step]) -> list[str]:
    """Machine, processes, traffic mix and how steps and saturation are defined."""
    m = ctx["machine"]
    L: list[str] = ["## Set-up", ""]
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
    return L


def _background(ctx: dict, steps: list[Step], samples: list[dict]) -> list[str]:
    """The monitor's CPU and connection samples per step, and whether the machine was shared."""
    L: list[str] = ["## Background load", ""]
    L += [f"Load average before the run: {ctx['load_before']}; after: {ctx['load_after']} (`uptime`). "
          "CPU below is in % of one core (200 % = both cores busy), means over each step's 2-s samples; "
          "\"other\" is everything not started by this run (e.g. training jobs of other engineers).", ""]
    L += ["| users | load avg (1 min) | system CPU | service | Redis | Locust | other | connections per worker |",
          "|---:|---:|---:|---:|---:|---:|---:|---|"]
    for s in steps:
        ss = [x for x in samples if x["users"] == s.users]
        if not ss:
            continue
        conns: dict[int, list[int]] = {}
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
    return L


def _step_tables(steps: list[Step], sat: int | None) -> list[str]:
    """Locust's statistics per step and per endpoint, and the failures."""
    L: list[str] = ["## Steps", ""]
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
    return L


def _propagation(ctx: dict, steps: list[Step], probes: list[ProbeResult]) -> list[str]:
    """How the propagation probe works, and its delays per step."""
    L: list[str] = ["## Cross-replica propagation under load", ""]
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
    return L


def _reproduce(ctx: dict) -> list[str]:
    """The command, the earlier runs of this checkout and the run's notes."""
    L: list[str] = []
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
    return L


def write_report(path: Path, ctx: dict, steps: list[Step], sat: int | None, probes: list[ProbeResult],
                 samples: list[dict], plot_path: Path | None) -> None:
    """docs/load.md: the summary (with the plot when there is one), then one section after the other."""
    L: list[str] = []
    L += ["# Load test (Locust, two uvicorn workers on a Redis store)", ""]
    L += [f"Generated by `{ctx['command']}` (`deploy/locust/run_load.py`) on {ctx['started']}; raw results "
          f"(Locust CSVs and logs, service log, `results.json`) in `{ctx['out_dir']}` (not committed).", ""]
    L += ["## Summary", "", *_capacity_lines(ctx, steps, sat), *_propagation_verdict_lines(steps, sat, probes)]
    L.append(f"- Gallery `{ctx['gallery']}`: {ctx['gallery_before']} subjects before the steps "
             f"(pre-filled to {ctx['prefill']} LFW identities), {ctx['gallery_after']} after.")
    L.append(f"- Service errors in its log: {ctx['service_errors']} (lines with `Traceback`, `ERROR` or a 5xx access "
             "log entry).")
    L.append("")
    if plot_path:
        L += [f"![RPS and p95 per step]({plot_path.name})", ""]
    L += _setup(ctx, steps) + _background(ctx, steps, samples) + _step_tables(steps, sat)
    L += _propagation(ctx, steps, probes) + _reproduce(ctx)
    path.write_text("\n".join(L))


def report_only(results_dir: Path, out: Path, plot_path: Path) -> int:
    """Rewrite the report and the plot from RESULTS_DIR/results.json of an earlier run."""
    d = json.loads((results_dir / "results.json").read_text())
    ctx = d["ctx"]
    ctx.setdefault("p95_factor", 2.0)
    steps, probes = load_results(d)
    sat = saturation(steps, ctx["min_gain"], ctx["p95_factor"])
    plot(steps, plot_path, sat)
    write_report(out, ctx, steps, sat, probes, d["samples"], plot_path)
    log.info("rewrote %s and %s from %s", out, plot_path, results_dir)
    return 0

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

# The entry point only: the command line, logging and the choice between a run and a report rewrite.
#   driver.py     starts redis-server, the service and Locust, steps the users, collects the results
#   workers.py    HTTP connections pinned to a uvicorn worker, readiness, gallery size
#   probes.py     the propagation probe and the resource monitor threads
#   processes.py  starting, waiting for and stopping child processes
#   analysis.py   saturation point, reported load, propagation verdict (pure functions)
#   report.py     docs/load.md and docs/load_steps.png

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from pathlib import Path

from deploy.locust.driver import run
from deploy.locust.processes import ROOT
from deploy.locust.report import report_only


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
    command = shlex.join(["python", "-m", "deploy.locust.run_load", *(argv if argv is not None else sys.argv[1:])])
    if os.environ.get("MAKELEVEL"):
        command = "make load" + (f"  # = {command}" if argv or sys.argv[1:] else "")
    return run(args, command)


if __name__ == "__main__":
    sys.exit(main())

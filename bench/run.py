"""`make bench`: LFW View 2 accuracy (AnyFace and face_recognition side by side) and HTTP latency, written to
docs/benchmarks.md with a ROC plot and a latency histogram."""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

from bench.accuracy import SYSTEMS, evaluate, plot_lfw_roc
from bench.latency import plot, run
from bench.machine import machine

DOCS = Path("docs")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.run")
    parser.add_argument("--systems", nargs="+", default=SYSTEMS, choices=SYSTEMS)
    parser.add_argument("--out", type=Path, default=DOCS / "benchmarks.md")
    args = parser.parse_args()
    started = time.time()
    results, curves = evaluate(args.systems)
    plot_lfw_roc(curves, DOCS / "lfw_roc.png")
    latencies = run()
    plot(latencies, DOCS / "latency.png")
    rows = "\n".join(
        f"| {r.system} | {r.accuracy * 100:.2f}% ± {r.std * 100:.2f} | {r.tar_at_far_1e3 * 100:.2f}% | "
        f"{r.photos_without_face} | {r.photos_per_second:.1f} |"
        for r in results
    )
    lat = "\n".join(f"| {r.name} | {r.pct(50):.1f} | {r.pct(90):.1f} | {r.pct(99):.1f} | {len(r.samples_ms)} |"
                    for r in latencies)
    text = f"""# Benchmarks

Made by `make bench` (`python -m bench.run`) on {machine(platform.system())}, {time.strftime("%Y-%m-%d")}, in
{(time.time() - started) / 60:.0f} minutes. Every number below comes from that one run.

## LFW View 2 verification (6,000 pairs, 10 folds)

The standard protocol: for each fold the threshold that is best on the other nine folds is applied to it. Every
photo goes through the full pipeline: decode, detect, pick the main face, align, embed. A pair with a photo in
which no face was found counts as a non-match. Photos per second: one photo at a time end to end, one process,
on the first {200} photos.

| system | accuracy | TAR @ FAR 1e-3 | photos without a face (of 7,701) | photos/s |
|---|---|---|---|---|
{rows}

![ROC](lfw_roc.png)

## HTTP latency, one worker

`python -m service` with its defaults (one uvicorn worker, ONNX Runtime, exact FAISS search, SQLite), requests
sent one at a time from the same machine over loopback; {200} timed requests after 20 warm-up requests.
Verify compares two 250 x 250 LFW photos (two detections, two embeddings in one batch); identify searches the
largest face of a 250 x 250 photo. Galleries hold one face per subject: real LFW embeddings, then random unit
vectors once LFW runs out (an exact scan costs the same either way).

| request | p50 (ms) | p90 (ms) | p99 (ms) | requests |
|---|---|---|---|---|
{lat}

![latency](latency.png)
"""
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()

"""The fuzz stage: Schemathesis against a real service process, generated from the service's own OpenAPI schema.

`python -m tests.fuzz.run` (`make fuzz`) is the long run: rounds of every phase (examples, coverage, fuzzing,
stateful) over every operation, each round with its own seed, until at least `--requests` requests were sent; it
prints Schemathesis's progress and a line per round, then the counts (requests per operation, status codes,
5xx, check failures), and with `--doc` writes them into docs/reliability.md. `tests/fuzz/test_fuzz.py` runs one
short round of the same harness in `make test`.

The service runs as `python -m service` on a free loopback port with API keys, a fresh SQLite store and a seeded
gallery (`hooks.py` steers some generated names to the seeded ones and some uploads to real face photos). A round
fails on any 5xx answer and on any response the schema does not declare (status, content type, headers, body).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import MODEL_DIR, REPO, ServiceProcess, lfw_photo

ADMIN_KEY = "fuzz-admin-key-0001"
# Every check Schemathesis has that applies to this API. Left out: positive_data_acceptance (a schema-valid request
# may rightly be refused: random bytes are not an image, a random gallery does not exist), and the checks that need
# a second identity or resource links the schema does not declare (object_level_authorization, use_after_free,
# ensure_resource_availability).
CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_headers_conformance", "response_schema_conformance", "negative_data_rejection",
          "missing_required_header", "unsupported_method", "allow_header_conformance", "ignored_auth")
PHASES = ("examples", "coverage", "fuzzing", "stateful")
# Schemathesis's failure codes for an answer the schema does not allow: undocumented status code, missing or
# undocumented content type, malformed media type, missing headers, body not matching its schema, malformed JSON,
# undeserializable content, discriminator mismatch (ST101 is a 5xx, counted apart).
SCHEMA_CODES = {f"ST1{n:02d}" for n in range(3, 12)}
SEED_PEOPLE = [("alice", "Aaron_Peirsol", 1), ("bob", "Abdullah_Gul", 1), ("carol", "Alvaro_Uribe", 1)]
SEED_GALLERIES = ["fuzz", "fuzz-b"]
DOC_BEGIN, DOC_END = "<!-- fuzz:begin -->", "<!-- fuzz:end -->"


@dataclass
class FuzzResult:
    statuses: dict[str, Counter[int]] = field(default_factory=dict)
    check_failures: Counter[str] = field(default_factory=Counter)  # unique failures per round, summed
    failure_rounds: Counter[str] = field(default_factory=Counter)  # rounds that found each kind
    failure_examples: dict[str, list[str]] = field(default_factory=dict)
    server_errors: list[str] = field(default_factory=list)
    rounds: list[dict[str, Any]] = field(default_factory=list)
    service_log_errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    generated: int = 0

    @property
    def requests(self) -> int:
        return sum(sum(c.values()) for c in self.statuses.values())

    @property
    def histogram(self) -> Counter[int]:
        total: Counter[int] = Counter()
        for counts in self.statuses.values():
            total.update(counts)
        return total

    @property
    def server_error_count(self) -> int:
        return sum(n for status, n in self.histogram.items() if status >= 500)

    @property
    def schema_violations(self) -> int:
        """Unique failures of the checks that compare an answer with the schema (`SCHEMA_CODES`)."""
        return sum(n for name, n in self.check_failures.items() if name.split()[0] in SCHEMA_CODES)

    @property
    def ok(self) -> bool:
        return self.server_error_count == 0 and not self.check_failures and all(r["rc"] == 0 for r in self.rounds)

    def add(self, stats: dict[str, Any]) -> None:
        """The hooks' counts: responses per operation and status, the first 5xx answers."""
        for op, counts in stats.get("statuses", {}).items():
            self.statuses.setdefault(op, Counter()).update({int(k): v for k, v in counts.items()})
        self.server_errors += stats.get("server_errors", [])

    def add_report(self, report: dict[str, Any]) -> None:
        """Schemathesis's JSON report: failed checks (unique failures, by code) and errors."""
        for failure in report.get("failures", []):
            name = f"{failure.get('code')} {failure.get('title')}"
            self.check_failures[name] += int(failure.get("count", 1))
            self.failure_rounds[name] += 1
            examples = self.failure_examples.setdefault(name, [])
            examples += [op for op in failure.get("operations", []) if op not in examples]
        for error in report.get("errors", []):
            name = f"error: {error.get('title') or error.get('type') or error}"
            self.check_failures[name] += int(error.get("count", 1)) if isinstance(error, dict) else 1
            self.failure_examples.setdefault(name, []).append(json.dumps(error)[:300])
        self.generated += int(report.get("test_cases", {}).get("generated", 0))

    def summary(self) -> str:
        lines = [f"{self.requests} requests in {self.seconds:.0f} s over {len(self.rounds)} round(s); "
                 f"5xx: {self.server_error_count}; schema violations: {self.schema_violations}; "
                 f"check failures: {dict(self.check_failures) or 0}",
                 "status codes: " + ", ".join(f"{s}: {n}" for s, n in sorted(self.histogram.items()))]
        for op, counts in sorted(self.statuses.items()):
            spread = ", ".join(f"{s}: {n}" for s, n in sorted(counts.items()))
            lines.append(f"  {op}: {sum(counts.values())} ({spread})")
        for name, examples in self.failure_examples.items():
            lines.append(f"failed check {name}:")
            lines += [f"    {e}" for e in examples[:5]]
        lines += [f"5xx: {e}" for e in self.server_errors[:10]]
        lines += [f"service log: {e}" for e in self.service_log_errors[:10]]
        return "\n".join(lines)


def _photo_files(lfw: Path, directory: Path) -> list[str]:
    """Real uploads for the hooks: single faces, a second photo of a seeded person, a photo with three faces."""
    from tests.images import side_by_side

    paths = [lfw_photo(lfw, name, number) for _, name, number in SEED_PEOPLE] + [lfw_photo(lfw, "Aaron_Peirsol", 2)]
    group = directory / "group.jpg"
    group.write_bytes(side_by_side(*[lfw_photo(lfw, name, 2) for _, name, _ in SEED_PEOPLE]))
    return [str(p) for p in paths] + [str(group)]


def seed(client: httpx.Client, lfw: Path) -> list[int]:
    """Enrol the seeded subjects in every seeded gallery (again, if a fuzzed DELETE removed them); their face ids."""
    face_ids = []
    for gallery in SEED_GALLERIES:
        for subject, name, number in SEED_PEOPLE:
            if client.get(f"/v1/galleries/{gallery}/subjects/{subject}").status_code == 200:
                continue
            photo = lfw_photo(lfw, name, number)
            response = client.post(f"/v1/galleries/{gallery}/subjects/{subject}/faces",
                                   files=[("images", (photo.name, photo.read_bytes(), "image/jpeg"))],
                                   data={"name": name, "metadata": json.dumps({"seeded": True})})
            response.raise_for_status()
            face_ids += [f["face_id"] for f in response.json()["faces"]]
    return face_ids


class _Reseeder(threading.Thread):
    """Puts the seeded subjects back every few seconds, so that later rounds still find existing data."""

    def __init__(self, client: httpx.Client, lfw: Path, every_s: float = 5.0) -> None:
        super().__init__(name="fuzz-reseed", daemon=True)
        self.client, self.lfw, self.every_s = client, lfw, every_s
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.every_s):
            try:
                seed(self.client, self.lfw)
            except httpx.HTTPError as exc:
                print(f"[fuzz] reseeding failed: {exc}", flush=True)


def st_command(url: str, *, max_examples: int, seed_value: int, workers: int, max_time: float | None,
               report: Path, phases: tuple[str, ...] = PHASES, checks: tuple[str, ...] = CHECKS) -> list[str]:
    command = [str(Path(sys.executable).parent / "st"), "run", f"{url}/openapi.json",
               "--header", f"X-API-Key: {ADMIN_KEY}",
               "--checks", ",".join(checks), "--phases", ",".join(phases),
               "--max-examples", str(max_examples), "--seed", str(seed_value), "--workers", str(workers),
               "--continue-on-failure", "--suppress-health-check", "all", "--request-timeout", "60",
               "--generation-database", "none", "--no-color", "--report", "json", "--report-json-path", str(report)]
    if max_time is not None:
        command += ["--max-time", str(int(max_time))]
    return command


def run_fuzz(*, lfw: Path, target_requests: int, max_examples: int, max_time_per_round: float | None,
             total_time_s: float, workers: int = 2, first_seed: int = 1,
             factory: type[ServiceProcess] = ServiceProcess, echo: bool = True,
             checks: tuple[str, ...] = CHECKS) -> FuzzResult:
    """Start the service, seed it, run Schemathesis rounds until `target_requests` were sent (at least one round)
    or `total_time_s` passed; stop the service; return the counts."""
    started = time.monotonic()
    result = FuzzResult()
    with tempfile.TemporaryDirectory(prefix="anyface-fuzz-") as tmp_name:
        tmp = Path(tmp_name)
        env = {"ANYFACE_STORE": f"sqlite:///{tmp / 'gallery.sqlite3'}", "ANYFACE_API_KEYS": ADMIN_KEY,
               "ANYFACE_MODEL_DIR": str(MODEL_DIR), "PYTHONUNBUFFERED": "1"}
        service = factory(env).start(timeout=120)
        client = httpx.Client(base_url=service.url, headers={"X-API-Key": ADMIN_KEY}, timeout=60.0)
        reseeder = _Reseeder(client, lfw)
        try:
            face_ids = seed(client, lfw)
            reseeder.start()
            hook_env = {
                **os.environ, "SCHEMATHESIS_HOOKS": "tests.fuzz.hooks", "PYTHONPATH": str(REPO),
                "ANYFACE_FUZZ_SEED": json.dumps({"galleries": SEED_GALLERIES,
                                                 "subjects": [s for s, _, _ in SEED_PEOPLE],
                                                 "face_ids": face_ids, "photos": _photo_files(lfw, tmp)}),
            }
            round_no = 0
            while True:
                round_no += 1
                seed_value = first_seed + round_no - 1
                stats_path = tmp / f"stats-{round_no}.json"
                report_path = tmp / f"report-{round_no}.json"
                command = st_command(service.url, max_examples=max_examples, seed_value=seed_value,
                                     workers=workers, max_time=max_time_per_round, report=report_path,
                                     checks=checks)
                print(f"[fuzz] round {round_no} (seed {seed_value}): {' '.join(command)}", flush=True)
                round_started = time.monotonic()
                with subprocess.Popen(command, cwd=REPO, env={**hook_env, "ANYFACE_FUZZ_STATS": str(stats_path)},
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
                    assert proc.stdout is not None
                    tail: list[str] = []
                    for line in proc.stdout:
                        tail = [*tail[-200:], line]
                        if echo:
                            print(line, end="", flush=True)
                    rc = proc.wait()
                stats = json.loads(stats_path.read_text()) if stats_path.exists() else {}
                result.add(stats)
                report = json.loads(report_path.read_text()) if report_path.exists() else {}
                result.add_report(report)
                sent = sum(sum(c.values()) for c in stats.get("statuses", {}).values())
                result.rounds.append({"seed": seed_value, "rc": rc, "requests": sent,
                                      "seconds": round(time.monotonic() - round_started, 1),
                                      "tail": "".join(tail[-60:]) if rc else ""})
                print(f"[fuzz] round {round_no} done: exit {rc}, {sent} requests; {result.requests} in all "
                      f"(target {target_requests}), 5xx {result.server_error_count}, "
                      f"check failures {dict(result.check_failures) or 0}, "
                      f"{time.monotonic() - started:.0f} s elapsed", flush=True)
                if result.requests >= target_requests or time.monotonic() - started > total_time_s:
                    break
            if client.get("/healthz").status_code != 200:
                result.service_log_errors.append("the service did not answer /healthz after the run")
        finally:
            reseeder.stop.set()
            reseeder.join(10)
            client.close()
            service.stop()
            log = service.log.read_text(errors="replace") if service.log.exists() else ""
            result.service_log_errors += [m.group(0)[:500] for m in re.finditer(
                r"(unhandled error|Traceback \(most recent call last\))[\s\S]{0,400}", log)][:20]
            service.log.unlink(missing_ok=True)
    result.seconds = time.monotonic() - started
    return result


def _schemathesis_version() -> str:
    from importlib.metadata import version

    return version("schemathesis")


def doc_section(result: FuzzResult, command: str) -> str:
    """The fuzz section of docs/reliability.md."""
    histogram = result.histogram
    statuses = sorted(histogram)
    lines = [
        DOC_BEGIN,
        f"Run on {dt.date.today().isoformat()} with Schemathesis {_schemathesis_version()}: `{command}` "
        f"({result.seconds / 60:.0f} min, {len(result.rounds)} rounds with seeds "
        f"{', '.join(str(r['seed']) for r in result.rounds)}; phases {', '.join(PHASES)}).",
        "",
        f"- **{result.requests} requests**; **5xx: {result.server_error_count}**; **schema violations: "
        f"{result.schema_violations}** (answers whose status code, content type, headers or body the schema does not "
        "declare; Schemathesis's unique failures of each round, summed over the rounds)",
        f"- failed checks: {', '.join(f'{k} {v}' for k, v in sorted(result.check_failures.items())) or 'none'} "
        f"(checks on: {', '.join(CHECKS)})",
        "- status codes: " + ", ".join(f"{s}: {histogram[s]}" for s in statuses),
        "",
        "| operation | requests | " + " | ".join(str(s) for s in statuses) + " |",
        "|---|---:|" + "---:|" * len(statuses),
    ]
    for op, counts in sorted(result.statuses.items()):
        lines.append(f"| `{op}` | {sum(counts.values())} | " + " | ".join(str(counts.get(s, 0) or "")
                                                                        for s in statuses) + " |")
    if result.failure_examples or result.server_errors or result.service_log_errors:
        lines += ["", "Failures (first few of each):", ""]
        for name, examples in sorted(result.failure_examples.items()):
            found = result.failure_rounds.get(name, 0)
            where = f" (in {found} of {len(result.rounds)} rounds)" if found else ""
            lines += [f"- `{name}`{where}: " + "; ".join(f"`{e[:200]}`" for e in examples[:5])]
        lines += [f"- 5xx: `{e[:200]}`" for e in result.server_errors[:5]]
        lines += [f"- service log: `{e[:200]}`" for e in result.service_log_errors[:5]]
    lines.append(DOC_END)
    return "\n".join(lines)


def write_doc(path: Path, section: str) -> None:
    text = path.read_text() if path.exists() else ""
    if DOC_BEGIN in text and DOC_END in text:
        head, rest = text.split(DOC_BEGIN, 1)
        text = head + section + rest.split(DOC_END, 1)[1]
    else:
        text = text.rstrip() + "\n\n## Fuzzing\n\n" + section + "\n"
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000, help="run rounds until at least this many requests")
    parser.add_argument("--max-examples", type=int, default=150, help="per operation and phase, in each round")
    parser.add_argument("--round-time", type=float, default=None, help="Schemathesis --max-time of a round (s)")
    parser.add_argument("--total-time", type=float, default=3 * 3600, help="stop starting rounds after this (s)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1, help="the first round's seed (then +1 per round)")
    parser.add_argument("--doc", type=Path, default=None, help="write the counts into this markdown file")
    parser.add_argument("--quiet", action="store_true", help="only the per-round lines, not Schemathesis's output")
    args = parser.parse_args(argv)
    data = os.environ.get("ANYFACE_DATA_DIR")
    lfw = Path(data) / "lfw" if data else None
    if lfw is None or not (lfw / "images_deepfunneled").is_dir():
        print("ANYFACE_DATA_DIR must point at a directory with lfw/images_deepfunneled", file=sys.stderr)
        return 2
    mirror = os.environ.get("ANYFACE_MODEL_MIRROR")
    if mirror:
        from service.models.fetch import fetch_all

        fetch_all(MODEL_DIR, Path(mirror))
    result = run_fuzz(lfw=lfw, target_requests=args.requests, max_examples=args.max_examples,
                      max_time_per_round=args.round_time, total_time_s=args.total_time, workers=args.workers,
                      first_seed=args.seed, echo=not args.quiet)
    print("\n[fuzz] " + result.summary(), flush=True)
    for r in result.rounds:
        if r["rc"]:
            print(f"[fuzz] round with seed {r['seed']} exited {r['rc']}; its last lines:\n{r['tail']}")
    if args.doc is not None:
        command = "make fuzz" if os.environ.get("MAKELEVEL") else "python -m tests.fuzz.run " + " ".join(
            argv if argv is not None else sys.argv[1:])
        write_doc(args.doc, doc_section(result, command))
        print(f"[fuzz] wrote the counts into {args.doc}")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Saturation analysis of a stepped load test: the records of a Locust step and of a propagation probe, where
the capacity ends (failed requests, RPS plateau, p95 jump), which steps and probes count up to it, and whether
cross-replica propagation stayed within its limit.

Pure functions on plain data (no processes, network or files), so they are unit-tested on synthetic steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PROPAGATION_LIMIT_S = 1.0


@dataclass
class Step:
    """One Locust step: its users, how it ended, and Locust's statistics per request name."""

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


def load_results(data: dict[str, Any]) -> tuple[list[Step], list[ProbeResult]]:
    """The steps and probes of a parsed results.json; fields this version does not know are dropped."""
    steps = [Step(**{k: v for k, v in s.items() if k in Step.__dataclass_fields__}) for s in data["steps"]]
    probes = [ProbeResult(**{k: v for k, v in p.items() if k in ProbeResult.__dataclass_fields__})
              for p in data["probes"]]
    return steps, probes


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


def capacity_steps(steps: list[Step], sat: int | None) -> list[Step]:
    """The steps up to the capacity: those before the saturation point (the first step if it is saturated)."""
    return steps[:max(sat, 1)] if sat is not None else steps


def reported_load(steps: list[Step], sat: int | None) -> tuple[Step | None, Step | None]:
    """(reported, highest clean): the highest step that finished without a failure and is not past the
    saturation point (else the highest clean step), and the highest clean step regardless of saturation."""
    ok_steps = [s for s in steps if s.n_failures == 0 and s.exit_code not in (None, -1)]
    highest_ok = max(ok_steps, key=lambda s: s.users) if ok_steps else None
    upto = capacity_steps(steps, sat)
    capacity = [s for s in ok_steps if s in upto]
    return (max(capacity, key=lambda s: s.users) if capacity else highest_ok), highest_ok


def assessed_probes(steps: list[Step], sat: int | None, probes: list[ProbeResult]) -> list[ProbeResult]:
    """The probes of the steps up to the capacity (before saturation; the first step if it is saturated)."""
    keep = {s.users for s in capacity_steps(steps, sat)}
    return [p for p in probes if p.step_users in keep]


def propagation_ok(probes: list[ProbeResult]) -> bool:
    delays = [p.delay_ms for p in probes if p.delay_ms is not None]
    return bool(delays) and len(delays) == len(probes) and max(delays) < PROPAGATION_LIMIT_S * 1000

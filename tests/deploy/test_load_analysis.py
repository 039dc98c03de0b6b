"""Saturation analysis of the load test (deploy/locust/analysis.py) on synthetic steps: no servers, no Locust."""

from __future__ import annotations

from deploy.locust import analysis
from deploy.locust.analysis import ProbeResult, Step


def step(users: int, rps: float, p95: float = 50.0, failures: int = 0, exit_code: int | None = 0) -> Step:
    return Step(users, 40.0, exit_code, stats={"Aggregated": {"rps": rps, "p95": p95, "failures": failures}})


def probe(users: int, delay_ms: float | None) -> ProbeResult:
    return ProbeResult(users, 1, 2, 10.0, delay_ms, 1)


def test_linear_growth_is_not_saturated() -> None:
    steps = [step(1, 2.0), step(2, 4.0), step(4, 8.0), step(8, 15.0)]
    assert analysis.saturation_reason(steps, 0.5, 2.0) == (None, "")
    assert analysis.capacity_steps(steps, None) == steps


def test_failures_mark_the_step_where_they_appear() -> None:
    steps = [step(1, 2.0), step(2, 4.0), step(4, 8.0, failures=3), step(8, 16.0)]
    assert analysis.saturation_reason(steps, 0.5) == (2, "3 failed requests")
    assert analysis.saturation_reason([step(1, 2.0, failures=1), step(2, 4.0)], 0.5)[0] == 0


def test_rps_plateau_is_the_first_step_that_grows_less_than_min_gain() -> None:
    # 2 -> 4 users gives ×1.85; 4 -> 8 users only ×1.23, below half of the users' ×2 growth
    steps = [step(1, 2.0), step(2, 4.0), step(4, 7.4), step(8, 9.1), step(16, 9.2)]
    sat, why = analysis.saturation_reason(steps, 0.5)
    assert sat == 3
    assert "RPS grew only ×1.23 (7.4 → 9.1) while the users grew ×2.0" in why
    assert analysis.saturation(steps, 0.9) == 2  # a stricter gain: ×1.85 at 4 users is already short of 90 % of ×2


def test_p95_jump_counts_only_with_a_factor_and_above_the_floor() -> None:
    steps = [step(1, 2.0, 80), step(2, 4.0, 100), step(4, 8.0, 450), step(8, 16.0, 500)]
    assert analysis.saturation(steps, 0.5) is None  # throughput alone: still linear
    assert analysis.saturation_reason(steps, 0.5, 2.0) == (2, "p95 rose ×4.5 (100 → 450 ms)")
    assert analysis.saturation(steps, 0.5, 5.0) is None
    fast = [step(1, 2.0, 20), step(2, 4.0, 90)]  # ×4.5, but under the 200 ms floor
    assert analysis.saturation(fast, 0.5, 2.0) is None


def test_the_earliest_cause_wins() -> None:
    steps = [step(1, 2.0, 50), step(2, 2.2, 60), step(4, 8.0, 60, failures=5)]
    assert analysis.saturation(steps, 0.5, 2.0) == 1


def test_reported_load_is_the_highest_clean_step_before_saturation() -> None:
    steps = [step(1, 2.0), step(2, 4.0), step(4, 4.4), step(8, 4.6), step(16, 4.5, failures=2)]
    sat = analysis.saturation(steps, 0.5)
    assert sat == 2
    assert analysis.capacity_steps(steps, sat) == steps[:2]
    reported, highest_ok = analysis.reported_load(steps, sat)
    assert (reported.users if reported else None, highest_ok.users if highest_ok else None) == (2, 8)


def test_reported_load_skips_steps_that_did_not_finish() -> None:
    steps = [step(1, 2.0), step(2, 4.0, exit_code=-1), step(4, 8.0, exit_code=None)]
    reported, highest_ok = analysis.reported_load(steps, analysis.saturation(steps, 0.5))
    assert reported is highest_ok is steps[0]
    assert analysis.reported_load([step(1, 2.0, failures=1)], 0) == (None, None)


def test_propagation_verdict_counts_only_probes_up_to_the_capacity() -> None:
    steps = [step(1, 2.0), step(2, 4.0), step(4, 4.2)]
    sat = analysis.saturation(steps, 0.5)
    assert sat == 2
    probes = [probe(1, 30.0), probe(2, 120.0), probe(4, 2500.0), probe(0, 5000.0)]
    assessed = analysis.assessed_probes(steps, sat, probes)
    assert [p.step_users for p in assessed] == [1, 2]
    assert analysis.propagation_ok(assessed)
    # without a saturation point every step counts, the 2.5 s probe too
    assert not analysis.propagation_ok(analysis.assessed_probes(steps, None, probes))
    assert not analysis.propagation_ok([probe(1, 30.0), probe(2, None)])  # a subject never found fails
    assert not analysis.propagation_ok([probe(1, 1000.0)])  # the limit is exclusive
    assert not analysis.propagation_ok([])  # no evidence is no pass


def test_first_step_saturated_still_assesses_its_probes() -> None:
    steps = [step(1, 2.0, failures=4), step(2, 4.0)]
    assert analysis.capacity_steps(steps, 0) == steps[:1]
    assert [p.step_users for p in analysis.assessed_probes(steps, 0, [probe(1, 40.0), probe(2, 40.0)])] == [1]


def test_load_results_ignores_unknown_fields() -> None:
    data = {
        "steps": [{"users": 4, "duration_s": 40, "exit_code": 0, "stats": {"Aggregated": {"rps": 7.5}},
                   "failures": [], "added_later": True}],
        "probes": [{"step_users": 4, "enrol_pid": 1, "identify_pid": 2, "enrol_ms": 9.0, "delay_ms": 55.0,
                    "attempts": 1, "last_call_ms": 40.0, "error": None, "added_later": 1}],
    }
    steps, probes = analysis.load_results(data)
    assert steps[0].users == 4 and steps[0].rps == 7.5 and steps[0].n_failures == 0
    assert probes == [ProbeResult(4, 1, 2, 9.0, 55.0, 1, 40.0, None)]

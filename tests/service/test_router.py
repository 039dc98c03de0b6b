"""route(): the embedder resolution for a face size under each rule, at and between the resolutions."""

from __future__ import annotations

import pytest

from service.embedding.router import Rule, route

RES = [14, 28, 56, 112]
RULES: list[Rule] = ["ceil", "floor", "nearest"]


@pytest.mark.parametrize(
    ("size", "expected"),
    [(1, 14), (13.9, 14), (14, 14), (14.01, 28), (20, 28), (27.99, 28), (28, 28), (28.5, 56), (56, 56),
     (56.1, 112), (111.9, 112)],
)
def test_ceil(size: float, expected: int) -> None:
    assert route(size, RES, "ceil") == expected


@pytest.mark.parametrize(
    ("size", "expected"),
    [(1, 14), (13.9, 14), (14, 14), (14.01, 14), (27.99, 14), (28, 28), (55.9, 28), (56, 56), (111.9, 56)],
)
def test_floor(size: float, expected: int) -> None:
    assert route(size, RES, "floor") == expected


@pytest.mark.parametrize(
    ("size", "expected"),
    [(1, 14), (14, 14), (20.9, 14), (21, 28), (21.1, 28), (28, 28), (41.9, 28), (42, 56), (84, 112), (83.9, 56)],
)
def test_nearest_with_ties_going_up(size: float, expected: int) -> None:
    assert route(size, RES, "nearest") == expected


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("size", [112, 112.5, 200, 4000])
def test_trunk_takes_every_face_at_or_above_it(rule: Rule, size: float) -> None:
    assert route(size, RES, rule) == 112


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("size", [0, 0.5, 7, 13.99])
def test_faces_below_the_smallest_go_to_the_smallest(rule: Rule, size: float) -> None:
    assert route(size, RES, rule) == 14


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("size", [14, 28, 56, 112])
def test_exact_resolution_goes_to_itself(rule: Rule, size: float) -> None:
    assert route(size, RES, rule) == size


@pytest.mark.parametrize("rule", RULES)
def test_single_resolution_takes_everything(rule: Rule) -> None:
    assert [route(s, [112], rule) for s in (1, 50, 112, 500)] == [112] * 4


def test_rules_differ_between_two_resolutions() -> None:
    assert [route(18, RES, rule) for rule in RULES] == [28, 14, 14]
    assert [route(25, RES, rule) for rule in RULES] == [28, 14, 28]


def test_default_rule_is_ceil() -> None:
    assert route(20, RES) == 28


@pytest.mark.parametrize("rule", RULES)
def test_every_size_goes_to_one_of_the_resolutions(rule: Rule) -> None:
    sizes = [s / 4 for s in range(0, 600)]
    routed = [route(s, RES, rule) for s in sizes]
    assert set(routed) == set(RES)
    assert routed == sorted(routed)  # a larger face never goes to a smaller resolution


@pytest.mark.parametrize("rule", RULES)
def test_no_resolutions_raises(rule: Rule) -> None:
    with pytest.raises(ValueError, match="no resolutions"):
        route(20, [], rule)

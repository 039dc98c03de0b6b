"""The pure parts of `bench.tiny_faces` (no models, no LFW): the shrink factor and the real scale of a shrunk photo,
the "true face" rule, how one identify answer counts, the round-robin probe order and the configurations."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from bench.tiny_faces import (
    CONFIGS,
    Answer,
    centre_inside,
    round_robin,
    settings_for,
    shrink,
    shrink_factor,
    summarise,
    true_face_index,
)
from service.settings import Settings


def test_shrink_factor_makes_the_face_the_target_size() -> None:
    assert shrink_factor(100, 12) == pytest.approx(0.12)
    assert shrink_factor(96, 24) == pytest.approx(0.25)
    assert 105 * shrink_factor(105, 16) == pytest.approx(16)
    with pytest.raises(ValueError):
        shrink_factor(0, 12)


def test_shrink_reports_the_scale_the_rounded_photo_really_got() -> None:
    photo = np.zeros((250, 250, 3), dtype=np.uint8)
    photo[100:150, 100:150] = 255  # a white square in the middle
    small, sx, sy = shrink(photo, shrink_factor(105, 12))  # 250 * 12 / 105 = 28.57 -> 29 pixels
    assert small.shape == (29, 29, 3)
    assert sx == sy == pytest.approx(29 / 250)
    assert small[14, 14].tolist() == [255, 255, 255] and small[0, 0].tolist() == [0, 0, 0]  # area-averaged, in place


def test_true_face_is_the_first_box_whose_centre_is_inside() -> None:
    true_box = (10.0, 10.0, 20.0, 22.0)
    assert centre_inside((12, 12, 18, 18), true_box)
    assert centre_inside((0, 0, 20, 20), true_box)  # a larger box centred on the face (10, 10) counts: edges included
    assert not centre_inside((18, 18, 30, 30), true_box)  # overlaps, but its centre (24, 24) is outside
    bystander, face = (30.0, 0.0, 40.0, 10.0), (11.0, 11.0, 19.0, 21.0)
    assert true_face_index([face, bystander], true_box) == 0
    assert true_face_index([bystander, face], true_box) == 1
    assert true_face_index([bystander], true_box) is None
    assert true_face_index([], true_box) is None


def identify_body(*faces: tuple[tuple[float, float, float, float], str | None, float]) -> dict[str, Any]:
    """An /v1/identify answer: per face (box, best subject or None, its similarity), the main face first."""
    return {"faces": [
        {"face": {"box": dict(zip(("x1", "y1", "x2", "y2"), box, strict=True)), "size": box[2] - box[0],
                  "branch": "btnet_r14"},
         "candidates": [] if subject is None else [{"subject_id": subject, "similarity": similarity}]}
        for box, subject, similarity in faces]}


def test_answers_count_as_recall_rank1_and_open_set_hits() -> None:
    true_box = (10.0, 10.0, 24.0, 24.0)
    face, bystander = (11.0, 11.0, 23.0, 23.0), (40.0, 40.0, 50.0, 50.0)
    answers = [
        Answer.of(identify_body((face, "ann", 0.5)), true_box),  # right, above 0.4
        Answer.of(identify_body((face, "ann", 0.3)), true_box),  # right, below 0.4
        Answer.of(identify_body((face, "bob", 0.6)), true_box),  # found, wrong person
        Answer.of(identify_body((bystander, "ann", 0.7), (face, "ann", 0.5)), true_box),  # main face is a bystander
        Answer.of(identify_body((bystander, "ann", 0.7)), true_box),  # only a bystander
        Answer(False, False, refused="no_face"),
    ]
    row = summarise(answers, ["ann"] * 6, threshold=0.4)
    assert row.probes == 6
    assert row.recall == pytest.approx(4 / 6)
    assert row.rank1 == pytest.approx(2 / 6)  # a right name on a bystander is not a hit
    assert row.open_set == pytest.approx(1 / 6)
    assert row.found_not_main == 1
    assert row.refused == {"no_face": 1}
    assert row.branches == {"btnet_r14": 3} and row.median_size == 12.0
    with pytest.raises(ValueError):
        summarise(answers, ["ann"], threshold=0.4)


def test_round_robin_spreads_a_prefix_over_identities() -> None:
    photos = {"a": ["a2", "a3", "a4"], "b": ["b2"], "c": ["c2", "c3"]}
    assert round_robin(photos) == ["a2", "b2", "c2", "a3", "c3", "a4"]


def test_configurations_override_settings_and_refuse_unknown_names() -> None:
    base = Settings(store="sqlite:///tmp/x.sqlite3")
    for overrides in CONFIGS.values():  # every named configuration builds
        settings_for(overrides, base)
    trunk = settings_for({"use_branches": False, "detection": {"min_face_size": 4}}, base)
    assert trunk.use_branches is False and base.use_branches is True
    assert trunk.detection.min_face_size == 4 and trunk.detection.max_faces == base.detection.max_faces
    assert trunk.store == base.store
    with pytest.raises(ValueError, match="use_branch"):
        settings_for({"use_branch": False}, base)  # a typo must not benchmark the defaults
    with pytest.raises(ValueError, match="min_face"):
        settings_for({"detection": {"min_face": 4}}, base)
    with pytest.raises(ValueError):
        settings_for({"use_branches": "sometimes"}, base)  # values are validated

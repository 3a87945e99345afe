from __future__ import annotations

import math

import numpy as np
import pytest

from face_dedup import calibration as cal


def test_threshold_at_far_bounds_false_accepts() -> None:
    impostor = np.linspace(0, 1, 10_001)
    for far in (0.1, 0.01, 0.001):
        threshold = cal.threshold_at_far(impostor, far)
        assert np.mean(impostor >= threshold) <= far
        assert np.mean(impostor >= threshold - 2e-4) > far  # and it is the smallest such


def test_eer_of_separated_and_overlapping_scores() -> None:
    rng = np.random.default_rng(0)
    genuine, impostor = rng.normal(0.7, 0.1, 5000), rng.normal(0.1, 0.1, 5000)
    eer, threshold = cal.equal_error_rate(genuine, impostor)
    assert eer < 0.01
    assert 0.3 < threshold < 0.5
    same = rng.normal(0.5, 0.1, 5000)
    assert cal.equal_error_rate(same, rng.normal(0.5, 0.1, 5000))[0] > 0.4


def test_kfold_accuracy_uses_held_out_thresholds() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.2, 0.1, 0.05] * 10)
    same = np.array([True, True, True, False, False, False] * 10)
    folds = [i % 5 for i in range(60)]
    accuracy, std = cal.kfold_accuracy(scores, same, folds)
    assert accuracy == 1.0 and std == 0.0
    flipped = ~same
    assert cal.kfold_accuracy(scores, flipped, folds)[0] < 0.6


def test_fmr_for_fpir_follows_gallery_size() -> None:
    assert math.isclose(cal.fmr_for_fpir(0.01, 1), 0.01)
    assert math.isclose(cal.fmr_for_fpir(0.01, 1000), 1.005e-5, rel_tol=1e-3)
    assert cal.fmr_for_fpir(0.01, 1_000_000) < cal.fmr_for_fpir(0.01, 1000)
    # FPIR recomputed from the per-comparison rate is the target
    n = 5000
    assert math.isclose(1 - (1 - cal.fmr_for_fpir(0.02, n)) ** n, 0.02, rel_tol=1e-9)


TAIL = cal.ImpostorTail("pack", "test", 10**7, ((-1.0, 0.2), (-2.0, 0.3), (-3.0, 0.36), (-4.0, 0.42)))


def test_tail_interpolates_extrapolates_and_inverts() -> None:
    assert TAIL.threshold_for_fmr(1e-2) == pytest.approx(0.3)
    assert 0.3 < TAIL.threshold_for_fmr(5e-3) < 0.36
    assert TAIL.threshold_for_fmr(1e-6) == pytest.approx(0.54)  # 0.06 per decade beyond 1e-4
    for fmr in (3e-2, 2e-3, 1e-5):
        assert TAIL.fmr_at(TAIL.threshold_for_fmr(fmr)) == pytest.approx(fmr, rel=1e-6)
    assert TAIL.measured_min_fmr == pytest.approx(1e-4)


def test_tail_json_roundtrip_and_validation() -> None:
    assert cal.ImpostorTail.from_json(TAIL.to_json()) == TAIL
    with pytest.raises(Exception, match="decreasing"):
        cal.ImpostorTail.from_json(
            '{"model_pack": "p", "source": "s", "impostor_pairs": 1, "points": [[-2, 0.3], [-1, 0.2]]}'
        )


def test_dedup_thresholds_rise_with_the_gallery() -> None:
    small = cal.dedup_thresholds(TAIL, 100, 0.01, 1e-4)
    large = cal.dedup_thresholds(TAIL, 100_000, 0.01, 1e-4)
    assert small.review < large.review
    assert small.duplicate >= small.review
    assert large.extrapolated and not cal.dedup_thresholds(TAIL, 10, 0.01, 1e-4).extrapolated
    assert cal.dedup_thresholds(TAIL, 1, 0.5, 1e-4, floor=0.4).review == 0.4


def test_impostor_tail_from_scores_stops_where_counts_get_thin() -> None:
    impostor = np.random.default_rng(1).normal(0.0, 0.1, 100_000)
    tail = cal.impostor_tail_from_scores(impostor, "pack", "synthetic", min_count=10)
    assert tail.points[0][0] == -1.0
    assert 10 ** tail.points[-1][0] * len(impostor) >= 10
    thresholds = [t for _, t in tail.points]
    assert thresholds == sorted(thresholds)


def test_simulated_dedup_counts_duplicates_and_false_alarms() -> None:
    # Three people; person a appears twice (identical vectors), b and c once.
    vectors = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 1]], dtype=np.float32)
    result = cal.simulate_dedup(vectors, ["a", "b", "a", "c"], lambda n: 0.5)
    assert (result.duplicates, result.duplicates_flagged) == (1, 1)
    assert (result.new_people, result.new_people_flagged) == (3, 0)
    everyone = cal.simulate_dedup(vectors, ["a", "b", "a", "c"], lambda n: -1.0)
    assert everyone.false_alarm_rate == pytest.approx(2 / 3)


def test_all_pairs_scores_marks_unusable_images() -> None:
    vectors = np.eye(3, dtype=np.float32)
    genuine, impostor = cal.all_pairs_scores(vectors, ["a", "a", "b"], np.array([True, False, True]), -1.0)
    assert genuine.tolist() == [-1.0]
    assert sorted(impostor.tolist()) == [-1.0, 0.0]

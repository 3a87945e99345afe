"""bench/bf16_partition.py's own arithmetic: its mixed-runtime 1:N import is the calibration's
simulate_dedup when both sides are the same templates, and its decision flips count each way."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from face_dedup import calibration as cal

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from bf16_partition import flip_templates, flips, simulate_imports, unit_rows


def _clustered(seed: int, people: int = 60, photos: int = 4) -> tuple[NDArray[np.float32], list[str]]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(people, 32))
    identities = [f"p{rng.integers(people)}" for _ in range(people * photos)]
    rows = [centres[int(name[1:])] + rng.normal(scale=0.9, size=32) for name in identities]
    return unit_rows(np.asarray(rows, dtype=np.float32)), identities


def test_same_templates_on_both_sides_give_simulate_dedup() -> None:
    matrix, identities = _clustered(3)

    def review(n: int) -> float:
        return 0.42 + 0.02 * float(np.log10(n))

    found = simulate_imports(matrix, matrix, identities, lambda n: (review(n), review(n) + 0.1)).summary()
    expected = cal.simulate_dedup(matrix, identities, review)
    assert expected.duplicates and expected.new_people  # the data has both kinds
    assert 0 < expected.recall < 1 and 0 < expected.false_alarm_rate < 1  # the threshold bites
    assert found["recall"] == round(100 * expected.recall, 4)
    assert found["false_alarms"] == round(100 * expected.false_alarm_rate, 4)
    assert found["auto_link_recall"] < found["recall"]


def test_probes_and_gallery_are_not_swapped() -> None:
    matrix, identities = _clustered(5)
    shifted = unit_rows(matrix + np.float32(0.3))  # every template moved the same way

    def bands(n: int) -> tuple[float, float]:
        return 0.6, 0.7

    mixed = simulate_imports(shifted, matrix, identities, bands)
    direct = [
        max(float(shifted[i] @ matrix[j]) for j in range(i) if identities[j] == identities[i])
        for i in range(1, len(identities))
        if identities[i] in identities[:i]
    ]
    np.testing.assert_allclose(mixed.score[mixed.duplicate], direct, rtol=0, atol=1e-6)
    assert mixed.score[0] == -np.inf and not mixed.duplicate[0]  # the first photo: an empty registry


def test_flips_count_each_label_and_way() -> None:
    reference = np.array([0.50, 0.40, 0.50, 0.40, 0.60, 0.30])
    scores = np.array([0.40, 0.50, 0.50, 0.50, 0.40, 0.30])
    genuine = np.array([True, True, True, False, False, False])
    assert flips(scores, reference, genuine, 0.45) == {
        "genuine_lost": 1,
        "genuine_gained": 1,
        "impostor_gained": 1,
        "impostor_lost": 1,
    }


def test_flip_rule_is_unit_length_and_symmetric() -> None:
    face, mirror = _clustered(7)[0][:10], _clustered(8)[0][:10]
    both = flip_templates(face, mirror)
    np.testing.assert_allclose(np.linalg.norm(both, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(both, flip_templates(mirror, face), atol=1e-7)
    assert both.dtype == np.float32

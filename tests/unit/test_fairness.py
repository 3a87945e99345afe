"""Per-group error rates on synthetic labelled templates with planted differences (and none)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from face_dedup import fairness as fx

DIM = 64
THRESHOLD = 0.35
RESAMPLES = 300


def _population(
    groups: dict[str, int],
    *,
    photos: int = 3,
    noise: dict[str, float] | None = None,
    shared: dict[str, float] | None = None,
    reject: dict[str, float] | None = None,
    seed: int = 0,
) -> tuple[NDArray[np.float32], fx.Labelled]:
    """`groups`: people per group. `noise`: spread of a person's photos around their face
    (more: lower genuine scores, more false non-matches). `shared`: a direction all faces of the
    group share (more: higher scores between different people, more false matches). `reject`:
    chance a photo is rejected (reason TOO_DARK)."""
    rng = np.random.default_rng(seed)
    noise, shared, reject = noise or {}, shared or {}, reject or {}
    vectors, persons, labels, reasons = [], [], [], []
    for name, count in groups.items():
        direction = rng.normal(size=DIM)
        direction /= np.linalg.norm(direction)
        for p in range(count):
            face = rng.normal(size=DIM) / np.sqrt(DIM) + shared.get(name, 0.0) * direction
            for _ in range(photos):
                photo = face / np.linalg.norm(face) + noise.get(name, 1.0) * rng.normal(size=DIM) / np.sqrt(
                    DIM
                )
                vectors.append(photo / np.linalg.norm(photo))
                persons.append(f"{name}-{p}")
                labels.append(name)
                reasons.append("TOO_DARK" if rng.random() < reject.get(name, 0.0) else None)
    data = fx.Labelled.from_labels(persons, labels, reasons)
    return np.asarray(vectors, dtype=np.float32), data


def _pairs(embeddings: NDArray[np.float32], data: fx.Labelled, seed: int = 1) -> dict[str, Any]:
    resampler = fx.Resampler(data.person_strata(), RESAMPLES, seed)
    counts = fx.pair_counts(embeddings, data, THRESHOLD)
    return fx.rates_at_threshold(counts, data, resampler, THRESHOLD)


def _comparison(report: dict[str, Any], metric: str) -> dict[str, Any]:
    return next(c for c in report["worst_vs_best"] if c["metric"] == metric)


def _width(estimate: dict[str, Any]) -> float:
    return float(estimate["ci_high"] - estimate["ci_low"])


def test_finds_a_planted_false_non_match_difference() -> None:
    embeddings, data = _population({"A": 150, "B": 150}, noise={"A": 1.0, "B": 1.4})
    report = _pairs(embeddings, data)
    fnmr = _comparison(report, "fnmr")
    assert fnmr["worst"] == "B" and fnmr["best"] == "A"
    assert fnmr["differs"]
    assert fnmr["ratio_ci"][0] > 1
    assert report["fnmr"]["B"]["ci_low"] > report["fnmr"]["A"]["ci_high"]
    # the planted difference is in FNMR only: false matches within groups do not differ
    assert not _comparison(report, "fmr_within")["differs"]


def test_finds_a_planted_false_match_difference_within_a_group() -> None:
    embeddings, data = _population({"A": 150, "B": 150}, shared={"B": 0.6})
    report = _pairs(embeddings, data)
    fmr = _comparison(report, "fmr_within")
    assert fmr["worst"] == "B" and fmr["differs"]
    assert report["fmr"]["B"]["kind"] == "within"
    assert report["fmr"]["A|B"]["kind"] == "across"
    # lookalikes are within B: pairs across the groups match no more than pairs within A
    assert report["fmr"]["A|B"]["value"] < report["fmr"]["B"]["value"]
    assert not _comparison(report, "fnmr")["differs"]


def test_finds_no_difference_where_none_was_planted() -> None:
    """Ten populations without a planted difference: at 95% a comparison is flagged by chance
    about once in twenty, so at most two flags per metric in ten."""
    flags = {"fnmr": 0, "fmr_within": 0}
    for seed in range(10):
        embeddings, data = _population({"A": 150, "B": 150}, seed=100 + seed)
        report = _pairs(embeddings, data, seed=seed)
        for metric in flags:
            comparison = _comparison(report, metric)
            flags[metric] += comparison["differs"]
            if not comparison["differs"]:
                assert comparison["difference_ci"][0] <= 0 <= comparison["difference_ci"][1]
    assert flags["fnmr"] <= 2 and flags["fmr_within"] <= 2, flags


def test_intervals_widen_for_a_small_group() -> None:
    embeddings, data = _population(
        {"big": 400, "small": 40}, noise={"big": 1.3, "small": 1.3}, reject={"big": 0.1, "small": 0.1}, seed=5
    )
    report = _pairs(embeddings, data)
    assert _width(report["fnmr"]["small"]) > 1.5 * _width(report["fnmr"]["big"])
    assert _width(report["fmr"]["small"]) > _width(report["fmr"]["big"])
    fte = fx.failure_to_enroll(data, fx.Resampler(data.person_strata(), RESAMPLES, 2))
    assert _width(fte["groups"]["small"]) > 1.5 * _width(fte["groups"]["big"])


def test_failure_to_enroll_per_group_and_reason() -> None:
    _, data = _population({"A": 200, "B": 200}, reject={"A": 0.02, "B": 0.2})
    fte = fx.failure_to_enroll(data, fx.Resampler(data.person_strata(), RESAMPLES, 2))
    assert fte["worst_vs_best"]["worst"] == "B" and fte["worst_vs_best"]["differs"]
    b = fte["groups"]["B"]
    assert b["by_reason"]["TOO_DARK"]["value"] == pytest.approx(b["value"])
    assert b["trials"] == 600
    assert b["errors"] == sum(1 for r, g in zip(data.reason, data.group, strict=True) if r and g == 1)


def test_rejected_photos_are_left_out_of_pair_rates() -> None:
    embeddings, data = _population({"A": 50}, reject={"A": 0.3}, seed=7)
    counts = fx.pair_counts(embeddings, data, THRESHOLD)
    usable_people: dict[str, int] = {}
    for p, ok in zip(data.person, data.usable, strict=True):
        usable_people[p] = usable_people.get(p, 0) + int(ok)
    assert len(counts.genuine_score) == sum(n * (n - 1) // 2 for n in usable_people.values())
    assert set(counts.impostor_a.tolist()) <= set(np.flatnonzero(data.usable).tolist())


def test_no_error_seen_gives_the_rule_of_three_bound_not_zero() -> None:
    embeddings, data = _population({"A": 100}, noise={"A": 0.1})  # every genuine pair matches
    report = _pairs(embeddings, data)
    fnmr = report["fnmr"]["A"]
    assert fnmr["errors"] == 0 and fnmr["value"] == 0
    assert fnmr["ci_high"] == pytest.approx(-np.log(0.05) / 100)


def test_observed_rates_match_a_direct_count() -> None:
    embeddings, data = _population({"A": 60, "B": 40}, shared={"B": 0.4}, seed=11)
    report = _pairs(embeddings, data)
    scores = embeddings @ embeddings.T
    i, j = np.triu_indices(len(embeddings), k=1)
    different = data.person[i] != data.person[j]
    for name, a, b in (("A", 0, 0), ("B", 1, 1), ("A|B", 0, 1)):
        mask = different & (np.minimum(data.group[i], data.group[j]) == a)
        mask &= np.maximum(data.group[i], data.group[j]) == b
        expected = float(np.mean(scores[i[mask], j[mask]] >= THRESHOLD))
        assert report["fmr"][name]["value"] == pytest.approx(expected)
        assert report["fmr"][name]["trials"] == mask.sum()
    same = ~different & (data.group[i] == 1)
    assert report["fnmr"]["B"]["value"] == pytest.approx(float(np.mean(scores[i[same], j[same]] < THRESHOLD)))


def test_dedup_recall_and_false_alarms_per_group() -> None:
    embeddings, data = _population({"A": 150, "B": 150}, noise={"A": 1.0, "B": 1.4}, seed=13)
    order = np.random.default_rng(0).permutation(len(embeddings))  # arrivals interleaved
    data = fx.Labelled.from_labels(
        [data.person_names[data.person[k]] for k in order],
        [data.group_names[data.group[k]] for k in order],
        [data.reason[k] for k in order],
    )
    items = fx.simulate_dedup_items(embeddings[order], data, lambda n: THRESHOLD + 0.02 * np.log10(n))
    report = fx.dedup_by_group(items, data, fx.Resampler(data.person_strata(), RESAMPLES, 3))
    a, b = report["groups"]["A"], report["groups"]["B"]
    assert a["duplicate_recall"]["trials"] == 300 and b["duplicate_recall"]["trials"] == 300
    assert a["duplicate_recall"]["value"] > b["duplicate_recall"]["value"]
    missed = next(c for c in report["worst_vs_best"] if c["metric"] == "duplicates_missed")
    assert missed["worst"] == "B" and missed["differs"]
    assert (
        a["duplicate_recall"]["ci_low"] <= a["duplicate_recall"]["value"] <= a["duplicate_recall"]["ci_high"]
    )


def test_case_outcomes_per_group() -> None:
    rng = np.random.default_rng(4)
    groups: list[str] = []
    decisions: list[str | None] = []
    overturned: list[bool] = []
    for name, cannot_tell in (("A", 0.05), ("B", 0.4)):
        for _ in range(200):
            decision = "cannot_tell" if rng.random() < cannot_tell else "same_person"
            groups.append(name)
            decisions.append(decision)
            overturned.append(decision == "same_person" and rng.random() < 0.1)
    groups.append("B")
    decisions.append(None)  # an open case counts as a case, not as a decision
    overturned.append(False)
    report = fx.case_outcomes_by_group(groups, decisions, overturned, resamples=RESAMPLES)
    assert report["groups"]["B"]["cases"] == 201 and report["groups"]["B"]["decided"] == 200
    burden = next(c for c in report["worst_vs_best"] if c["metric"] == "cannot_tell")
    assert burden["worst"] == "B" and burden["differs"]
    assert 0 < report["groups"]["A"]["overturned"]["value"] < 0.3


def test_labels_must_line_up() -> None:
    with pytest.raises(ValueError, match="one entry per photo"):
        fx.Labelled.from_labels(["a", "b"], ["F"], [None, None])

"""The operating-point planner: its arithmetic, its marks on extrapolated figures, and its
prediction of a simulated import on synthetic templates (the real-photo check is in
tests/integration/test_planner_lfw.py, slow)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray
from typer.testing import CliRunner

from face_dedup import calibration as cal
from face_dedup import planner
from face_dedup.bootstrap import load_tail
from face_dedup.calibration import ImpostorTail
from face_dedup.cli import app
from face_dedup.errors import ConfigError
from face_dedup.models.registry import PACKS, get_pack
from face_dedup.settings import Settings

TAIL = ImpostorTail("p", "test", 10_000_000, ((-2.0, 0.30), (-3.0, 0.36), (-4.0, 0.42), (-5.0, 0.47)))


def curve(scores: list[float], pack: str = "p") -> planner.GenuineCurve:
    return planner.GenuineCurve.from_scores(np.array(scores), pack, "test", "pairs")


GENUINE = curve(list(np.linspace(0.3, 0.9, 601)))  # uniform on [0.3, 0.9]
WORK = planner.Workload(
    daily_searches=1000, duplicate_share=0.02, minutes_per_case=6, officer_hours_per_day=6
)


def test_recall_is_the_share_of_genuine_scores_at_or_above_the_threshold() -> None:
    assert GENUINE.recall_at(0.30) == pytest.approx(1.0)
    assert GENUINE.recall_at(0.60) == pytest.approx(0.5, abs=0.01)
    assert GENUINE.recall_at(0.90) == pytest.approx(0.0, abs=0.01)
    assert GENUINE.recall_at(0.95) == 0.0


def test_false_alarms_per_search_follow_the_gallery() -> None:
    assert planner.false_alarms_per_search(1e-6, 1) == pytest.approx(1e-6)
    assert planner.false_alarms_per_search(1e-8, 1_000_000) == pytest.approx(-math.expm1(-0.01), rel=1e-6)
    assert planner.false_alarms_per_search(1e-3, 10_000_000) == pytest.approx(1.0)


def test_workload_is_cases_times_minutes() -> None:
    row = planner.evaluate(TAIL, GENUINE, 10_000, 0.45, "given", WORK)
    fpir = planner.false_alarms_per_search(TAIL.fmr_at(0.45), 10_000)
    assert row.false_alarms_per_search == pytest.approx(fpir)
    assert row.false_alarm_cases_per_day == pytest.approx(980 * fpir)
    assert row.duplicate_cases_per_day == pytest.approx(20 * GENUINE.recall_at(0.45))
    assert row.missed_duplicates_per_day == pytest.approx(20 - row.duplicate_cases_per_day)
    hours = (row.false_alarm_cases_per_day + row.duplicate_cases_per_day) * 6 / 60
    assert row.officer_hours_per_day == pytest.approx(hours)
    assert row.officers == pytest.approx(hours / 6)
    assert not row.extrapolated  # 0.45 lies inside the measured tail (up to 0.47)


def test_projected_sizes_grow_by_the_new_people_a_day() -> None:
    assert planner.projected_size(10_000, WORK, 2) == 10_000 + 980 * 730
    assert planner.projected_size(10_000, WORK, 0) == 10_000
    with pytest.raises(ValueError, match="years"):
        planner.projected_size(10_000, WORK, -1)


def test_every_figure_beyond_the_measured_tail_is_marked() -> None:
    result = planner.plan(TAIL, GENUINE, [100, 10_000_000], WORK, target_fpir=0.01)
    small, large = result.sizes
    assert any(not r.extrapolated for r in small.rows)
    assert all(r.extrapolated for r in large.rows)  # FMR 1e-9 .. is far below 1e-5
    for size in result.sizes:
        for r in size.rows:
            assert r.extrapolated == (r.threshold > 0.47)
    text = "\n".join(planner.render(result))
    assert "*" in text and "extrapolated" in text and "plan-capacity" in text


def test_the_recommendation_is_the_best_recall_within_the_target() -> None:
    result = planner.plan(TAIL, GENUINE, [1000, 100_000], WORK, target_fpir=0.01, min_recall=0.99)
    for size in result.sizes:
        assert size.recommended is not None
        chosen = size.rows[size.recommended]
        assert chosen.false_alarms_per_search <= 0.01 * (1 + 1e-6)
        within = [r for r in size.rows if r.false_alarms_per_search <= 0.01 * (1 + 1e-6)]
        assert chosen.recall == max(r.recall for r in within)
        assert size.meets_min_recall is False  # 99% recall needs a threshold near 0.306
        assert size.cheapest_at_min_recall is None  # and no candidate is that low
    looser = planner.plan(TAIL, GENUINE, [1000], WORK, target_fpir=0.01, min_recall=0.5)
    cheapest = looser.sizes[0].rows[looser.sizes[0].cheapest_at_min_recall or 0]
    assert cheapest.recall >= 0.5
    assert all(r.recall < 0.5 for r in looser.sizes[0].rows if r.threshold > cheapest.threshold)
    # the threshold rises with the gallery, so the recall falls
    small, large = (s.rows[s.recommended or 0] for s in result.sizes)
    assert large.recall < small.recall


def test_given_and_in_force_thresholds_are_rows() -> None:
    forced = planner.in_force_thresholds(TAIL, [1000], 0.01, 1e-4, 1e-3)
    result = planner.plan(TAIL, GENUINE, [1000], WORK, target_fpir=0.01, in_force=forced, thresholds=[0.5])
    labels = {r.label: r.threshold for r in result.sizes[0].rows}
    assert labels["given"] == 0.5
    assert labels["in force"] == pytest.approx(forced[1000], abs=1e-4)
    thresholds = [r.threshold for r in result.sizes[0].rows]
    assert thresholds == sorted(thresholds)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ConfigError, match="genuine curve of q"):
        planner.plan(TAIL, curve([0.5] * 20, "q"), [10], WORK, target_fpir=0.01)
    with pytest.raises(ValueError, match="gallery sizes"):
        planner.plan(TAIL, GENUINE, [0], WORK, target_fpir=0.01)
    with pytest.raises(ValueError, match="target FPIR"):
        planner.plan(TAIL, GENUINE, [10], WORK, target_fpir=1.5)
    with pytest.raises(ValueError, match="thresholds"):
        planner.plan(TAIL, GENUINE, [10], WORK, target_fpir=0.01, thresholds=[1.2])
    with pytest.raises(ValueError, match="duplicate share"):
        planner.Workload(10, 1.0, 5, 6)
    for minutes, hours in ((float("nan"), 6), (float("inf"), 6), (5, float("nan")), (5, 25), (0, 6)):
        with pytest.raises(ValueError, match="minutes per case"):  # NaN would reach --json as NaN
            planner.Workload(10, 0.02, minutes, hours)
    with pytest.raises(ValueError, match="too few"):
        curve([0.5] * 3)


def test_curve_files_round_trip_and_bad_ones_are_typed_errors(tmp_path: Path) -> None:
    assert planner.GenuineCurve.from_json(GENUINE.to_json()) == GENUINE
    for bad in (
        "not json",
        '{"model_pack": "p", "source": "s", "kind": "pairs", "scores": 5, "points": [[NaN, 1], [0.2, 0.9]]}',
        json.dumps({"model_pack": "p"}),
        json.dumps(
            {
                "model_pack": "p",
                "source": "s",
                "kind": "pairs",
                "scores": 5,
                "points": [[0.1, 0.5], [0.2, 0.9]],
            }
        ),
        json.dumps(
            {
                "model_pack": "p",
                "source": "s",
                "kind": "pairs",
                "scores": 5,
                "points": [[0.2, 0.5], [0.1, 0.4]],
            }
        ),
    ):
        with pytest.raises(ConfigError):
            planner.GenuineCurve.from_json(bad)
    with pytest.raises(ConfigError, match="calibrate"):
        planner.load_genuine(tmp_path, "no-such-pack")
    own = planner.genuine_path(tmp_path, "p")
    own.parent.mkdir(parents=True)
    own.write_text(GENUINE.to_json(), encoding="utf-8")
    assert planner.load_genuine(tmp_path, "p") == GENUINE
    with pytest.raises(ConfigError, match="not of other"):
        own2 = planner.genuine_path(tmp_path, "other")
        own2.write_text(GENUINE.to_json(), encoding="utf-8")
        planner.load_genuine(tmp_path, "other")


def wilson(k: int, n: int, z: float = 2.58) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def test_the_planner_predicts_a_simulated_import_of_people_it_did_not_see() -> None:
    """Synthetic people (random identity directions, noisy photos): the tail and the genuine
    curve measured on one half predict the recall and false alarms of importing the other half
    (within a 99% interval of the measured rates)."""
    rng = np.random.default_rng(7)
    dim, people = 48, 2400

    def photos(count: int) -> tuple[NDArray[np.float32], list[str]]:
        centres = rng.normal(size=(count, dim))
        vectors, names = [], []
        for p in range(count):
            for _ in range(int(rng.integers(1, 4))):
                noise = rng.normal(size=dim) * rng.lognormal(0, 0.3) * 0.75
                vectors.append(centres[p] + noise)
                names.append(f"person{p}")
        matrix = np.array(vectors)
        order = rng.permutation(len(names))  # people arrive in mixed order
        matrix = (matrix / np.linalg.norm(matrix, axis=1, keepdims=True)).astype(np.float32)[order]
        return matrix, [names[i] for i in order]

    calib, calib_ids = photos(people // 2)
    test, test_ids = photos(people // 2)
    _, impostor = cal.all_pairs_scores(calib, calib_ids)
    tail = cal.impostor_tail_from_scores(impostor, "syn", "half")
    genuine = planner.GenuineCurve.from_scores(
        planner.import_genuine_scores(calib, calib_ids), "syn", "half", "import"
    )

    def review(n: int) -> float:  # a looser target than the service's so false alarms are many
        return tail.threshold_for_fmr(cal.fmr_for_fpir(0.1, n))

    measured = cal.simulate_dedup(test, test_ids, review)
    seen: set[str] = set()
    dups: list[int] = []
    new: list[int] = []
    for position, who in enumerate(test_ids):
        (dups if who in seen else new).append(position)
        seen.add(who)
    recall, false_alarms = planner.predict_import(tail, genuine, dups, new, review)
    low, high = wilson(measured.duplicates_flagged, measured.duplicates)
    assert 0.5 < measured.recall < 0.99  # the check has something to miss
    assert low <= recall <= high, (recall, measured.recall)
    low, high = wilson(measured.new_people_flagged, measured.new_people)
    assert measured.new_people_flagged >= 30
    assert low <= false_alarms <= high, (false_alarms, measured.false_alarm_rate)


def test_cli_plans_the_shipped_pack_with_json_and_plot(tmp_path: Path) -> None:
    runner = CliRunner()
    svg = tmp_path / "plan.svg"
    args = [
        "plan",
        "10000",
        "1000000",
        "--daily",
        "2000",
        "--data-dir",
        str(tmp_path),
        "--json",
        "--plot",
        str(svg),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    sizes = {s["gallery_size"]: s for s in data["sizes"]}
    assert set(sizes) == {10_000, 1_000_000}
    in_force = [r for r in sizes[1_000_000]["rows"] if r["label"] == "in force"]
    assert len(in_force) == 1 and in_force[0]["extrapolated"] is True
    assert in_force[0]["false_alarms_per_search"] == pytest.approx(0.01, rel=0.01)
    text = svg.read_text(encoding="utf-8")
    assert text.startswith("<svg") and text.count("<polyline") >= 2 and "1,000,000 faces" in text
    bad = runner.invoke(app, ["plan", "10", "--duplicate-share", "2", "--data-dir", str(tmp_path)])
    assert bad.exit_code == 1 and "duplicate share" in bad.output
    grown = runner.invoke(app, ["plan", "10000", "--years", "1", "--data-dir", str(tmp_path), "--json"])
    assert [s["gallery_size"] for s in json.loads(grown.output)["sizes"]] == [10_000, 10_000 + 990 * 365]
    human = runner.invoke(app, ["plan", "15000000", "--data-dir", str(tmp_path)])
    assert human.exit_code == 0 and "15,000,000 faces" in human.output and "<- recommended" in human.output


@pytest.mark.parametrize("pack_id", sorted(PACKS))
def test_every_shipped_pack_ships_a_genuine_curve_matching_its_calibration(
    pack_id: str, tmp_path: Path
) -> None:
    settings = Settings.load(data_dir=tmp_path, model_pack=pack_id)
    tail = load_tail(settings, get_pack(pack_id))
    genuine = planner.load_genuine(tmp_path, pack_id)
    assert genuine.kind == "pairs" and genuine.scores > 4000
    # LFW's TAR at FMR 1e-3 (BENCHMARKS: 98.5% / 98.3%) read back from the two files
    assert 0.97 < genuine.recall_at(tail.threshold_for_fmr(1e-3)) < 0.99

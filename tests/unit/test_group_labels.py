"""Per-group reports against hostile or careless labels files, and the worst/best ratio's
interval when the best group's errors can vanish in a resample (found in review of issue 14)."""

from __future__ import annotations

import csv
import json
import logging
import os
import stat
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from face_dedup import fairness as fx
from face_dedup.adapters.sqlite_metrics import SqliteDriftStore
from face_dedup.bootstrap import build_service, drift_path
from face_dedup.calibrate import _load_cache, _save_cache, check_labels, read_csv
from face_dedup.cli import app
from face_dedup.domain import Outcome
from face_dedup.drift import DayKey
from face_dedup.group_report import applicant_groups, clean_groups, render_text
from face_dedup.service import InputRef
from face_dedup.settings import Settings
from tests.unit.test_fairness import THRESHOLD, _population


def _estimate(value: float) -> fx.Estimate:
    return fx.Estimate(value, value, value, 1.0, 10.0, 10)


def test_ratio_interval_is_unbounded_when_the_best_group_often_shows_no_error() -> None:
    """The best group has errors in the data but none in 30% of the resamples: its ratio is
    infinite there, so the interval's upper end is unbounded, not the 97.5th percentile of
    the remaining 70% (which is what dropping those resamples reported)."""
    resamples = 1000
    rng = np.random.default_rng(0)
    worst = np.concatenate([[0.01], rng.uniform(0.005, 0.015, resamples)])
    best = np.concatenate([[0.001], np.where(rng.random(resamples) < 0.3, 0.0, 0.001)])
    ratio = fx.compare(
        "fmr_within", {"A": worst, "B": best}, {"A": _estimate(0.01), "B": _estimate(0.001)}, 0.95
    )
    assert ratio is not None and ratio.worst == "A" and ratio.ratio == pytest.approx(10.0)
    assert ratio.ratio_low is not None and ratio.ratio_low > 0
    assert ratio.ratio_high is None  # unbounded


def test_ratio_interval_counts_rare_infinite_resamples_at_the_top() -> None:
    """1% of resamples infinite: the upper end stays finite but is not computed as if they
    were not there (which would pull it down to the finite ratios' own percentile)."""
    worst = np.concatenate([[0.02], np.full(1000, 0.02)])
    best = np.concatenate([[0.01], np.linspace(0.004, 0.016, 1000)])
    best[1:11] = 0.0  # ten resamples without an error in the best group
    ratio = fx.compare("fnmr", {"A": worst, "B": best}, {"A": _estimate(0.02), "B": _estimate(0.01)}, 0.95)
    assert ratio is not None and ratio.ratio_high is not None
    finite = worst[11:] / best[11:]
    assert ratio.ratio_high > float(np.percentile(finite, 97.5))


def test_an_unbounded_ratio_is_said_in_the_text() -> None:
    comparison = {
        "metric": "fmr_within",
        "worst": "A",
        "best": "B",
        "ratio": 12.0,
        "ratio_ci": [0.0, None],
        "difference": 1e-5,
        "difference_ci": [-1e-6, 3e-5],
        "differs": False,
    }
    report = {
        "group_by": "site",
        "calibration": {"model_pack": "p"},
        "confidence": 0.95,
        "resamples": 10,
        "groups": {},
        "gallery_size": 10,
        "thresholds": {},
        "failure_to_enroll": {"groups": {}, "worst_vs_best": comparison},
        "dedup": {"groups": {}, "worst_vs_best": []},
    }
    assert "= 12.00 [0.00, unbounded]" in render_text(report)


@pytest.mark.parametrize(
    "hostile",
    ["A|B", "\x1b[31mred\x1b[0m", "site\x1b]0;title\x07", "tab\there", "\u202eevil", "new\nline"],
)
def test_group_values_with_control_characters_or_the_pair_separator_are_refused(hostile: str) -> None:
    with pytest.raises(ValueError, match="control character"):
        clean_groups(["A", "B", hostile], "site")


def test_a_group_named_like_a_pair_would_have_overwritten_the_pair() -> None:
    """Why `|` is refused: with groups A, B and "A|B" the across-groups FMR of A with B and the
    within-group FMR of "A|B" share one key, and one of them was silently lost."""
    names = ("A", "A|B", "B")
    labels = {fx.pair_label(names, a, b) for a in range(3) for b in range(a, 3)}
    assert len(labels) < 6


def test_ordinary_group_values_pass() -> None:
    values = ["18-30", "Fémme", "site 3 (north)", "<b>&amp;", '=HYPERLINK("x")']
    assert clean_groups(values, "band") == values


def _write(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_labels_with_an_empty_identity_are_refused(tmp_path: Path) -> None:
    """All unlabelled photos would have become one "person": their pairs genuine pairs."""
    path = _write(tmp_path / "l.csv", ["file", "identity"], [["a.jpg", "p1"], ["b.jpg", ""]])
    with pytest.raises(ValueError, match=r"empty file or identity on 1 rows \(first: data row 2\)"):
        check_labels(read_csv(path, ("file", "identity")), path)


def test_labels_listing_a_photo_twice_are_refused(tmp_path: Path) -> None:
    """A photo listed twice is a genuine pair scoring 1.0: it lowers the false-non-match rate."""
    rows = [["a.jpg", "p1"], ["b.jpg", "p1"], ["a.jpg", "p1"]]
    path = _write(tmp_path / "l.csv", ["file", "identity"], rows)
    with pytest.raises(ValueError, match="data row 3 lists a file already listed"):
        check_labels(read_csv(path, ("file", "identity")), path)


def test_a_labels_file_that_is_not_utf8_is_named_in_the_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("file,identity,sex\na.jpg,p1,Fémme\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1\.csv is not UTF-8 text"):
        read_csv(path, ("file", "identity"))


def test_applicants_given_two_groups_are_refused() -> None:
    rows = [
        {"application_id": "A1", "sex": "F"},
        {"application_id": "A2", "sex": "M"},
        {"application_id": "A1", "sex": "M"},
    ]
    with pytest.raises(ValueError, match="data row 3: an application_id already given another 'sex'"):
        applicant_groups(rows, "sex")
    same_twice = [*rows[:2], {"application_id": "A1", "sex": "F"}]
    assert applicant_groups(same_twice, "sex") == {"A1": "F", "A2": "M"}
    with pytest.raises(ValueError, match="empty application_id"):
        applicant_groups([*rows[:2], {"application_id": "", "sex": "F"}], "sex")


def test_cli_errors_naming_a_markup_like_column_are_one_line(tmp_path: Path) -> None:
    """A column name (or path) like `[/x]` is text in an error, not rich markup: it used to end
    in a MarkupError traceback instead of the error message."""
    labels = _write(tmp_path / "l.csv", ["file", "identity"], [["a.jpg", "p1"]])
    result = CliRunner().invoke(
        app,
        [
            "calibrate",
            "--root",
            str(tmp_path),
            "--labels",
            str(labels),
            "--group-by",
            "[/x]",
            "--data-dir",
            str(tmp_path / "registry"),
        ],
    )
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "[/x]" in result.output and "Traceback" not in result.output


def test_cli_drift_refuses_a_min_count_of_zero(tmp_path: Path) -> None:
    data_dir = tmp_path / "registry"
    store = SqliteDriftStore(data_dir / "drift.sqlite3")
    store.add(DayKey("default", "cli", "2026-11-01"), {("outcome", "enrolled"): 3})
    store.add(DayKey("default", "cli", "2026-11-09"), {("quality.brightness", "120"): 2})
    args = ["report", "drift", "--data-dir", str(data_dir), "--baseline", "2026-11-01:2026-11-07"]
    result = CliRunner().invoke(app, [*args, "--recent", "2026-11-08:2026-11-09", "--min-count", "0"])
    assert result.exit_code == 1, result.output
    assert "--min-count must be at least 1" in result.output


@pytest.mark.parametrize("resamples", [0, 9, fx.MAX_RESAMPLES + 1])
def test_resamples_out_of_range_are_refused_before_any_memory_is_taken(resamples: int) -> None:
    """10 million resamples of 2,000 people would have asked for 160 GB at once."""
    with pytest.raises(ValueError, match="--resamples must be between 10 and"):
        fx.Resampler([0, 1, 1], resamples, seed=0)


def test_the_template_cache_is_private_and_replaced_whole(tmp_path: Path) -> None:
    """The cache holds templates (biometric data): it was written with the umask's mode (0644:
    readable by every user of the machine)."""
    cache = tmp_path / "templates.npz"
    old = os.umask(0o022)
    try:
        _save_cache(cache, "pack", {"a.jpg": np.ones(4, np.float32)}, {"b.jpg": "TOO_DARK"})
    finally:
        os.umask(old)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    assert not list(tmp_path.glob("*.partial"))
    vectors, failed = _load_cache(cache, "pack")
    assert list(vectors) == ["a.jpg"] and failed == {"b.jpg": "TOO_DARK"}


def test_a_damaged_template_cache_is_one_clear_error(tmp_path: Path) -> None:
    cache = tmp_path / "templates.npz"
    _save_cache(cache, "pack", {"a.jpg": np.ones(4, np.float32)}, {})
    cache.write_bytes(cache.read_bytes()[:100])  # cut short (a run killed while writing it)
    with pytest.raises(ValueError, match="is not a template cache"):
        _load_cache(cache, "pack")


def test_a_handful_of_people_gives_no_verdict_either_way() -> None:
    """No difference planted, group B of 3 people: resampling 3 people gave intervals so narrow
    that B "differed" in most runs (FMR within: 9 in 10). Now: no verdict, and the reason."""
    for seed in range(4):
        embeddings, data = _population({"A": 100, "B": 3}, seed=200 + seed)
        resampler = fx.Resampler(data.person_strata(), 300, seed)
        counts = fx.pair_counts(embeddings, data, THRESHOLD)
        report = fx.rates_at_threshold(counts, data, resampler, THRESHOLD)
        for comparison in report["worst_vs_best"]:
            assert comparison["too_few_to_tell"] and not comparison["differs"], comparison
    text = render_text(
        {
            "group_by": "site",
            "calibration": {"model_pack": "p"},
            "confidence": 0.95,
            "resamples": 10,
            "groups": {},
            "gallery_size": 10,
            "thresholds": {},
            "failure_to_enroll": {"groups": {}, "worst_vs_best": report["worst_vs_best"][0]},
            "dedup": {"groups": {}, "worst_vs_best": []},
        }
    )
    assert "too few people to tell (fewer than 20 in a group)" in text


def test_groups_of_twenty_people_or_more_still_get_a_verdict() -> None:
    embeddings, data = _population({"A": 150, "B": 150}, noise={"A": 1.0, "B": 1.4}, seed=0)
    resampler = fx.Resampler(data.person_strata(), 300, 1)
    report = fx.rates_at_threshold(fx.pair_counts(embeddings, data, THRESHOLD), data, resampler, THRESHOLD)
    fnmr = next(c for c in report["worst_vs_best"] if c["metric"] == "fnmr")
    assert fnmr["differs"] and not fnmr["too_few_to_tell"]


@pytest.mark.parametrize("name", ["/etc/passwd", "../outside.jpg", "lfw/../../outside.jpg"])
def test_labels_naming_files_outside_the_root_are_refused(tmp_path: Path, name: str) -> None:
    path = _write(tmp_path / "l.csv", ["file", "identity"], [["a.jpg", "p1"], [name, "p2"]])
    with pytest.raises(ValueError, match=r"a file outside --root .* data row 2"):
        check_labels(read_csv(path, ("file", "identity")), path)


def test_cli_drift_baseline_defaults_to_the_28_days_before_the_recent_window_given(tmp_path: Path) -> None:
    """`--recent` alone: the baseline was the 28 days before the *latest* week with counts, so
    a recent window earlier than that ended in "the baseline must end before ..."."""
    data_dir = tmp_path / "registry"
    store = SqliteDriftStore(data_dir / "drift.sqlite3")
    for day in ("2026-10-20", "2026-11-10", "2026-11-25", "2026-12-20"):
        store.add(DayKey("default", "cli", day), {("outcome", "enrolled"): 1})
    args = ["report", "drift", "--data-dir", str(data_dir), "--recent", "2026-11-20:2026-11-26", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["recent"] == {"from": "2026-11-20", "to": "2026-11-26", "inputs": 1}
    assert report["baseline"] == {"from": "2026-10-23", "to": "2026-11-19", "inputs": 1}


def test_a_broken_drift_store_never_fails_an_enrollment(
    base_settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The drift database made unusable under a running service (a folder where its file was):
    the input is still decided and kept, and the log names the failure's kind, not the input."""
    settings = replace(base_settings, data_dir=tmp_path / "registry")
    service, adapters = build_service(settings, reconcile=False)
    try:
        path = drift_path(settings)
        for leftover in path.parent.glob(path.name + "*"):
            leftover.unlink()
        path.mkdir()
        with caplog.at_level(logging.WARNING):
            item = service.enroll(b"", InputRef("secret-name.jpg", "APP-SECRET"), actor="cli:tester")
        assert item.outcome is Outcome.REJECTED
        assert service.store.get_import_item(item.key) is not None
    finally:
        adapters.close()
    assert "drift counts not recorded" in caplog.text
    assert "secret-name" not in caplog.text and "APP-SECRET" not in caplog.text


def test_a_failed_cache_write_keeps_the_old_cache_and_leaves_no_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "templates.npz"
    _save_cache(cache, "pack", {"a.jpg": np.ones(4, np.float32)}, {})
    before = cache.read_bytes()

    def full_disk(*_: object, **__: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", full_disk)
    with pytest.raises(OSError, match="No space left"):
        _save_cache(cache, "pack", {"b.jpg": np.ones(4, np.float32)}, {})
    assert cache.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["templates.npz"]

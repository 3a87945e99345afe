"""Drift aggregates and the shift test, on synthetic decided inputs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from face_dedup import drift
from face_dedup.adapters.sqlite_metrics import SqliteDriftStore
from face_dedup.domain import Candidate, ImportItem, Outcome


def _item(
    rng: np.random.Generator, *, dark: float = 1.0, scale: float = 1.0, day: str = "2026-11-02"
) -> ImportItem:
    brightness = float(np.clip(rng.normal(125, 25) * dark, 0, 255))
    inter_eye = float(rng.lognormal(np.log(60), 0.3) * scale)
    sharpness = float(rng.lognormal(np.log(150), 0.6) * scale)
    measures = {
        "brightness": brightness,
        "inter_eye_px": inter_eye,
        "sharpness": sharpness,
        "detector_score": float(min(0.999, rng.normal(0.93, 0.03))),
    }
    if brightness < 35 or inter_eye < 12:
        return ImportItem(
            "k",
            "t",
            "s",
            None,
            "d",
            Outcome.REJECTED,
            day + "T10:00:00",
            reason="TOO_DARK",
            measures=measures,
        )
    if rng.random() < 0.1:
        candidate = Candidate("rec", float(rng.uniform(0.4, 0.9)))
        return ImportItem(
            "k", "t", "s", None, "d", Outcome.REVIEW, day + "T10:00:00", candidates=(candidate,)
        )
    return ImportItem("k", "t", "s", None, "d", Outcome.ENROLLED, day + "T10:00:00", measures=measures)


def _counts(items: list[ImportItem]) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = {}
    for item in items:
        for pair in drift.observations(item):
            counts[pair] = counts.get(pair, 0) + 1
    return counts


def _sites(rng: np.random.Generator, n: int, shifted: dict[str, float] | None = None) -> list[ImportItem]:
    """n inputs from three sites; `shifted` applies to site 3 only (a new camera there): its
    `dark` and `scale` factors."""
    shift = shifted or {}
    assert set(shift) <= {"dark", "scale"}, shift
    items = []
    for i in range(n):
        site = i % 3
        if site == 2:
            items.append(_item(rng, dark=shift.get("dark", 1.0), scale=shift.get("scale", 1.0)))
        else:
            items.append(_item(rng))
    return items


def test_chi_square_and_kolmogorov_tails_match_tables() -> None:
    assert drift.chi2_sf(3.841459, 1) == pytest.approx(0.05, abs=1e-5)
    assert drift.chi2_sf(6.634897, 1) == pytest.approx(0.01, abs=1e-5)
    assert drift.chi2_sf(5.991465, 2) == pytest.approx(0.05, abs=1e-5)
    assert drift.chi2_sf(11.0705, 5) == pytest.approx(0.05, abs=1e-4)
    assert drift.chi2_sf(23.2093, 10) == pytest.approx(0.01, abs=1e-4)
    assert drift.kolmogorov_sf(1.3581) == pytest.approx(0.05, abs=1e-3)
    assert drift.kolmogorov_sf(1.6276) == pytest.approx(0.01, abs=1e-3)
    assert drift.chi2_sf(0.0, 3) == 1.0 and drift.kolmogorov_sf(0.0) == 1.0


@pytest.mark.parametrize(
    ("shift", "measure"),
    [({"dark": 0.45}, "quality.brightness"), ({"scale": 0.3}, "quality.inter_eye_px")],
    ids=["darkened", "downscaled"],
)
def test_flags_a_shift_at_one_site(shift: dict[str, float], measure: str) -> None:
    rng = np.random.default_rng(1)
    baseline = _counts(_sites(rng, 1500))
    recent = _counts(_sites(rng, 600, shift))
    report = drift.compare(baseline, recent)
    assert measure in report["flagged"]
    finding = next(f for f in report["findings"] if f["metric"] == measure)
    assert finding["test"] == "ks" and finding["p_value"] < report["test"]["alpha_per_measure"]


def test_darkened_site_also_shifts_rejections() -> None:
    rng = np.random.default_rng(2)
    report = drift.compare(_counts(_sites(rng, 1500)), _counts(_sites(rng, 600, {"dark": 0.25})))
    assert "outcome" in report["flagged"]
    outcome = next(f for f in report["findings"] if f["metric"] == "outcome")
    assert outcome["test"] == "chi2" and "rejected" in outcome["detail"]


def test_stays_quiet_on_a_reshuffle_of_the_same_data() -> None:
    rng = np.random.default_rng(3)
    items = _sites(rng, 1500) + _sites(rng, 600, {"dark": 0.45})  # the shift is in the data...
    for seed in range(5):
        order = np.random.default_rng(seed).permutation(len(items))  # ...but in both windows alike
        shuffled = [items[k] for k in order]
        report = drift.compare(_counts(shuffled[:1500]), _counts(shuffled[1500:]))
        assert report["flagged"] == [], report["flagged"]


def test_too_few_observations_are_reported_not_passed() -> None:
    rng = np.random.default_rng(4)
    report = drift.compare(_counts(_sites(rng, 1000)), _counts(_sites(rng, 40, {"dark": 0.3})))
    assert report["flagged"] == []
    assert {f["test"] for f in report["findings"]} == {"too_few"}


def test_no_biometric_or_identifying_data_in_the_counts() -> None:
    item = ImportItem(
        "imp_secret",
        "t",
        "photos/Jane_Doe.jpg",
        "APP-123",
        "sha",
        Outcome.REVIEW,
        "2026-11-02T10:00:00",
        record_id="rec_secret",
        candidates=(Candidate("rec_other", 0.5512, "x.jpg", "APP-9"),),
        measures={"brightness": 101.3},
    )
    text = repr(drift.observations(item))
    for secret in ("imp_secret", "Jane", "APP", "rec_", "0.5512", "x.jpg"):
        assert secret not in text
    assert ("best_score", "0.54") in drift.observations(item)
    assert drift.channel_of("upload:selfie") == "selfie"
    assert drift.channel_of("cli:alice") == "cli"


def test_sqlite_store_sums_days_and_channels(tmp_path: Path) -> None:
    store = SqliteDriftStore(tmp_path / "drift.sqlite3")
    recorder = drift.DriftRecorder(store)
    rng = np.random.default_rng(5)
    for day in ("2026-11-01", "2026-11-02", "2026-11-03"):
        for actor in ("cli:bob", "upload:selfie"):
            recorder.observe(replace(_item(rng), created_at=day + "T09:00:00"), actor)
    counts = store.counts(tenant="t", first_day="2026-11-01", last_day="2026-11-02")
    assert sum(n for (m, _), n in counts.items() if m == "outcome") == 4
    selfies = store.counts(tenant="t", first_day="2026-11-01", last_day="2026-11-03", channel="selfie")
    assert sum(n for (m, _), n in selfies.items() if m == "outcome") == 3
    assert store.channels(tenant="t") == ["cli", "selfie"]
    assert store.counts(tenant="other", first_day="2026-11-01", last_day="2026-11-03") == {}
    assert store.days(tenant="t") == ["2026-11-01", "2026-11-02", "2026-11-03"]

"""Drift watched in operation: the real service records daily counts, and `face-dedup report drift`
flags a site whose photos got darker, and stays quiet when the same inputs arrive reshuffled."""

from __future__ import annotations

import io
import json
import random
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageEnhance
from typer.testing import CliRunner

from face_dedup.bootstrap import build_service, drift_path
from face_dedup.cli import app
from face_dedup.service import InputRef, content_digest
from face_dedup.settings import Settings
from face_dedup.usecases import enrollment_writes as service_module  # where inputs are timestamped
from face_dedup.vision.pipeline import FaceEngine

pytestmark = pytest.mark.shared_data

PHOTOS = 240  # 120 per window: the report's minimum is 100 per measure and window


def _photos(faces_root: Path) -> list[Path]:
    people = sorted(p for p in (faces_root / "lfw").iterdir() if p.is_dir())
    return [sorted(p.glob("*.jpg"))[0] for p in people[:PHOTOS]]  # one photo per person


def _darker(data: bytes) -> bytes:
    image = Image.open(io.BytesIO(data)).convert("RGB")
    out = io.BytesIO()
    ImageEnhance.Brightness(image).enhance(0.35).save(out, "JPEG", quality=92)
    return out.getvalue()


@pytest.fixture(scope="module")
def analysed(faces_root: Path, engine: FaceEngine) -> list[tuple[str, bytes, Any, Any]]:
    """(name, bytes, analysis of the photo, analysis of it darkened), analysed once."""
    found = []
    for index, path in enumerate(_photos(faces_root)):
        data = path.read_bytes()
        darkened = None
        if _site_c_recent(index):  # only these are ever darkened
            dark = _darker(data)
            darkened = (dark, engine.process(dark))
        found.append((path.name, data, engine.process(data), darkened))
    return found


def _site_c_recent(index: int) -> bool:
    return index >= PHOTOS // 2 and index % 3 == 2


def _import(
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    inputs: list[tuple[str, str, bytes, Any]],
) -> None:
    """Register (day, name, bytes, analysis) inputs through the real service built by bootstrap,
    with the service's clock set to each input's day."""
    service, adapters = build_service(settings, reconcile=False)
    try:
        for day, name, data, analysis in inputs:
            monkeypatch.setattr(service_module, "utc_now", lambda day=day: f"{day}T12:00:00.000+00:00")
            service.register(InputRef(name, None), content_digest(data), analysis, None, actor="cli:tester")
    finally:
        adapters.close()


def _inputs(
    analysed: list[tuple[str, bytes, Any, Any]], darken_site_c: bool
) -> list[tuple[str, str, bytes, Any]]:
    """Days 1-3 the baseline, days 4-5 the recent window; photos arrive from sites A, B, C in turn.
    With `darken_site_c`, site C's recent photos are darker (a new camera, say)."""
    inputs = []
    half = len(analysed) // 2
    for index, (name, data, analysis, darkened) in enumerate(analysed):
        day = f"2026-11-0{4 + index % 2}" if index >= half else f"2026-11-0{1 + index % 3}"
        if darken_site_c and darkened is not None:
            inputs.append((day, "dark-" + name, *darkened))
        else:
            inputs.append((day, name, data, analysis))
    return inputs


def _report(settings: Settings) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(
        app,
        [
            "report",
            "drift",
            "--data-dir",
            str(settings.data_dir),
            "--baseline",
            "2026-11-01:2026-11-03",
            "--recent",
            "2026-11-04:2026-11-05",
            "--json",
        ],
    )
    return result.exit_code, json.loads(result.stdout)


def test_service_records_counts_and_nothing_identifying(
    base_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, analysed: list[Any]
) -> None:
    settings = replace(base_settings, data_dir=tmp_path / "registry")
    name, data, analysis, _ = analysed[0]
    _import(settings, monkeypatch, [("2026-11-01", name, data, analysis)])
    service, adapters = build_service(settings, reconcile=False)
    try:
        rejected = service.enroll(b"not a photo", InputRef("garbage.jpg", "APP-77"), actor="upload:selfie")
        service.for_tenant("tenant-b").enroll(b"", InputRef("empty.jpg", None), actor="cli:tester")
    finally:
        adapters.close()
    db = sqlite3.connect(drift_path(settings))
    rows = db.execute("SELECT tenant, channel, metric, bin, count FROM drift_counts").fetchall()
    db.close()
    outcomes = {
        (channel, b): n for tenant, channel, m, b, n in rows if m == "outcome" and tenant == "default"
    }
    assert ("tenant-b", "cli", "reason", "EMPTY_FILE", 1) in rows  # other tenants' services count too
    assert outcomes == {("cli", "enrolled"): 1, ("selfie", "rejected"): 1}
    assert ("reason", rejected.reason) in {(m, b) for *_, m, b, _ in rows}
    text = drift_path(settings).read_bytes()
    for secret in (name.encode(), b"garbage", b"APP-77", b"tester"):
        assert secret not in text


def test_report_flags_a_darkened_site(
    base_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, analysed: list[Any]
) -> None:
    settings = replace(base_settings, data_dir=tmp_path / "registry")
    _import(settings, monkeypatch, _inputs(analysed, darken_site_c=True))
    code, report = _report(settings)
    assert code == 3
    assert "quality.brightness" in report["flagged"]
    assert report["baseline"]["inputs"] == PHOTOS // 2 and report["recent"]["inputs"] == PHOTOS // 2


def test_report_stays_quiet_on_a_reshuffle_of_the_same_inputs(
    base_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, analysed: list[Any]
) -> None:
    inputs = _inputs(analysed, darken_site_c=True)  # the same darkened photos as above ...
    days = [day for day, *_ in inputs]
    random.Random(7).shuffle(days)  # ... but spread over both windows alike
    settings = replace(base_settings, data_dir=tmp_path / "registry")
    _import(settings, monkeypatch, [(d, *rest) for d, (_, *rest) in zip(days, inputs, strict=True)])
    code, report = _report(settings)
    assert report["flagged"] == [], report["findings"]
    assert code == 0

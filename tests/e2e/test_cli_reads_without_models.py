"""Commands that look at no new photo do not load the models (review R12j).

`cases list`, `cases show` (with its review sheet), `audit export` and `report cases` built the
whole engine: with the default pack on OpenVINO bf16 that is an onnxruntime session, an OpenVINO
compile and a self-check, most of a short command's time and memory (`cases list`: 2.0 s and
377 MB against 0.9 s and 88 MB without). Proven by running them with an empty models folder,
where building the engine fails: real processes, a registry imported with the real models."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from face_dedup.settings import Settings
from tests.conftest import shared_faces
from tests.e2e.test_cli import cli

pytestmark = pytest.mark.shared_data


def test_read_commands_run_without_the_models(base_settings: Settings, tmp_path: Path) -> None:
    faces = shared_faces()
    photos = tmp_path / "photos"
    photos.mkdir()
    for number, name in enumerate(["Abel_Pacheco_0001.jpg", "Abel_Pacheco_0004.jpg"], start=1):
        shutil.copy(faces / "lfw" / "Abel_Pacheco" / name, photos / f"scan-{number}.jpg")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("file,application_id\nscan-1.jpg,APP-1\nscan-2.jpg,APP-2\n")
    data = str(tmp_path / "registry")
    cli(base_settings, "import", str(photos), "--manifest", str(manifest), "--data-dir", data)

    no_models = base_settings.with_overrides(models_dir=tmp_path / "no-models")
    (tmp_path / "no-models").mkdir()
    # Building the engine needs them (the control: this is what read commands used to hit).
    assert (
        "not installed"
        in cli(no_models, "search", str(photos / "scan-1.jpg"), "--data-dir", data, check=False).stderr
    )

    cases = json.loads(cli(no_models, "cases", "list", "--data-dir", data, "--json").stdout)
    case_id = (cases if isinstance(cases, list) else cases["cases"])[0]["case_id"]
    sheet = tmp_path / "sheet.png"
    shown = json.loads(
        cli(no_models, "cases", "show", case_id, "--sheet", str(sheet), "--data-dir", data, "--json").stdout
    )
    assert shown["case_id"] == case_id and sheet.read_bytes().startswith(b"\x89PNG")
    events = cli(no_models, "audit", "export", "--data-dir", data).stdout.splitlines()
    assert any(json.loads(line)["action"] == "import.enrolled" for line in events)
    labels = tmp_path / "labels.csv"
    with labels.open("w", newline="") as handle:
        csv.writer(handle).writerows([("application_id", "site"), ("APP-1", "site-a"), ("APP-2", "site-b")])
    # Two applications make one case, of one group: the report gets past the registry and stops
    # at its own check (before, at the models).
    report = cli(
        no_models,
        "report",
        "cases",
        "--labels",
        str(labels),
        "--group-by",
        "site",
        "--data-dir",
        data,
        check=False,
    )
    assert "nothing to compare" in report.stderr and "not installed" not in report.stderr

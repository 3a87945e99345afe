"""Per-group reports on real photos: `calibrate --group-by` at the thresholds the service uses, and
officers' outcomes per group from a real registry's cases."""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from face_dedup.bootstrap import build_service
from face_dedup.cli import app
from face_dedup.domain import Actor, CaseDecision, Role
from face_dedup.service import InputRef
from face_dedup.settings import Settings

pytestmark = pytest.mark.shared_data

PER_GROUP = 10  # people per group, two photos each
ODD_GROUP = 'F<&">'  # a hostile label: must come out as text everywhere


def _people(faces_root: Path) -> dict[str, list[tuple[str, str]]]:
    """Two photos each of PER_GROUP women and PER_GROUP men, from the shared labels."""
    by_person: dict[str, list[dict[str, str]]] = {}
    with (faces_root / "lfw_sex.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            by_person.setdefault(row["identity"], []).append(row)
    chosen: dict[str, list[tuple[str, str]]] = {"F": [], "M": []}
    for identity, rows in sorted(by_person.items()):
        sex = rows[0]["sex"]
        if len(rows) >= 2 and len(chosen[sex]) < 2 * PER_GROUP:
            chosen[sex].append((identity, rows[0]["file"]))
            chosen[sex].append((identity, rows[1]["file"]))
    return chosen


def _write(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _calibrate(settings: Settings, faces_root: Path, labels: Path, *extra: str) -> Any:
    return CliRunner().invoke(
        app,
        [
            "calibrate",
            "--root",
            str(faces_root),
            "--labels",
            str(labels),
            "--data-dir",
            str(settings.data_dir),
            *extra,
        ],
    )


def test_calibrate_by_group_at_the_service_thresholds(
    base_settings: Settings, faces_root: Path, tmp_path: Path
) -> None:
    people = _people(faces_root)
    rows = [[f, i, ODD_GROUP if sex == "F" else sex] for sex, photos in people.items() for i, f in photos]
    labels = _write(tmp_path / "labels.csv", ["file", "identity", "sex"], rows)
    settings = replace(base_settings, data_dir=tmp_path / "registry")
    args = ["--group-by", "sex", "--gallery-size", "1000", "--resamples", "50", "--json"]
    cache, plot = tmp_path / "templates.npz", tmp_path / "by-sex.svg"
    result = _calibrate(settings, faces_root, labels, *args, "--cache", str(cache), "--plot", str(plot))
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)["by_group"]

    service, adapters = build_service(settings, reconcile=False, with_engine=False)
    try:
        dedup = service.thresholds(gallery_size=1000)
        verify = service.tail.threshold_for_fmr(service.settings.verify_fmr)
    finally:
        adapters.close()
    thresholds = report["thresholds"]
    assert thresholds["verify"]["threshold"] == pytest.approx(verify)
    assert thresholds["review"]["threshold"] == pytest.approx(dedup.review)
    assert thresholds["auto_link"]["threshold"] == pytest.approx(dedup.duplicate)

    assert report["groups"][ODD_GROUP] == {"photos": 20, "people": 10, "people_with_usable_photos": 10}
    at_verify = thresholds["verify"]
    assert at_verify["fnmr"]["M"]["trials"] == PER_GROUP  # one genuine pair per person
    assert at_verify["fmr"]["M"]["trials"] == 20 * 19 // 2 - PER_GROUP  # pairs of different people
    assert at_verify["fmr"]["|".join(sorted(("M", ODD_GROUP)))]["trials"] == 400
    assert report["dedup"]["groups"]["M"]["duplicate_recall"]["trials"] == PER_GROUP

    ET.fromstring(plot.read_text(encoding="utf-8"))  # well-formed: the odd label was escaped
    assert ODD_GROUP not in plot.read_text(encoding="utf-8")

    # from the cache: no photo is analysed again, and the report is the same
    photo_free = tmp_path / "no-photos"
    photo_free.mkdir()
    again = _calibrate(settings, photo_free, labels, *args, "--cache", str(cache))
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["by_group"] == report

    text = _calibrate(
        settings, photo_free, labels, "--group-by", "sex", "--resamples", "50", "--cache", str(cache)
    )
    assert text.exit_code == 0 and ODD_GROUP in text.stdout and "FNMR" in text.stdout


def test_bad_group_columns_are_refused_before_any_photo_is_read(
    base_settings: Settings, tmp_path: Path
) -> None:
    settings = replace(base_settings, data_dir=tmp_path / "registry")
    ids = _write(
        tmp_path / "ids.csv",
        ["file", "identity", "sex", "nid"],
        [[f"x{i}.jpg", f"p{i}", "F", f"N{i}"] for i in range(60)],
    )
    missing = _calibrate(settings, tmp_path, ids, "--group-by", "site")
    assert missing.exit_code == 1 and "site" in missing.output
    identifier = _calibrate(settings, tmp_path, ids, "--group-by", "nid")
    assert identifier.exit_code == 1 and "distinct values" in identifier.output
    single = _calibrate(settings, tmp_path, ids, "--group-by", "sex")
    assert single.exit_code == 1 and "single value" in single.output


def test_officers_outcomes_per_group(base_settings: Settings, faces_root: Path, tmp_path: Path) -> None:
    settings = replace(base_settings, data_dir=tmp_path / "registry")
    people = {sex: photos[:6] for sex, photos in _people(faces_root).items()}  # three people each
    labels: list[list[str]] = []
    officer, supervisor = Actor("olivia", Role.OFFICER), Actor("sam", Role.SUPERVISOR)
    service, adapters = build_service(settings, reconcile=False)
    try:
        for sex, photos in people.items():
            for index, (identity, file) in enumerate(photos):
                application = f"APP-{sex}-{identity}-{index}"
                labels.append([application, sex])
                service.enroll((faces_root / file).read_bytes(), InputRef(file, application))
        cases = service.store.list_cases(tenant=service.tenant)
        by_sex: dict[str, list[str]] = {"F": [], "M": []}
        for case in cases:
            probe = service.store.get_record(case.probe_record_id)
            assert probe is not None and probe.application_id is not None
            by_sex[probe.application_id.split("-")[1]].append(case.case_id)
        assert by_sex["F"] and by_sex["M"], "every same-person pair here matches at a small gallery"
        for case_id in by_sex["F"]:
            service.claim_case(case_id, officer)
            service.decide_case(case_id, CaseDecision.CANNOT_TELL, officer, "unclear")
        for case_id in by_sex["M"]:
            case = service.claim_case(case_id, officer)
            service.decide_case(
                case_id,
                CaseDecision.SAME_PERSON,
                officer,
                "same",
                matched_record_id=case.candidates[0].record_id,
            )
        service.confirm_case(by_sex["M"][0], supervisor, False, "the ears differ")
    finally:
        adapters.close()
    labels_file = _write(tmp_path / "applicants.csv", ["application_id", "sex"], labels)
    result = CliRunner().invoke(
        app,
        [
            "report",
            "cases",
            "--labels",
            str(labels_file),
            "--group-by",
            "sex",
            "--resamples",
            "50",
            "--data-dir",
            str(settings.data_dir),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    women, men = report["groups"]["F"], report["groups"]["M"]
    assert women["cases"] == women["decided"] == len(by_sex["F"])
    assert women["cannot_tell"]["value"] == 1.0
    assert men["same_person"]["value"] == 1.0  # the first decision, though one was overturned
    assert men["overturned"]["errors"] == 1 and men["overturned"]["trials"] == len(by_sex["M"])
    assert report["unlabelled_cases"] == 0

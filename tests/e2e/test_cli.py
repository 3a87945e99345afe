"""The command line as an operator uses it: real processes, real models, real files."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from face_dedup.settings import Settings
from tests.conftest import encode

pytestmark = pytest.mark.shared_data

# Three people, two of them with a second photo (known duplicates), in a deliberate order.
PHOTOS = [
    ("lfw/Abel_Pacheco/Abel_Pacheco_0001.jpg", "APP-001"),
    ("lfw/Akhmed_Zakayev/Akhmed_Zakayev_0001.jpg", "APP-002"),
    ("lfw/Amber_Tamblyn/Amber_Tamblyn_0001.jpg", "APP-003"),
    ("lfw/Abel_Pacheco/Abel_Pacheco_0004.jpg", "APP-004"),
    ("lfw/Amber_Tamblyn/Amber_Tamblyn_0002.jpg", "APP-005"),
]


def cli(
    settings: Settings, *args: str, check: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FACE_DEDUP_MODELS_DIR": str(settings.models_dir)}
    result = subprocess.run(
        [sys.executable, "-m", "face_dedup", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"face-dedup {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
    return result


def make_batch(faces_root: Path, folder: Path) -> Path:
    """Photos named like a registry's files (no person names), bad files, and a manifest."""
    folder.mkdir(parents=True)
    rows = []
    for number, (name, application) in enumerate(PHOTOS, start=1):
        target = folder / f"scan-{number:03d}.jpg"
        shutil.copy(faces_root / name, target)
        rows.append((target.name, application))
    (folder / "scan-006.jpg").write_bytes((faces_root / PHOTOS[0][0]).read_bytes()[:900])  # truncated
    (folder / "scan-007.jpg").write_text("not a photo")
    yale = next((faces_root / "photos" / "yale").glob("*/*"))
    shutil.copy(yale, folder / "scan-008")  # a GIF without an extension
    rows += [
        ("scan-006.jpg", "APP-006"),
        ("scan-007.jpg", "APP-007"),
        ("scan-008", "APP-008"),
        ("scan-999.jpg", "APP-999"),
    ]  # listed, but never delivered
    manifest = folder.parent / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "application_id", "office"])
        writer.writerows((f, a, "north") for f, a in rows)
    return manifest


def read_report(path: Path) -> dict[str, dict[str, Any]]:  # JSON lines: values of any JSON type
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return {Path(str(line["source"])).name: line for line in lines}


def test_import_review_decide_erase(base_settings: Settings, faces_root: Path, tmp_path: Path) -> None:
    manifest = make_batch(faces_root, tmp_path / "batch")
    data = str(tmp_path / "registry")
    report_path = tmp_path / "report.jsonl"
    result = cli(
        base_settings,
        "import",
        str(tmp_path / "batch"),
        "--manifest",
        str(manifest),
        "--report",
        str(report_path),
        "--data-dir",
        data,
        "--json",
    )
    summary = json.loads(result.stdout)
    assert summary["total"] == 9
    report = read_report(report_path)
    assert set(report) == {f"scan-00{i}.jpg" for i in range(1, 8)} | {"scan-008", "scan-999.jpg"}
    assert report["scan-001.jpg"]["outcome"] == "enrolled"
    assert report["scan-002.jpg"]["outcome"] == "enrolled"
    assert report["scan-003.jpg"]["outcome"] == "enrolled"
    assert report["scan-004.jpg"]["outcome"] in ("review", "duplicate")
    assert report["scan-004.jpg"]["candidates"][0]["record_id"] == report["scan-001.jpg"]["record_id"]
    assert report["scan-004.jpg"]["candidates"][0]["source"].endswith("scan-001.jpg")
    assert report["scan-005.jpg"]["outcome"] in ("review", "duplicate")
    assert report["scan-005.jpg"]["candidates"][0]["record_id"] == report["scan-003.jpg"]["record_id"]
    assert report["scan-006.jpg"]["reason"] == "UNDECODABLE"
    assert report["scan-007.jpg"]["reason"] == "UNSUPPORTED_FORMAT"
    assert report["scan-008"]["outcome"] == "enrolled"
    assert report["scan-999.jpg"]["reason"] == "UNREADABLE"
    assert report["scan-004.jpg"]["application_id"] == "APP-004"
    assert summary["outcomes"]["rejected"] == 3

    # Re-importing the same folder changes nothing and reports every input again.
    again = json.loads(
        cli(
            base_settings,
            "import",
            str(tmp_path / "batch"),
            "--manifest",
            str(manifest),
            "--report",
            str(tmp_path / "again.jsonl"),
            "--data-dir",
            data,
            "--json",
        ).stdout
    )
    assert again["outcomes"] == summary["outcomes"]
    assert (
        again["resumed"] == 8
    )  # everything read before is reported from the registry; the missing file is retried
    assert {k: v["record_id"] for k, v in read_report(tmp_path / "again.jsonl").items()} == {
        k: v["record_id"] for k, v in report.items()
    }

    listed = json.loads(cli(base_settings, "cases", "list", "--data-dir", data, "--json").stdout)
    assert {c["case_id"] for c in listed} == {
        report["scan-004.jpg"]["case_id"],
        report["scan-005.jpg"]["case_id"],
    }
    case_id = str(report["scan-004.jpg"]["case_id"])
    sheet = tmp_path / "case.png"
    shown = json.loads(
        cli(
            base_settings, "cases", "show", case_id, "--sheet", str(sheet), "--data-dir", data, "--json"
        ).stdout
    )
    assert shown["probe"]["application_id"] == "APP-004" and shown["candidates"]
    with Image.open(sheet) as picture:  # probe and one candidate side by side
        assert picture.format == "PNG" and picture.width > 2 * picture.height

    def cases(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return cli(base_settings, "cases", *args, "--data-dir", data, "--json", check=check)

    decided = json.loads(
        cases("decide", case_id, "--same", "--officer", "ann", "--comment", "same person").stdout
    )
    assert decided["status"] == "awaiting_confirmation" and decided["decision"] == "same_person"
    twice = cases("decide", case_id, "--different", "--officer", "bob", check=False)
    assert twice.returncode == 1 and "already" in twice.stderr
    self_confirm = cases("confirm", case_id, "--supervisor", "ann", check=False)
    assert self_confirm.returncode == 1 and "two-person rule" in self_confirm.stderr
    confirmed = json.loads(cases("confirm", case_id, "--supervisor", "sue", "--comment", "agree").stdout)
    assert confirmed["status"] == "closed" and confirmed["confirmed_by"] == "sue"
    assert [h["action"] for h in confirmed["history"]] == ["decided", "confirmed"]
    assert cli(base_settings, "cases", "show", "case_nope", "--data-dir", data, check=False).returncode == 1

    search = json.loads(
        cli(
            base_settings,
            "search",
            str(tmp_path / "batch" / "scan-002.jpg"),
            "--top",
            "3",
            "--data-dir",
            data,
            "--json",
        ).stdout
    )
    assert search["candidates"][0]["record_id"] == report["scan-002.jpg"]["record_id"]
    assert search["candidates"][0]["above_review_threshold"] is True

    record_id = str(report["scan-002.jpg"]["record_id"])
    erased = json.loads(
        cli(
            base_settings,
            "erase",
            record_id,
            "--reason",
            "GDPR art. 17 request 7",
            "--actor",
            "dpo",
            "--data-dir",
            data,
            "--json",
        ).stdout
    )
    assert erased["records"] == 1 and erased["vectors"] == 1
    assert cli(base_settings, "erase", record_id, "--data-dir", data, check=False).returncode == 1
    after = json.loads(
        cli(
            base_settings, "search", str(tmp_path / "batch" / "scan-002.jpg"), "--data-dir", data, "--json"
        ).stdout
    )
    assert record_id not in {c["record_id"] for c in after["candidates"]}

    audit = [
        json.loads(line)
        for line in cli(base_settings, "audit", "export", "--data-dir", data).stdout.splitlines()
    ]
    actions = [event["action"] for event in audit]
    assert actions.count("import.enrolled") == 4 and actions.count("case.decided") == 1
    assert actions.count("case.confirmed") == 1
    assert actions.count("case.viewed") == 1  # showing faces to someone is audited
    assert actions[-2:] == ["record.erased", "search"]
    assert all("embedding" not in json.dumps(event) for event in audit)


def test_verify_and_errors(base_settings: Settings, faces_root: Path, tmp_path: Path) -> None:
    a, b = faces_root / PHOTOS[0][0], faces_root / PHOTOS[3][0]
    same = json.loads(
        cli(base_settings, "verify", str(a), str(b), "--data-dir", str(tmp_path), "--json").stdout
    )
    assert same["match"] is True and same["score"] >= same["threshold"]
    text = tmp_path / "notes.jpg"
    text.write_text("hello")
    bad = cli(base_settings, "verify", str(a), str(text), "--data-dir", str(tmp_path), "--json", check=False)
    assert bad.returncode == 1 and json.loads(bad.stdout)["rejected"][0]["reason"] == "UNSUPPORTED_FORMAT"
    missing = cli(
        base_settings, "import", str(tmp_path / "nowhere"), "--data-dir", str(tmp_path), check=False
    )
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    no_models = subprocess.run(
        [
            sys.executable,
            "-m",
            "face_dedup",
            "search",
            str(a),
            "--data-dir",
            str(tmp_path),
            "--models-dir",
            str(tmp_path / "empty"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert no_models.returncode == 1 and "face-dedup models install" in no_models.stderr


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["import"],
        ["models"],
        ["models", "add"],
        ["migrate"],
        ["migrate", "run"],
        ["cases", "decide"],
        ["cases", "confirm"],
        ["calibrate"],
        ["demo"],
    ],
)
def test_help_everywhere(base_settings: Settings, command: list[str]) -> None:
    result = cli(base_settings, *command, "--help")
    assert "Usage" in result.stdout


def test_import_killed_midway_resumes_to_the_same_state(
    base_settings: Settings, faces_root: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    people = sorted((faces_root / "lfw").iterdir())[:60]
    for person in people:
        for photo in sorted(person.iterdir())[:2]:
            shutil.copy(photo, folder / photo.name)
    total = len(list(folder.iterdir()))
    clean = str(tmp_path / "clean")
    cli(base_settings, "import", str(folder), "--data-dir", clean, "--report", str(tmp_path / "clean.jsonl"))

    killed = str(tmp_path / "killed")
    env = {**os.environ, "FACE_DEDUP_MODELS_DIR": str(base_settings.models_dir)}
    report = tmp_path / "killed.jsonl"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "face_dedup",
            "import",
            str(folder),
            "--data-dir",
            killed,
            "--report",
            str(report),
            "--workers",
            "1",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not report.exists() or len(report.read_text().splitlines()) < 10):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_before_kill = len(report.read_text().splitlines())
    assert done_before_kill < total, "the import finished before it could be killed"

    resumed = json.loads(
        cli(
            base_settings, "import", str(folder), "--data-dir", killed, "--json", "--report", str(report)
        ).stdout
    )
    assert resumed["resumed"] >= done_before_kill
    final = read_report(report)
    expected = read_report(tmp_path / "clean.jsonl")
    assert {k: (v["outcome"], v["record_id"], v["case_id"]) for k, v in final.items()} == {
        k: (v["outcome"], v["record_id"], v["case_id"]) for k, v in expected.items()
    }
    cases_clean = json.loads(cli(base_settings, "cases", "list", "--data-dir", clean, "--json").stdout)
    cases_killed = json.loads(cli(base_settings, "cases", "list", "--data-dir", killed, "--json").stdout)
    assert [(c["case_id"], [x["record_id"] for x in c["candidates"]]) for c in cases_clean] == [
        (c["case_id"], [x["record_id"] for x in c["candidates"]]) for c in cases_killed
    ]


def test_calibrate_with_pairs_and_labels(base_settings: Settings, faces_root: Path, tmp_path: Path) -> None:
    with (faces_root / "lfw_pairs_dev.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    subset = [r for r in rows if r["fold"] in ("0", "1")][::15]  # both classes, two folds
    pairs = tmp_path / "pairs.csv"
    with pairs.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["fold", "file1", "file2", "same"])
        writer.writeheader()
        writer.writerows(subset)
        writer.writerow({"fold": "1", "file1": "lfw/missing.jpg", "file2": subset[0]["file2"], "same": "1"})
    report = json.loads(
        cli(
            base_settings,
            "calibrate",
            "--pairs",
            str(pairs),
            "--root",
            str(faces_root),
            "--data-dir",
            str(tmp_path),
            "--json",
        ).stdout
    )
    assert report["pairs"] == len(subset) + 1 and report["failed_images"] == 1
    assert 0.9 < report["accuracy"] < 1.0  # the unusable pair counts against it
    assert set(report["tar_at_far"]) == {"1e-2", "1e-3", "1e-4"}
    assert report["tar_at_far"]["1e-2"] is None  # under 100 impostor pairs cannot measure FAR 1e-2
    assert "eer" in report and "thresholds" in report

    people = sorted((faces_root / "lfw").iterdir())[:80]
    labels = tmp_path / "labels.csv"
    with labels.open("w", newline="") as handle:
        labelled = csv.writer(handle)
        labelled.writerow(["file", "identity"])
        for person in people:
            for photo in sorted(person.iterdir())[:3]:
                labelled.writerow([photo.relative_to(faces_root).as_posix(), person.name])
    report = json.loads(
        cli(
            base_settings,
            "calibrate",
            "--labels",
            str(labels),
            "--root",
            str(faces_root),
            "--data-dir",
            str(tmp_path),
            "--json",
            "--save",
        ).stdout
    )
    assert report["tar_at_far"]["1e-2"] > 0.9
    assert report["dedup"]["recall"] > 0.8
    assert Path(report["saved_calibration"]).is_file()
    # the genuine side is saved too, and `plan` then reads the registry's own curves
    curve = json.loads(Path(report["saved_genuine_curve"]).read_text(encoding="utf-8"))
    assert curve["scores"] == report["genuine_pairs"]
    plan = json.loads(cli(base_settings, "plan", "1000", "--data-dir", str(tmp_path), "--json").stdout)
    assert plan["genuine_scores"] == report["genuine_pairs"] != 4414  # not the shipped curve
    [size] = report["operating_points"]["sizes"]  # the calibration report shows the plan too
    assert size["gallery_size"] == 10_000 and any(r["label"] == "in force" for r in size["rows"])


def test_demo_runs_on_embedded_defaults(base_settings: Settings, tmp_path: Path) -> None:
    result = json.loads(cli(base_settings, "demo", "--data-dir", str(tmp_path), "--json").stdout)
    outcomes = result["summary"]["outcomes"]
    assert outcomes["enrolled"] >= 5
    assert outcomes.get("duplicate", 0) + outcomes.get("review", 0) >= 3
    assert result["summary"]["reject_reasons"].keys() >= {
        "UNDECODABLE",
        "UNSUPPORTED_FORMAT",
        "MULTIPLE_FACES",
    }
    assert result["decided_case"]
    assert Path(result["case_sheet"]).is_file()


def test_images_in_any_format_from_a_list_file(
    base_settings: Settings, faces_root: Path, tmp_path: Path
) -> None:
    source = Image.open(faces_root / PHOTOS[0][0])
    (tmp_path / "a.webp").write_bytes(encode(source, "WEBP", quality=90))
    (tmp_path / "b.png").write_bytes(encode(source))
    listing = tmp_path / "inputs.txt"
    listing.write_text("a.webp\nb.png\nmissing.jpg\n")
    report = tmp_path / "r.jsonl"
    cli(base_settings, "import", str(listing), "--data-dir", str(tmp_path / "reg"), "--report", str(report))
    lines = read_report(report)
    assert lines["a.webp"]["outcome"] == "enrolled"
    assert lines["b.png"]["outcome"] == "duplicate"  # same face, other file: not silently merged
    assert lines["missing.jpg"]["reason"] == "NOT_A_FILE"

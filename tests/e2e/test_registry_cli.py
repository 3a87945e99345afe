"""One registry, many `face-dedup` processes, real photos: exactly-once enrollment when ten
imports start together (copies of one photo; different photos of one new person), with
`serve` running and deciding cases meanwhile; erasure through the API and the CLI while other
processes hold the registry open, verified by scanning every file of the data dir."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from face_dedup.bootstrap import build_service
from face_dedup.settings import Settings
from face_dedup_api.auth import LocalUsers

pytestmark = pytest.mark.shared_data

PROCESSES = 10
PERSON = "lfw/Tony_Blair"
OFFICER = "t-officer-0123456789"
SUPERVISOR = "t-supervisor-0123456789"


def _env(settings: Settings) -> dict[str, str]:
    return {**os.environ, "FACE_DEDUP_MODELS_DIR": str(settings.models_dir), "FACE_DEDUP_WORKERS": "1"}


def _start_imports(settings: Settings, data_dir: Path, photos: list[Path], work: Path) -> list[Any]:
    """One `face-dedup import` per photo, each under its own application id, all at once."""
    runs = []
    for number, photo in enumerate(photos):
        folder = work / f"batch-{number:02d}"
        folder.mkdir(parents=True)
        (folder / "photo.jpg").write_bytes(photo.read_bytes())
        manifest = work / f"manifest-{number:02d}.csv"
        manifest.write_text(f"file,application_id\nphoto.jpg,APP-{number:03d}\n")
        report = work / f"report-{number:02d}.jsonl"
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "face_dedup",
                "import",
                str(folder),
                "--manifest",
                str(manifest),
                "--report",
                str(report),
                "--data-dir",
                str(data_dir),
                "--json",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(settings),
        )
        runs.append((process, report))
    return runs


def _finish(runs: list[Any]) -> list[dict[str, Any]]:
    lines = []
    for process, report in runs:
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr
        report_lines = [json.loads(line) for line in Path(report).read_text().splitlines()]
        assert len(report_lines) == 1  # every input reported
        lines.append(report_lines[0])
    return lines


def _assert_exactly_once(lines: list[dict[str, Any]]) -> str:
    enrolled = [line for line in lines if line["outcome"] == "enrolled"]
    assert len(enrolled) == 1, [(line["application_id"], line["outcome"]) for line in lines]
    first = enrolled[0]["record_id"]
    for line in lines:
        if line is not enrolled[0]:
            assert line["outcome"] in ("duplicate", "review"), line
            assert first in [c["record_id"] for c in line["candidates"]], line
    return str(first)


def _same_person_photos(base_settings: Settings, faces_root: Path, tmp_path: Path) -> list[Path]:
    """PROCESSES photos of one person that all match each other above the review threshold
    (so a second enrollment could only come from a race, never from the model missing a pair)."""
    service, adapters = build_service(base_settings.with_overrides(data_dir=tmp_path / "probe"))
    try:
        review = service.thresholds(PROCESSES).review
        templates = []
        for photo in sorted((faces_root / PERSON).glob("*.jpg")):
            result = service.analyze(photo.read_bytes())
            if hasattr(result, "embedding"):
                templates.append((photo, result.embedding))
    finally:
        adapters.close()
    chosen: list[tuple[Path, Any]] = []
    for photo, embedding in templates:
        if all(float(embedding @ other) >= review + 0.05 for _, other in chosen):
            chosen.append((photo, embedding))
    if len(chosen) < PROCESSES:
        pytest.skip(f"only {len(chosen)} photos of {PERSON} match each other clearly")
    return [photo for photo, _ in chosen[:PROCESSES]]


def test_ten_imports_of_copies_enroll_one(base_settings: Settings, faces_root: Path, tmp_path: Path) -> None:
    photo = faces_root / "lfw/Abel_Pacheco/Abel_Pacheco_0001.jpg"
    data_dir = tmp_path / "registry"
    lines = _finish(_start_imports(base_settings, data_dir, [photo] * PROCESSES, tmp_path / "work"))
    _assert_exactly_once(lines)
    assert all(line["outcome"] in ("enrolled", "duplicate") for line in lines)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _call(base: str, method: str, path: str, token: str, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(
        base + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read() or b"null")


@pytest.fixture
def served(base_settings: Settings, tmp_path: Path) -> Iterator[tuple[str, Path, subprocess.Popen[str]]]:
    data_dir = tmp_path / "registry"
    users = tmp_path / "users.json"
    users.write_text(
        json.dumps(
            {
                "users": [
                    {
                        "name": "olga",
                        "role": "officer",
                        "tenant": "default",
                        "token_sha256": LocalUsers.digest(OFFICER),
                    },
                    {
                        "name": "sam",
                        "role": "supervisor",
                        "tenant": "default",
                        "token_sha256": LocalUsers.digest(SUPERVISOR),
                    },
                ]
            }
        )
    )
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "face_dedup",
            "serve",
            "--users",
            str(users),
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(base_settings),
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            _call(base, "GET", "/me", OFFICER)
            break
        except (urllib.error.URLError, ConnectionError):
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise AssertionError("serve did not start: " + server.communicate()[1]) from None
            time.sleep(0.2)
    try:
        yield base, data_dir, server
    finally:
        if server.poll() is None:
            server.kill()
        server.communicate(timeout=30)


def test_ten_imports_of_one_new_person_with_serve_deciding_meanwhile(
    base_settings: Settings,
    faces_root: Path,
    tmp_path: Path,
    served: tuple[str, Path, subprocess.Popen[str]],
) -> None:
    base, data_dir, server = served
    photos = _same_person_photos(base_settings, faces_root, tmp_path)
    runs = _start_imports(base_settings, data_dir, photos, tmp_path / "work")
    decided: list[str] = []
    stop = threading.Event()

    def review() -> None:  # an officer working the queue while the imports run
        while not stop.is_set():
            for case in _call(base, "GET", "/cases?status=open&limit=100", OFFICER)["cases"]:
                if case["case_id"] not in decided:
                    _call(
                        base,
                        "POST",
                        f"/cases/{case['case_id']}/decision",
                        OFFICER,
                        {"decision": "cannot_tell", "comment": "escalating"},
                    )
                    decided.append(case["case_id"])
            time.sleep(0.1)

    officer = threading.Thread(target=review)
    officer.start()
    try:
        lines = _finish(runs)
    finally:
        stop.set()
        officer.join(60)
    first = _assert_exactly_once(lines)
    assert decided  # the officer did decide cases while the imports ran

    # Erase two flagged records, one through the API (serve holds the registry), one through
    # the CLI (serve still running), then look for their bytes in every file of the data dir.
    flagged = [line for line in lines if line["record_id"] != first][:2]
    targets = []
    with sqlite3.connect(data_dir / "registry.sqlite") as db:
        for line in flagged:
            template = db.execute(
                "SELECT embedding FROM records WHERE record_id = ?", (line["record_id"],)
            ).fetchone()[0]
            number = int(str(line["application_id"]).split("-")[1])
            targets.append((line["record_id"], template, photos[number].read_bytes()))
    db.close()
    api = _call(base, "DELETE", f"/records/{targets[0][0]}?reason=request-1", SUPERVISOR)
    assert set(api["verified"]) == {"template", "photo", "crop"}
    erased = subprocess.run(
        [
            sys.executable,
            "-m",
            "face_dedup",
            "erase",
            targets[1][0],
            "--reason",
            "request-2",
            "--data-dir",
            str(data_dir),
            "--json",
        ],
        capture_output=True,
        text=True,
        env=_env(base_settings),
        timeout=300,
        check=False,
    )
    assert erased.returncode == 0, erased.stderr
    assert set(json.loads(erased.stdout)["verified"]) == {"template", "photo", "crop"}
    files = [p for p in data_dir.rglob("*") if p.is_file()]
    for _, template, photo in targets:
        for path in files:
            data = path.read_bytes()
            assert template not in data, f"an erased template is still in {path}"
            assert photo not in data, f"an erased photo is still in {path}"

    # SIGTERM stops serve cleanly: exit 0, and the databases closed (no write-ahead log left)
    server.send_signal(signal.SIGTERM)
    assert server.wait(timeout=60) == 0
    assert not [p.name for p in data_dir.glob("*-wal")]

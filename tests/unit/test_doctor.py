"""Clear failures and self-repair on one machine: a damaged index is rebuilt from the store (at
open and by `face-dedup doctor`), a damaged store is reported with the file and the fix, and
write failures end in one line that names the file."""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from face_dedup.adapters.sqlite_files import storage_error
from face_dedup.bootstrap import build_service
from face_dedup.errors import StorageError
from face_dedup.service import InputRef, content_digest
from face_dedup.settings import Settings
from tests.unit.registry_worker import template

ROOT = Path(__file__).resolve().parents[2]


def _registry(data_dir: Path, people: int = 3) -> list[str]:
    service, adapters = build_service(Settings.load(data_dir=data_dir), with_engine=False)
    try:
        ids = []
        for n in range(people):
            photo = f"photo {n}".encode() * 30
            item = service.register(
                InputRef(f"{n}.jpg", f"APP-{n}"),
                content_digest(photo),
                template(service.settings, 40 + n, 0, 0),
                photo,
            )
            assert item.outcome.value == "enrolled"
            ids.append(str(item.record_id))
        return ids
    finally:
        adapters.close()


def _doctor(data_dir: Path) -> tuple[int, dict[str, Any], str]:
    result = subprocess.run(
        [sys.executable, "-m", "face_dedup", "doctor", "--data-dir", str(data_dir), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    return result.returncode, json.loads(result.stdout) if result.stdout.strip() else {}, result.stderr


def _gallery(data_dir: Path) -> int:
    service, adapters = build_service(Settings.load(data_dir=data_dir), with_engine=False)
    try:
        return service.gallery_size()
    finally:
        adapters.close()


def test_doctor_rebuilds_a_truncated_index(tmp_path: Path) -> None:
    data_dir = tmp_path / "registry"
    _registry(data_dir)
    index = data_dir / "index.sqlite"
    with index.open("r+b") as handle:
        handle.truncate(index.stat().st_size // 2)
    code, report, stderr = _doctor(data_dir)
    assert code == 0, (report, stderr)
    assert any(
        "index.sqlite" in line and "rebuilt from the store (3 templates)" in line
        for line in report["repaired"]
    )
    assert _gallery(data_dir) == 3
    code, report, _ = _doctor(data_dir)  # and now it is healthy
    assert code == 0 and report["repaired"] == []


def test_opening_a_registry_rebuilds_a_damaged_index_by_itself(tmp_path: Path) -> None:
    data_dir = tmp_path / "registry"
    _registry(data_dir)
    (data_dir / "index.sqlite").write_bytes(b"\x00" * 4096)  # not a database any more
    assert _gallery(data_dir) == 3


def _corrupt_a_page(path: Path) -> None:
    size = path.stat().st_size
    page = 4096
    assert size >= 4 * page
    with path.open("r+b") as handle:  # a b-tree page in the middle: garbage
        handle.seek(2 * page)
        handle.write(os.urandom(page))


def test_doctor_detects_a_corrupted_store_page_and_says_it_cannot_repair_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "registry"
    _registry(data_dir, people=12)
    _corrupt_a_page(data_dir / "registry.sqlite")
    code, report, stderr = _doctor(data_dir)
    assert code == 1, stderr
    (problem,) = report["unrepaired"]
    assert "registry.sqlite is damaged" in problem and "restore it from your backup" in problem
    with pytest.raises(StorageError, match=r"registry\.sqlite.*damaged.*backup") as caught:
        build_service(Settings.load(data_dir=data_dir), with_engine=False)
    assert "\n" not in str(caught.value)


def _stored_template(data_dir: Path, record_id: str) -> bytes:
    db = sqlite3.connect(data_dir / "registry.sqlite")
    try:
        return bytes(
            db.execute("SELECT embedding FROM records WHERE record_id = ?", (record_id,)).fetchone()[0]
        )
    finally:
        db.close()


def _rewrite_in_file(path: Path, old: bytes, new: bytes) -> None:
    data = path.read_bytes()
    assert data.count(old) == 1
    path.write_bytes(data.replace(old, new))


def test_a_template_rotted_inside_the_store_is_named_and_never_stops_the_registry(tmp_path: Path) -> None:
    """Bytes that rot inside a template pass every SQLite page check. Rebuilding the index then
    died in every command with "vector ... is not L2-normalised" (so the record could not even be
    erased), and doctor said all was well."""
    data_dir = tmp_path / "registry"
    ids = _registry(data_dir)
    good = _stored_template(data_dir, ids[1])
    _rewrite_in_file(data_dir / "registry.sqlite", good, good[:40] + bytes(40) + good[80:])
    (data_dir / "index.sqlite").write_bytes(b"\x00" * 4096)  # and the index must be rebuilt

    assert _gallery(data_dir) == 2  # opens; the damaged one is left out, not fatal
    code, report, stderr = _doctor(data_dir)
    assert code == 1, stderr
    (problem,) = report["unrepaired"]
    assert ids[1] in problem and "damaged" in problem and "backup" in problem
    service, adapters = build_service(Settings.load(data_dir=data_dir), with_engine=False)
    try:
        service.erase(ids[1], "dpo", "its template is damaged")
    finally:
        adapters.close()
    code, report, stderr = _doctor(data_dir)
    assert code == 0 and report["unrepaired"] == [], (report, stderr)


def test_doctor_replaces_an_index_copy_that_differs_from_the_store(tmp_path: Path) -> None:
    data_dir = tmp_path / "registry"
    ids = _registry(data_dir)
    good = _stored_template(data_dir, ids[0])
    rotted = bytearray(good)
    rotted[0] ^= 0x01  # the lowest mantissa bit: still unit length, so loading does not notice
    _rewrite_in_file(data_dir / "index.sqlite", good, bytes(rotted))
    code, report, stderr = _doctor(data_dir)
    assert code == 0, stderr
    assert any(
        "differed from the store's, replaced" in line and ids[0] in line for line in report["repaired"]
    )
    code, report, _ = _doctor(data_dir)
    assert "index.sqlite: every template equal to the store's" in report["checked"]


def test_doctor_says_so_when_a_reader_keeps_the_store_log_from_being_checkpointed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An erasure blocked by a reader tells the operator to run doctor; doctor must not then
    report the store's log as flushed while the erased rows are still in it."""
    from face_dedup.adapters import sqlite_files
    from face_dedup.doctor import run_doctor

    monkeypatch.setattr(sqlite_files, "CHECKPOINT_WAIT_S", 0.5)
    data_dir = tmp_path / "registry"
    _registry(data_dir)
    reader = sqlite3.connect(data_dir / "registry.sqlite", isolation_level=None)
    writer = sqlite3.connect(data_dir / "registry.sqlite", isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM records").fetchone()  # a snapshot, held open
        writer.execute("PRAGMA user_version = 7")  # a frame newer than that snapshot
        report = run_doctor(Settings.load(data_dir=data_dir))
    finally:
        reader.close()
        writer.close()
    assert not report.healthy
    assert "registry.sqlite: write-ahead log checkpointed" not in report.checked
    assert any(
        line.startswith("registry.sqlite: its write-ahead log could not be checkpointed")
        for line in report.unrepaired
    ), report.unrepaired
    assert run_doctor(Settings.load(data_dir=data_dir)).healthy  # the reader gone, it is done


def test_a_write_that_fails_names_the_file_and_loses_nothing(tmp_path: Path) -> None:
    """A file size limit makes the disk refuse writes (as a full disk does) in a child process."""
    data_dir = tmp_path / "registry"
    _registry(data_dir, people=1)
    script = f"""
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
from face_dedup.bootstrap import build_service
from face_dedup.errors import StorageError
from face_dedup.service import InputRef, content_digest
from face_dedup.settings import Settings
from tests.unit.registry_worker import template
service, adapters = build_service(Settings.load(data_dir={str(data_dir)!r}), with_engine=False)
files = [p for p in __import__("pathlib").Path({str(data_dir)!r}).rglob("*") if p.is_file()]
limit = max(p.stat().st_size for p in files)
resource.setrlimit(resource.RLIMIT_FSIZE, (limit + 8192, limit + 8192))
try:
    for n in range(1, 400):
        photo = (f"photo {{n}}".encode() * 2000)
        face = template(service.settings, 60 + n, 0, 0)
        service.register(InputRef(f"{{n}}.jpg", f"APP-{{n}}"), content_digest(photo), face, photo)
except StorageError as exc:
    print(exc)
    sys.exit(3)
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False, cwd=ROOT
    )
    assert result.returncode == 3, result.stderr
    line = result.stdout.strip()
    assert "\n" not in line and str(data_dir) in line and "run the command again" in line
    code, report, stderr = _doctor(data_dir)  # and the registry is consistent afterwards
    assert code in (0, 1), stderr
    assert not [p for p in report["unrepaired"] if "damaged" in p]


@pytest.mark.parametrize(
    ("error", "fix"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), "the disk is full"),
        (OSError(errno.EROFS, "Read-only file system"), "read-only"),
        (OSError(errno.EACCES, "Permission denied"), "permission denied"),
    ],
)
def test_each_os_failure_has_one_line_naming_the_file_and_the_fix(error: OSError, fix: str) -> None:
    message = str(storage_error(Path("/data/registry.sqlite"), error))
    assert message.startswith("/data/registry.sqlite: ") and fix in message and "\n" not in message


def test_doctor_makes_files_left_open_by_older_versions_owner_only(tmp_path: Path) -> None:
    data_dir = tmp_path / "registry"
    _registry(data_dir, people=1)
    tenant_folder = data_dir / "blobs" / "default"
    photo = next(tenant_folder.rglob("photo"))
    tenant_folder.chmod(0o755)
    photo.chmod(0o644)
    code, report, stderr = _doctor(data_dir)
    assert code == 0, stderr
    assert any("now owner-only" in line for line in report["repaired"])
    assert tenant_folder.stat().st_mode & 0o777 == 0o700
    assert photo.stat().st_mode & 0o777 == 0o600

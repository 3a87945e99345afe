"""`face-dedup report drift` on a drift file it cannot open (read-only media after a killed
import, a damaged file) ends in one line naming the file and the fix, exit code 1, no traceback.
Opening the store ran outside the CLI's error handling, so these printed a Python traceback; and
a damaged drift file (which every command opens) said to run `doctor`, which never touches it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from face_dedup.adapters.sqlite_metrics import SqliteDriftStore
from face_dedup.cli import app
from face_dedup.drift import DayKey
from face_dedup.errors import StorageError

ROOT = Path(__file__).resolve().parents[2]


def test_a_damaged_drift_file_is_one_line(tmp_path: Path) -> None:
    data_dir = tmp_path / "registry"
    data_dir.mkdir(mode=0o700)
    (data_dir / "drift.sqlite3").write_bytes(b"not a database, " * 400)
    result = CliRunner().invoke(app, ["report", "drift", "--data-dir", str(data_dir)])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert "drift.sqlite3" in lines[0] and "damaged" in lines[0], result.output
    # the fix it names works (the generic `face-dedup doctor` advice did not: doctor never opens it)
    assert "move this file" in lines[0] and "doctor" not in lines[0], result.output


def test_the_named_fix_for_damaged_counts_works(tmp_path: Path) -> None:
    path = tmp_path / "drift.sqlite3"
    path.write_bytes(b"not a database, " * 400)
    with pytest.raises(StorageError) as raised:
        SqliteDriftStore(path)
    assert raised.value.kind == "corrupt" and str(path) in str(raised.value)
    aside = tmp_path / "aside"
    aside.mkdir()
    for name in ("drift.sqlite3", "drift.sqlite3-wal", "drift.sqlite3-shm"):
        if (tmp_path / name).exists():
            (tmp_path / name).rename(aside / name)
    store = SqliteDriftStore(path)
    store.add(DayKey("t", "cli", "2026-12-02"), {("outcome", "enrolled"): 1})
    assert store.counts(tenant="t", first_day="2026-12-02", last_day="2026-12-02") == {
        ("outcome", "enrolled"): 1
    }
    store.close()


def test_read_only_media_after_a_killed_writer_is_one_line(tmp_path: Path) -> None:
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-m", "true"], check=False).returncode:
        pytest.skip("this user may not create a mount namespace (needs root or CAP_SYS_ADMIN)")
    data_dir = tmp_path / "registry"
    killed = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from face_dedup.adapters.sqlite_metrics import SqliteDriftStore\n"
        "from face_dedup.drift import DayKey\n"
        "store = SqliteDriftStore(Path(sys.argv[1]))\n"
        "store.add(DayKey('default', 'cli', '2026-12-01'), {('outcome', 'enrolled'): 1})\n"
        "os.kill(os.getpid(), 9)\n"
    )
    subprocess.run([sys.executable, "-c", killed, str(data_dir / "drift.sqlite3")], cwd=ROOT, check=False)
    assert (data_dir / "drift.sqlite3-wal").exists()  # killed holding its writer: the log is left
    script = (
        f"mount --bind {data_dir} {data_dir}\nmount -o remount,bind,ro {data_dir}\n"
        f"{sys.executable} -m face_dedup report drift --data-dir {data_dir}\n"
    )
    result = subprocess.run(
        ["unshare", "-m", "sh", "-c", script],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, (result.stdout, result.stderr)
    message = result.stderr.strip()
    assert "Traceback" not in message and "\n" not in message, message
    assert message.startswith("error:") and str(data_dir) in message and "read-only" in message, message

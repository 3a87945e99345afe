"""Review R12k: the import's analysis threads (`workers`, FACE_DEDUP_WORKERS, --workers) are
checked like every other setting. A negative count was taken silently as "0 = automatic", and
FACE_DEDUP_WORKERS=99999999999 started a thread per photo and read the whole import into
memory at once (importer.run_import keeps 4 photos per thread in flight)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from face_dedup.errors import ConfigError
from face_dedup.settings import MAX_WORKERS, Settings


@pytest.mark.parametrize("workers", [-1, MAX_WORKERS + 1, 99_999_999_999])
def test_an_impossible_thread_count_is_refused(tmp_path: Path, workers: int) -> None:
    with pytest.raises(ConfigError, match="workers must be between 0"):
        Settings.load({"FACE_DEDUP_WORKERS": str(workers)}, data_dir=tmp_path)


@pytest.mark.parametrize("workers", [0, 1, MAX_WORKERS])
def test_a_possible_one_is_kept(tmp_path: Path, workers: int) -> None:
    assert Settings.load({"FACE_DEDUP_WORKERS": str(workers)}, data_dir=tmp_path).workers == workers


def test_the_cli_says_so_and_imports_nothing(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    run = subprocess.run(
        [sys.executable, "-m", "face_dedup", "import", str(tmp_path / "photos"), "--workers", "-3"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "FACE_DEDUP_DATA_DIR": str(tmp_path / "registry")},
    )
    assert run.returncode != 0
    assert "workers must be between 0" in run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "registry").exists()

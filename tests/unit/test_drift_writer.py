"""The drift counts' held writer connection (issue 12, import throughput): every add is
committed when it returns (another connection sees it), concurrent adds lose nothing, a forked
child writes through its own connection, and close() releases the file."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from face_dedup.adapters.sqlite_metrics import SqliteDriftStore
from face_dedup.drift import DayKey

KEY = DayKey("t", "cli", "2026-11-02")


def _outside(path: Path) -> dict[tuple[str, str], int]:
    """What another process reading the file sees (a fresh connection, no shared cache)."""
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT metric, bin, SUM(count) FROM drift_counts GROUP BY metric, bin").fetchall()
    finally:
        db.close()
    return {(str(m), str(b)): int(n) for m, b, n in rows}


def test_each_add_is_committed_when_it_returns(tmp_path: Path) -> None:
    path = tmp_path / "drift.sqlite3"
    store = SqliteDriftStore(path)
    try:
        for number in range(1, 6):
            store.add(KEY, {("outcome", "enrolled"): 1, ("reason", "TOO_DARK"): 2})
            assert _outside(path) == {("outcome", "enrolled"): number, ("reason", "TOO_DARK"): 2 * number}
        assert store.counts(tenant="t", first_day="2026-11-02", last_day="2026-11-02") == _outside(path)
    finally:
        store.close()


def test_close_releases_the_writer_and_a_later_add_reopens(tmp_path: Path) -> None:
    path = tmp_path / "drift.sqlite3"
    store = SqliteDriftStore(path)
    store.add(KEY, {("outcome", "enrolled"): 1})
    store.close()
    store.close()  # twice is harmless
    # no connection left: the log was checkpointed into the main file and removed on close
    assert not path.with_name(path.name + "-wal").exists()
    store.add(KEY, {("outcome", "enrolled"): 1})
    store.close()
    assert _outside(path) == {("outcome", "enrolled"): 2}


def test_concurrent_adds_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "drift.sqlite3"
    store = SqliteDriftStore(path)
    other = SqliteDriftStore(path)  # a second store on the same file (another service)

    def work(target: SqliteDriftStore) -> None:
        for _ in range(50):
            target.add(KEY, {("outcome", "review"): 1, ("best_score", "0.5"): 1})

    threads = [threading.Thread(target=work, args=(s,)) for s in (store, store, store, other)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    store.close()
    other.close()
    assert _outside(path) == {("outcome", "review"): 200, ("best_score", "0.5"): 200}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_writes_through_its_own_connection(tmp_path: Path) -> None:
    path = tmp_path / "drift.sqlite3"
    store = SqliteDriftStore(path)
    store.add(KEY, {("outcome", "enrolled"): 1})  # the parent's writer is open before the fork
    pid = os.fork()
    if pid == 0:  # the child: add through the store it inherited, then close it
        code = 0
        try:
            store.add(KEY, {("outcome", "enrolled"): 10})
            store.close()
        except BaseException:
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    store.add(KEY, {("outcome", "enrolled"): 100})  # the parent's connection still works
    store.close()
    assert _outside(path) == {("outcome", "enrolled"): 111}


def test_a_killed_process_loses_no_count_it_added(tmp_path: Path) -> None:
    """Committed means kept: a process killed (SIGKILL, no close, no checkpoint) right after its
    adds returned leaves every one of them readable by the next process."""
    path = tmp_path / "drift.sqlite3"
    script = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from face_dedup.adapters.sqlite_metrics import SqliteDriftStore\n"
        "from face_dedup.drift import DayKey\n"
        "store = SqliteDriftStore(Path(sys.argv[1]))\n"
        "for _ in range(25):\n"
        "    store.add(DayKey('t', 'cli', '2026-11-02'), {('outcome', 'enrolled'): 1})\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, check=False)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert path.with_name(path.name + "-wal").exists()  # killed with its commits in the log only
    assert _outside(path) == {("outcome", "enrolled"): 25}

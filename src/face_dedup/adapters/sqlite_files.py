"""The registry's SQLite files on one machine: created readable by the owner only, opened with
the same pragmas everywhere, failures turned into one line that names the file and the fix, and
the write-ahead log flushed into the main file when an erasure must leave no copy behind.

Why WAL and not a rollback journal: readers (`serve`, a second import) never block the writer
and the writer never blocks them. Its cost for erasure is that a page's old version stays in the
main file until a checkpoint copies the new one over it; a checkpoint cannot finish while some
connection is *inside* a read transaction that started before the change (an idle open
connection does not stop it). `checkpoint_truncate` retries until it finishes; the erasure then
verifies by scanning the files (`face_dedup.erasure`)."""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

from face_dedup.errors import StorageError

BUSY_TIMEOUT_S = 30.0  # how long a statement waits for another process's write to finish


def private_file(path: Path) -> None:
    """Create `path` empty with mode 0600 if it is absent (SQLite gives its -wal and -shm files
    the main file's mode); tighten it if it exists with wider rights."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        os.close(fd)
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
    except OSError as exc:
        raise storage_error(path, exc) from None


def connect(path: Path | None) -> sqlite3.Connection:
    """A connection with the registry's pragmas; `None` is an in-memory database (tests)."""
    if path is None:
        db = sqlite3.connect(":memory:", check_same_thread=False)
        db.execute("PRAGMA secure_delete=ON")
        return db
    private_file(path)
    try:
        db = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA secure_delete=ON")
        # Reads the header and the schema: a file that is not a database fails here, at open.
        db.execute("SELECT COUNT(*) FROM sqlite_schema").fetchone()
    except sqlite3.Error as exc:
        raise storage_error(path, exc) from None
    for suffix in ("-wal", "-shm"):
        sidecar = path.with_name(path.name + suffix)
        if sidecar.exists() and sidecar.stat().st_mode & 0o077:
            sidecar.chmod(0o600)
    return db


CHECKPOINT_WAIT_S = 10.0  # how long an erasure waits for readers inside an older snapshot


def checkpoint_truncate(db: sqlite3.Connection, timeout_s: float | None = None) -> bool:
    """Copy every page of the write-ahead log into the main file and truncate the log to zero
    bytes. SQLite's busy handler waits while another connection's read transaction holds an
    older snapshot; here for at most the checkpoint wait, not the statements' 30 s. True when
    it finished (False: in-memory database, or still busy after the wait)."""
    wait = CHECKPOINT_WAIT_S if timeout_s is None else timeout_s
    try:
        db.execute(f"PRAGMA busy_timeout = {int(wait * 1000)}")
        try:
            row = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    except sqlite3.Error as exc:  # copying the log into the main file grows it: a full disk fails here
        raise storage_error(_main_file(db), exc) from None
    busy, log_frames, _checkpointed = (int(v) for v in row)
    return busy == 0 and log_frames == 0


def _main_file(db: sqlite3.Connection) -> Path:
    try:
        for _seq, name, file in db.execute("PRAGMA database_list").fetchall():
            if name == "main" and file:
                return Path(file)
    except sqlite3.Error:
        pass
    return Path(":memory:")


_FIXES = {
    errno.ENOSPC: ("full", "the disk is full: free space, then run the command again (nothing was lost)"),
    errno.EROFS: ("read-only", "the file system is read-only: use a writable --data-dir"),
    errno.EACCES: (
        "permission",
        "permission denied: run as the registry's owner, or fix the file's owner and mode",
    ),
    errno.EPERM: (
        "permission",
        "permission denied: run as the registry's owner, or fix the file's owner and mode",
    ),
}
DAMAGED = "the file is damaged: run `face-dedup doctor` (it rebuilds the index from the store)"


def storage_error(path: Path, exc: BaseException) -> StorageError:
    """One line naming `path` and the fix, for an OSError or a sqlite3 error about it."""
    if isinstance(exc, OSError) and exc.errno in _FIXES:
        kind, fix = _FIXES[exc.errno]
        return StorageError(f"{path}: {fix}", kind)
    text = str(exc)
    lowered = text.lower()
    if "disk is full" in lowered or "database or disk is full" in lowered:
        kind, fix = _FIXES[errno.ENOSPC]
    elif "disk i/o error" in lowered:
        kind, fix = (
            "io",
            (
                "writing failed (disk full, a file size limit, or failing media): check free space (`df`) "
                "and the disk, then run the command again (nothing was lost)"
            ),
        )
    elif "readonly" in lowered or "read-only" in lowered:
        kind, fix = (
            "read-only",
            "the file or its folder is read-only: use a writable --data-dir, or fix its mode",
        )
    elif "not a database" in lowered or "malformed" in lowered or "corrupt" in lowered:
        kind, fix = "corrupt", DAMAGED
    elif "unable to open" in lowered:
        kind, fix = "permission", "cannot open it: check that the folder exists and belongs to you"
    elif "locked" in lowered or "busy" in lowered:
        kind, fix = (
            "busy",
            f"another process kept the registry busy for over {BUSY_TIMEOUT_S:.0f} s: run it again",
        )
    else:
        kind, fix = "other", "run `face-dedup doctor`"
    return StorageError(f"{path}: {text}; {fix}", kind)


def integrity_problems(db: sqlite3.Connection, *, quick: bool) -> list[str]:
    """SQLite's own check of every page (`quick_check` skips index-content comparison)."""
    pragma = "quick_check" if quick else "integrity_check"
    try:
        rows = [" ".join(str(r[0]).split()) for r in db.execute(f"PRAGMA {pragma}(20)").fetchall()]
    except sqlite3.DatabaseError as exc:
        return [str(exc)]
    return [] if rows == ["ok"] else rows

"""Files and folders only the registry's owner can read: the data dir holds templates and
photos of real people. Folders are 0700 and files 0600 whatever the umask (modes are set
explicitly, not left to it), and an existing data dir that group or others can read is
refused unless the operator says otherwise (`allow_open_data_dir`)."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import IO

from face_dedup.adapters.sqlite_files import storage_error
from face_dedup.errors import ConfigError

OVERRIDE = "FACE_DEDUP_ALLOW_OPEN_DATA_DIR=1"


def private_dir(path: Path) -> None:
    """Create `path` and any missing parents below an existing folder, each 0700."""
    missing = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            pass  # another process made it meanwhile
        except OSError as exc:
            raise storage_error(folder, exc) from None
        try:
            folder.chmod(0o700)
        except OSError as exc:
            raise storage_error(folder, exc) from None


def prepare_data_dir(path: Path, *, allow_open: bool = False) -> None:
    """Create the data dir 0700, or check that an existing one is not open to others."""
    try:
        if not path.exists():
            private_dir(path)
            return
        if not path.is_dir():
            raise ConfigError(f"{path}: the data dir is not a folder")
        mode = stat.S_IMODE(path.stat().st_mode)
        if not os.access(path, os.R_OK | os.X_OK):  # (writing is tried, and named, later)
            raise PermissionError(13, "Permission denied", str(path))
    except OSError as exc:  # e.g. another user's registry: one line naming it and the fix
        raise storage_error(path, exc) from None
    if mode & 0o077 and not allow_open:
        raise ConfigError(
            f"{path}: the data dir is open to group or others (mode {mode:04o}) and holds biometric "
            f"data: run `chmod 700 {path}`, or set {OVERRIDE} to use it as it is"
        )


def write_private(path: Path, text: str) -> None:
    """Write a report or export readable by the owner only (replacing what was there)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        os.fchmod(handle.fileno(), 0o600)  # an existing file keeps its mode otherwise
        handle.write(text)


def open_private(path: Path) -> int:
    """A file descriptor for writing a new private file (reports written line by line)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    return fd


def private_report(path: Path) -> Callable[[], IO[str]]:
    """An opener for a report written line by line, owner-only (0600) whatever the umask: the
    entry point hands it to the import use cases, which open the file when they start."""
    return lambda: os.fdopen(open_private(path), "w", encoding="utf-8")

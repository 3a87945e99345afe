"""Verifying an erasure on one machine: after the record's rows, vectors and blobs are deleted
(and the databases' write-ahead logs flushed), every file of the data dir is searched for the
erased bytes (template, photo, crop). The erasure reports success only when none is found."""

from __future__ import annotations

import mmap
import os
from pathlib import Path


class DataDirScan:
    def __init__(self, root: Path) -> None:
        self._root = root

    def __call__(self, record_id: str, needles: dict[str, bytes]) -> list[str]:
        """One line per copy found ("its template is still in index.sqlite-wal"), or per file
        that could not be read (which is not verified either). Empty: nothing is left.

        Every file is read except the photo folders of *other* records (`blobs/<tenant>/<id>/`,
        with their added photos' `templates/<n>/`): each holds other inputs' photos and crops,
        which can contain these bytes only if it is the same photo, and identical photos are
        left out of `needles` by the caller. Reading
        every photo of a registry for each erasure would cost minutes at scale; the databases,
        their logs and everything else are always read."""
        wanted = {name: data for name, data in needles.items() if data}
        if not wanted:
            return []
        found = []
        for path in sorted(_files(self._root)):
            shown = path.relative_to(self._root).as_posix()
            parts = shown.split("/")
            # blobs/<tenant>/<other id>/...: its photo and crop, and those of its added photos
            # (templates/<n>/, several templates per record), which at scale are most files.
            if len(parts) >= 4 and parts[0] == "blobs" and parts[2] != record_id:
                continue
            try:
                with path.open("rb") as handle:
                    if os.fstat(handle.fileno()).st_size == 0:
                        continue
                    with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view:
                        found += [
                            f"its {name} is still in {shown}"
                            for name, data in wanted.items()
                            if view.find(data) >= 0
                        ]
            except OSError as exc:
                found.append(f"{shown} could not be read to verify ({exc.strerror or exc})")
        return found


def _files(root: Path) -> list[Path]:
    out = []
    for folder, _dirs, names in os.walk(root):  # does not follow links out of the data dir
        for name in names:
            path = Path(folder) / name
            if path.is_file() and not path.is_symlink():
                out.append(path)
    return out

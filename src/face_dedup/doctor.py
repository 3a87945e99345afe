"""`face-dedup doctor`: a full check of a local registry, repairing what can be derived again.

- registry.sqlite (records, cases, audit) is the source of truth: checked page by page
  (`PRAGMA integrity_check`); damage there cannot be repaired here (restore a backup).
- index.sqlite is derived from it: damaged or missing, it is deleted and rebuilt from the store;
  otherwise its record ids are compared with the store's and the differences fixed.
- both write-ahead logs are checkpointed into their main files and truncated (what an erasure
  that another process blocked asks for);
- the data dir's mode, and photo folders that belong to no record, are reported.

Runs under the registry lock, so imports and `serve` wait while it repairs."""

from __future__ import annotations

import os
import sqlite3
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from face_dedup.adapters.embedded_index import (
    ExactVectorIndex,
    check_file,
    rebuild_from,
    remove_database,
)
from face_dedup.adapters.local_blobs import LocalBlobStore
from face_dedup.adapters.registry_lock import RegistryLock
from face_dedup.adapters.sqlite_files import integrity_problems
from face_dedup.adapters.sqlite_store import SqliteRecordStore
from face_dedup.domain import Record, template_problem
from face_dedup.errors import ConfigError, StorageError
from face_dedup.ports import IndexEntry
from face_dedup.settings import Settings


@dataclass
class DoctorReport:
    checked: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    unrepaired: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.unrepaired

    def as_dict(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "checked": self.checked,
            "repaired": self.repaired,
            "unrepaired": self.unrepaired,
        }


def run_doctor(settings: Settings) -> DoctorReport:
    if settings.index_backend != "embedded" or settings.store_backend != "sqlite":
        raise ConfigError("doctor checks a local registry (embedded index and SQLite store)")
    data = settings.data_dir
    if not data.is_dir():
        raise ConfigError(f"{data}: no registry here (the data dir does not exist)")
    report = DoctorReport()
    mode = stat.S_IMODE(data.stat().st_mode)
    if mode & 0o077:
        report.unrepaired.append(
            f"{data} is open to group or others (mode {mode:04o}): run `chmod 700 {data}`"
        )
    _tighten_modes(data, report)
    with RegistryLock(data / "registry.lock")():
        store = _check_store(data / "registry.sqlite", report)
        if store is None:
            return report
        try:
            _check_index(data / "index.sqlite", store, report)
            if store.flush():
                report.checked.append("registry.sqlite: write-ahead log checkpointed")
            else:  # an erased record's rows may still be in the log: never say it is done
                report.unrepaired.append(
                    "registry.sqlite: its write-ahead log could not be checkpointed (another process "
                    "is reading): stop it and run doctor again"
                )
            _check_blobs(data / "blobs", store, report)
        finally:
            store.close()
    return report


def _tighten_modes(data: Path, report: DoctorReport) -> None:
    """Registries made by older versions (or copied in) may hold 0644 files and 0755 folders."""
    opened = []
    for folder, dirs, names in os.walk(data):
        for name in dirs + names:
            path = Path(folder) / name
            if path.is_symlink():
                continue
            mode = stat.S_IMODE(path.lstat().st_mode)
            if mode & 0o077:
                path.chmod(0o700 if path.is_dir() else 0o600)
                opened.append(path.relative_to(data).as_posix())
    if opened:
        report.repaired.append(
            f"{len(opened)} file(s) or folder(s) were readable by others, now owner-only: "
            + ", ".join(opened[:5])
        )
    else:
        report.checked.append("every file and folder inside is owner-only")


def _check_store(path: Path, report: DoctorReport) -> SqliteRecordStore | None:
    if not path.exists():
        report.unrepaired.append(f"{path.name} is missing: restore it from your backup")
        return None
    raw = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        problems = integrity_problems(raw, quick=False)
    finally:
        raw.close()
    if problems:
        shown = "; ".join(problems[:3])
        report.unrepaired.append(
            f"{path.name} is damaged ({shown}): it is the source of truth and cannot be rebuilt; "
            "restore it from your backup"
        )
        return None
    report.checked.append(f"{path.name}: every page intact")
    try:
        return SqliteRecordStore(path)
    except StorageError as exc:
        report.unrepaired.append(str(exc))
        return None


def _check_index(path: Path, store: SqliteRecordStore, report: DoctorReport) -> None:
    problems = check_file(path) if path.exists() else ["missing"]
    index: ExactVectorIndex | None = None
    if not problems:
        try:
            index = ExactVectorIndex(path)
        except StorageError as exc:
            problems = [str(exc)]
    if problems:
        remove_database(path)
        index = ExactVectorIndex(path)
        count = rebuild_from(index, store)
        report.repaired.append(
            f"{path.name} was {problems[0][:120]}: rebuilt from the store ({count} templates)"
        )
    assert index is not None
    try:
        stored = {r.record_id: r for r in store.iter_templates()}
        partitions = {(r.tenant, r.model_pack) for r in stored.values()} | set(index.partitions())
        indexed: set[str] = set()
        for tenant, pack in partitions:
            indexed |= index.record_ids(tenant=tenant, model_pack=pack)
        # a rotted store template cannot be indexed (it is reported below, by _compare_templates)
        missing = [stored[i] for i in stored.keys() - indexed if not template_problem(stored[i].embedding)]
        orphans = indexed - stored.keys()
        if missing:
            index.add([IndexEntry(r.record_id, r.tenant, r.model_pack, r.embedding) for r in missing])
        if orphans:
            index.delete(orphans)
        if missing or orphans:
            report.repaired.append(
                f"{path.name}: {len(missing)} templates added, "
                f"{len(orphans)} entries of erased records removed"
            )
        else:
            report.checked.append(f"{path.name}: holds exactly the store's {len(stored)} templates")
        _compare_templates(path, index, stored, report)
        index.set_rebuilding(False)  # a rebuild interrupted by a crash: the ids now agree
        if index.flush():
            report.checked.append(f"{path.name}: write-ahead log checkpointed")
        else:
            report.unrepaired.append(
                f"{path.name}: its write-ahead log could not be checkpointed (another process is reading): "
                "stop it and run doctor again"
            )
    finally:
        index.close()


def _compare_templates(
    path: Path, index: ExactVectorIndex, stored: dict[str, Record], report: DoctorReport
) -> None:
    """Page checks cannot see bytes that rotted inside a template (SQLite keeps no checksums),
    but each template is held twice: in the store and in the index. A store template that is not
    a template any more is named (the store is the truth: it cannot be repaired here); an index
    copy that differs from a sound store template is replaced."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        copies = {rid: bytes(blob) for rid, blob in db.execute("SELECT record_id, vector FROM vectors")}
    finally:
        db.close()
    damaged, differing = [], []
    for record_id, record in stored.items():
        problem = template_problem(record.embedding)
        if problem:
            damaged.append(f"{record_id} ({problem})")
        elif copies.get(record_id) != np.asarray(record.embedding, dtype=np.float32).tobytes():
            differing.append(record)
    if damaged:
        report.unrepaired.append(
            f"registry.sqlite: {len(damaged)} template(s) damaged: {', '.join(damaged[:5])}: restore "
            "registry.sqlite from your backup, or erase those records and import their photos again"
        )
    if differing:
        index.add([IndexEntry(r.record_id, r.tenant, r.model_pack, r.embedding) for r in differing])
        report.repaired.append(
            f"{path.name}: {len(differing)} template(s) differed from the store's, replaced: "
            + ", ".join(r.record_id for r in differing[:5])
        )
    if not damaged and not differing:
        report.checked.append(f"{path.name}: every template equal to the store's")


def _check_blobs(root: Path, store: SqliteRecordStore, report: DoctorReport) -> None:
    if not root.is_dir():
        return
    listed = LocalBlobStore(root).keys()
    folders = {tuple(key.split("/")[:2]) for key in listed}
    known = set(store.describe_records(record for _, record in folders))
    stray = sorted(f"{tenant}/{record}" for tenant, record in folders if record not in known)
    if stray:
        report.unrepaired.append(
            f"{len(stray)} photo folder(s) under blobs/ belong to no record (an interrupted import: run it "
            f"again; or remove them): {', '.join(stray[:5])}"
        )
    else:
        report.checked.append(f"blobs: {len(folders)} photo folders, each of a record")

"""Batch import: turn a folder, one image or a list file (plus an optional manifest) into
inputs, analyse them in parallel, register them in order, and report every one.

Analysis (decode .. embed) is pure and runs on a thread pool; registration is sequential in
input order, so the outcome of an import does not depend on the number of workers. Already
imported inputs are recognised by their idempotency key and not analysed again (resume).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import stat
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from face_dedup import identifiers
from face_dedup.analysis import FaceTemplate, Rejection
from face_dedup.domain import ImportItem, Outcome, utc_now
from face_dedup.errors import InputRejected, Reason
from face_dedup.image_format import sniff_format
from face_dedup.service import SYSTEM_ACTOR, DedupService, InputRef, content_digest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InputSpec:
    source: str  # as the operator gave it
    path: Path | None  # None when it could not be located (e.g. a manifest row without a file)
    application_id: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    problem: InputRejected | None = None  # known to be unusable before reading
    note: str | None = None  # said in the report (e.g. a link out of the folder was followed)
    # The folder (resolved) that the file actually read must lie in; None: no such rule (a file
    # named directly, or --follow-links-out). Checked again on the opened file, because a
    # regular file can be swapped for a link out of the folder after it was listed.
    within: Path | None = None


class ManifestError(ValueError):
    """The manifest is not a CSV with `file` and `application_id` columns."""


def read_manifest(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in reader.fieldnames or []]
        if "file" not in columns or "application_id" not in columns:
            raise ManifestError(
                f"{path}: the manifest needs a header with `file,application_id` (found {columns})"
            )
        rows: dict[str, dict[str, str]] = {}
        for number, row in enumerate(reader, start=2):
            clean = {k.strip(): (v or "").strip() for k, v in row.items() if k}
            name = clean.get("file", "")
            if not name or not clean.get("application_id"):
                raise ManifestError(f"{path}:{number}: every row needs a file and an application_id")
            if name in rows:
                raise ManifestError(f"{path}:{number}: {name} is listed twice")
            rows[name] = clean
    return rows


def collect_inputs(
    target: Path, manifest: Path | None = None, *, follow_links_out: bool = False
) -> list[InputSpec]:
    """Every input named by `target`, in a stable order, with manifest data attached. Every
    entry of a folder is an input (files, links, special files), whatever its name: one that
    cannot be used is reported with the reason, never skipped and never fatal."""
    given = shown_path(target)
    if target.is_dir():
        base = target
        raw = [(shown_path(p), p) for p in _entries(target)]
    elif target.is_file() and not _is_list_file(target):
        base = target.parent
        raw = [(given, target)]
    elif target.is_file():
        base = target.parent
        raw = []
        for line in target.read_text(encoding="utf-8", errors="surrogateescape").splitlines():
            entry = line.strip()
            if entry and not entry.startswith("#"):
                candidate = Path(entry)
                raw.append(
                    (shown_path(candidate), candidate if candidate.is_absolute() else base / candidate)
                )
    else:
        raise FileNotFoundError(f"{given} does not exist")

    rows = read_manifest(manifest) if manifest else {}
    used: set[str] = set()
    specs = []
    inside = base.resolve()
    for source, path in raw:
        relative = _relative(path, base)
        row = rows.get(relative) or rows.get(path.name)
        if row is not None:
            used.add(row["file"])
        problem, note = _link_problem(path, inside, follow_links_out) if target.is_dir() else (None, None)
        application = row["application_id"] if row else None
        if application is not None and problem is None:
            problem = _id_problem(application)
        specs.append(
            InputSpec(
                source=source,
                path=path,
                application_id=application
                if application is None or identifiers.is_application_id(application)
                else None,
                metadata={k: v for k, v in (row or {}).items() if k not in ("file", "application_id")},
                problem=problem,
                note=note,
                within=inside if target.is_dir() and not follow_links_out else None,
            )
        )
    for name, row in rows.items():
        if name not in used:  # listed, but no such file: report it, never drop it
            application = row["application_id"]
            specs.append(
                InputSpec(
                    source=name,
                    path=None,
                    application_id=application if identifiers.is_application_id(application) else None,
                    problem=_id_problem(application)
                    or InputRejected(Reason.UNREADABLE, "listed in the manifest but no such file was found"),
                )
            )
    return specs


def shown_path(path: Path) -> str:
    """A path as text that can be stored and printed: a name that is not valid UTF-8 keeps its
    bytes as `\\xNN` escapes instead of failing every write that follows."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _entries(folder: Path) -> list[Path]:
    """Everything below `folder` but the folders themselves, sorted. Links to folders are
    entries too (reported), never walked: a link cannot pull another tree into the import."""
    found = []
    for current, dirs, names in os.walk(folder, followlinks=False):
        here = Path(current)
        found += [here / d for d in dirs if (here / d).is_symlink()]
        found += [here / n for n in names]
    return sorted(found, key=lambda p: [os.fsencode(part) for part in p.parts])  # as Path sorts


def _link_problem(path: Path, inside: Path, follow_out: bool) -> tuple[InputRejected | None, str | None]:
    if not path.is_symlink():
        return None, None
    try:
        resolved = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return InputRejected(Reason.UNREADABLE, "a symbolic link to nothing (or a loop)"), None
    if resolved.is_relative_to(inside):
        return None, None
    if follow_out:
        return None, "a symbolic link out of the imported folder, followed as allowed (--follow-links-out)"
    return (
        InputRejected(
            Reason.LINK_OUTSIDE_FOLDER,
            "a symbolic link to a file outside the imported folder: refused "
            "(import the file itself, or allow it with --follow-links-out)",
        ),
        None,
    )


def _id_problem(application: str) -> InputRejected | None:
    try:
        identifiers.application_id(application)
    except identifiers.InvalidIdentifier as exc:
        return InputRejected(Reason.INVALID_APPLICATION_ID, str(exc))
    return None


def _relative(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return path.as_posix()


def _is_list_file(path: Path) -> bool:
    """A text file naming images, one per line (anything that is not an image and decodes as text)."""
    with path.open("rb") as handle:
        head = handle.read(4096)
    if not head or sniff_format(head) is not None or b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return path.suffix.lower() in (".txt", ".lst", ".list", "")


@dataclass
class ImportSummary:
    total: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    resumed: int = 0
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        return self.total / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "outcomes": dict(self.outcomes),
            "reject_reasons": dict(self.reasons),
            "resumed": self.resumed,
            "seconds": round(self.seconds, 2),
            "images_per_second": round(self.images_per_second, 1),
        }


@dataclass(frozen=True)
class ReportLine:
    spec: InputSpec
    item: ImportItem
    resumed: bool
    notes: tuple[str, ...] = ()  # how the photo was read (rotated, first page of a TIFF...)

    def as_dict(self) -> dict[str, Any]:
        item = self.item
        return {
            "source": self.spec.source,
            "application_id": item.application_id,
            "outcome": item.outcome.value,
            "record_id": item.record_id,
            "case_id": item.case_id,
            "candidates": [c.as_dict() for c in item.candidates],
            "reason": item.reason,
            "message": item.message,
            "resumed": self.resumed,
            **({"note": self.spec.note} if self.spec.note else {}),
            **({"notes": list(self.notes)} if self.notes else {}),
        }


class _Pending:
    """One input on its way through the pipeline."""

    def __init__(self, spec: InputSpec, ref: InputRef) -> None:
        self.spec = spec
        self.ref = ref
        self.data: bytes | None = None
        self.digest: str | None = None
        self.done: ImportItem | None = None
        self.problem: InputRejected | None = spec.problem
        self.analysis: Future[FaceTemplate | Rejection] | None = None


def run_import(
    service: DedupService,
    inputs: list[InputSpec],
    *,
    report: Callable[[], IO[str]] | None = None,
    workers: int = 1,
    on_progress: Callable[[ReportLine], None] | None = None,
    window: int = 0,
    actor: str = SYSTEM_ACTOR,
) -> ImportSummary:
    summary = ImportSummary()
    started = time.perf_counter()
    # `report` opens the report file (the entry point passes adapters.private_files.private_report:
    # owner-only, 0600, as a report names people's files and application ids)
    handle = report() if report else None
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="analyse") as pool:
            for pending in _prepare(service, inputs, pool, window or 4 * max(1, workers)):
                line = _register(service, pending, actor)
                summary.total += 1
                summary.outcomes[line.item.outcome.value] += 1
                if line.item.reason:
                    summary.reasons[line.item.reason] += 1
                summary.resumed += int(line.resumed)
                if handle:
                    handle.write(json.dumps(line.as_dict(), ensure_ascii=False) + "\n")
                    handle.flush()
                if on_progress:
                    on_progress(line)
    finally:
        if handle:
            handle.close()
    summary.seconds = time.perf_counter() - started
    return summary


def _prepare(
    service: DedupService, inputs: list[InputSpec], pool: ThreadPoolExecutor, window: int
) -> Iterator[_Pending]:
    """Read inputs and start their analysis, keeping at most `window` in flight, in order."""
    queue: list[_Pending] = []
    for spec in inputs:
        identity = shown_path(spec.path.resolve()) if spec.path is not None else spec.source
        pending = _Pending(spec, InputRef(spec.source, spec.application_id, identity))
        if pending.problem is None and spec.path is not None:
            _read(service, pending, pool)
        queue.append(pending)
        while len(queue) > window:
            yield queue.pop(0)
    yield from queue


def _read(service: DedupService, pending: _Pending, pool: ThreadPoolExecutor) -> None:
    path = pending.spec.path
    assert path is not None
    if not path.is_file():  # special files are not even opened (a device may act on open)
        pending.problem = InputRejected(Reason.NOT_A_FILE, "not a regular file")
        return
    read = read_input(path, service.config.max_input_bytes, within=pending.spec.within)
    if isinstance(read, InputRejected):
        pending.problem = read
        return
    data = read
    pending.digest = content_digest(data)
    pending.done = service.store.get_import_item(service.idempotency_key(pending.ref, pending.digest))
    if pending.done is None:
        pending.data = data
        pending.analysis = pool.submit(service.analyze, data)


def read_input(path: Path, limit: int, *, within: Path | None = None) -> bytes | InputRejected:
    """The bytes of one input, judged on the file actually opened, not on an earlier look at its
    name: between listing a folder and reading it, someone who can write there can swap a file
    for a link to a file elsewhere (a photo the importing user can read and they cannot), a pipe
    or a growing file. So: open once, then check that descriptor (a regular file; inside
    `within`, where given) and read at most `limit` + 1 bytes from it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        return InputRejected(Reason.UNREADABLE, f"could not read the file: {exc.strerror or exc}")
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return InputRejected(Reason.NOT_A_FILE, "not a regular file (it changed while the import ran)")
        if within is not None:
            opened = _opened_path(fd, path, info)
            if opened is None or not opened.is_relative_to(within):
                return InputRejected(
                    Reason.LINK_OUTSIDE_FOLDER,
                    "the file read would have been outside the imported folder (it was replaced by a "
                    "symbolic link while the import ran): refused",
                )
        if info.st_size > limit:
            # Do not read a huge file into memory to find out it is too large.
            return InputRejected(
                Reason.TOO_LARGE,
                f"the file has {info.st_size} bytes; the limit is {limit}",
                measured=info.st_size,
                limit=limit,
            )
        chunks = []
        left = limit + 1  # a file growing while it is read stops here, not at the end of memory
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as exc:
        return InputRejected(Reason.UNREADABLE, f"could not read the file: {exc.strerror or exc}")
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limit:
        return InputRejected(
            Reason.TOO_LARGE,
            f"the file has over {limit} bytes (it grew while it was read); the limit is {limit}",
            measured=len(data),
            limit=limit,
        )
    return data


def _opened_path(fd: int, path: Path, info: os.stat_result) -> Path | None:
    """Where the open file `fd` really is: the kernel's own answer on Linux (no race), else the
    resolved name, trusted only if it is still the very file that was opened."""
    try:
        return Path(f"/proc/self/fd/{fd}").readlink()
    except OSError:
        pass
    try:
        resolved = path.resolve(strict=True)
        now = resolved.stat()
    except (OSError, RuntimeError):
        return None
    return resolved if (now.st_dev, now.st_ino) == (info.st_dev, info.st_ino) else None


def _register(service: DedupService, pending: _Pending, actor: str) -> ReportLine:
    if pending.done is not None:
        return ReportLine(pending.spec, pending.done, resumed=True)
    if pending.problem is not None or pending.analysis is None:
        # Nothing was read, so there is nothing to persist: the line reports it, and a re-run
        # tries again (the file may have appeared or become readable).
        problem = pending.problem or InputRejected(Reason.INTERNAL_ERROR, "the input was not analysed")
        item = ImportItem(
            key="",
            tenant=service.tenant,
            source=pending.spec.source,
            application_id=pending.spec.application_id,
            content_sha256="",
            outcome=Outcome.REJECTED,
            created_at=utc_now(),
            reason=problem.reason.value,
            message=problem.message,
        )
        return ReportLine(pending.spec, item, resumed=False)
    assert pending.analysis is not None and pending.digest is not None
    try:
        analysis = pending.analysis.result()
    except Exception as exc:  # one input must never stop the batch; a re-run retries it
        log.exception("analysis of an input failed unexpectedly")
        pending.problem = InputRejected(Reason.INTERNAL_ERROR, f"analysis failed: {type(exc).__name__}")
        pending.analysis = None
        return _register(service, pending, actor)
    item = service.register(pending.ref, pending.digest, analysis, pending.data, actor)
    pending.data = None
    notes = analysis.notes if isinstance(analysis, FaceTemplate) else ()
    return ReportLine(pending.spec, item, resumed=False, notes=notes)

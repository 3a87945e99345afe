"""SQLite adapter of the record/case/audit store.

One transaction per input (record + case + import item + audit), so an import killed at any
point leaves either all of an input's rows or none. The audit table is append-only: triggers
refuse UPDATE and DELETE. `secure_delete` overwrites erased rows on disk.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from face_dedup.adapters.sqlite_files import checkpoint_truncate, connect, integrity_problems, storage_error
from face_dedup.domain import (
    AuditEvent,
    Case,
    CaseDecision,
    CaseStatus,
    ImportItem,
    Outcome,
    Record,
    RecordStatus,
    StagedInput,
    candidates_from_json,
    candidates_to_json,
)
from face_dedup.errors import InvalidState, NotFound, StorageError
from face_dedup.ports import EnrollmentCommit, RecordStore
from face_dedup.record_templates import Template, TemplateSource

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    record_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    model_pack TEXT NOT NULL,
    application_id TEXT,
    source TEXT NOT NULL,
    content_sha256 TEXT NOT NULL,
    status TEXT NOT NULL,
    linked_to TEXT,
    created_at TEXT NOT NULL,
    quality TEXT NOT NULL,
    embedding BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS records_tenant ON records(tenant, model_pack);
CREATE INDEX IF NOT EXISTS records_application ON records(tenant, application_id);
CREATE TABLE IF NOT EXISTS cases (
    case_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    probe_record_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    candidates TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    thresholds TEXT NOT NULL,
    decision TEXT,
    decided_by TEXT,
    decided_at TEXT,
    comment TEXT,
    matched_record_id TEXT,
    claimed_by TEXT,
    confirmed_by TEXT,
    confirmed_at TEXT,
    escalated INTEGER NOT NULL DEFAULT 0,
    history TEXT NOT NULL DEFAULT '[]',
    version INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS cases_tenant ON cases(tenant, status, created_at);
CREATE TABLE IF NOT EXISTS import_items (
    key TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    source TEXT NOT NULL,
    application_id TEXT,
    content_sha256 TEXT NOT NULL,
    outcome TEXT NOT NULL,
    record_id TEXT,
    case_id TEXT,
    reason TEXT,
    message TEXT,
    candidates TEXT NOT NULL,
    measures TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS import_items_record ON import_items(record_id);
CREATE TABLE IF NOT EXISTS staged (
    key TEXT PRIMARY KEY,
    record_id TEXT NOT NULL,
    tenant TEXT NOT NULL,
    model_pack TEXT NOT NULL,
    source TEXT NOT NULL,
    application_id TEXT,
    content_sha256 TEXT NOT NULL,
    embedding BLOB NOT NULL,
    measures TEXT NOT NULL,
    quality TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS distinct_pairs (
    tenant TEXT NOT NULL,
    record_a TEXT NOT NULL,
    record_b TEXT NOT NULL,
    case_id TEXT NOT NULL,
    PRIMARY KEY (tenant, record_a, record_b)
);
-- Migration between model packs: a record's template in a pack other than its own (erased
-- with the record by the cascade).
CREATE TABLE IF NOT EXISTS pack_templates (
    record_id TEXT NOT NULL REFERENCES records(record_id) ON DELETE CASCADE,
    tenant TEXT NOT NULL,
    model_pack TEXT NOT NULL,
    embedding BLOB NOT NULL,
    PRIMARY KEY (record_id, model_pack)
);
CREATE INDEX IF NOT EXISTS pack_templates_pack ON pack_templates(tenant, model_pack);
-- Several templates per record (record_templates.py): every template of a record that holds
-- more than its enrollment photo's, per model pack (a migration writes the new pack's beside
-- the old); the record's `embedding` is their centroid. Erased with the record by the cascade.
CREATE TABLE IF NOT EXISTS record_templates (
    record_id TEXT NOT NULL REFERENCES records(record_id) ON DELETE CASCADE,
    model_pack TEXT NOT NULL,
    number INTEGER NOT NULL,
    source TEXT NOT NULL,
    captured_at TEXT NOT NULL,
    added_at TEXT NOT NULL,
    quality TEXT NOT NULL,
    embedding BLOB NOT NULL,
    PRIMARY KEY (record_id, model_pack, number)
);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    tenant TEXT NOT NULL,
    details TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""


_T = TypeVar("_T")


def _names_the_file(method: Callable[..., _T]) -> Callable[..., _T]:
    """A write that fails (disk full, read-only, damage) ends in one line naming the file and
    the fix, instead of a bare sqlite3 error. The transaction was rolled back: nothing is lost."""

    @functools.wraps(method)
    def wrapper(self: SqliteRecordStore, *args: Any, **kwargs: Any) -> _T:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.IntegrityError:
            raise
        except sqlite3.Error as exc:
            raise storage_error(self._path or Path(":memory:"), exc) from None

    return wrapper


class SqliteRecordStore(RecordStore):
    def __init__(self, path: Path | None) -> None:
        self._lock = threading.RLock()
        self._path = path
        self._db = connect(path)
        self._db.row_factory = sqlite3.Row
        try:
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
            self._add_template_count()
            # Every page read once at open: damage is found now, with the file's name, rather
            # than by an import that dies halfway (see README: cost about 1 s per GB).
            damage = integrity_problems(self._db, quick=True) if path is not None else []
        except sqlite3.Error as exc:
            self._db.close()
            raise storage_error(path or Path(":memory:"), exc) from None
        if damage:
            self._db.close()
            raise StorageError(
                f"{path}: the registry database is damaged ({damage[0]}): restore it from your backup; "
                "`face-dedup doctor` lists every problem",
                "corrupt",
            )

    def _add_template_count(self) -> None:
        """A registry from before several templates gains the column. Several processes open a
        registry at once (imports, `serve`), so the check and the ALTER run under one write lock:
        without it two of them both saw the column missing and the second failed to open
        ("duplicate column name")."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(records)")}
            if "template_count" not in columns:
                self._db.execute("ALTER TABLE records ADD COLUMN template_count INTEGER NOT NULL DEFAULT 1")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- import items and enrollment ------------------------------------------------------

    def get_import_item(self, key: str) -> ImportItem | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM import_items WHERE key = ?", (key,)).fetchone()
        return None if row is None else self._item(row)

    @_names_the_file
    def commit(self, commit: EnrollmentCommit) -> None:
        item = commit.item
        with self._lock, self._db:
            exists = self._db.execute("SELECT 1 FROM import_items WHERE key = ?", (item.key,)).fetchone()
            if exists:
                return  # idempotent: the first commit stands
            if commit.record is not None:
                self._insert_record(commit.record)
            if commit.case is not None:
                self._insert_case(commit.case)
            self._db.execute(
                "INSERT INTO import_items(key, tenant, source, application_id, content_sha256, outcome, "
                "record_id, case_id, reason, message, candidates, measures, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    item.key,
                    item.tenant,
                    item.source,
                    item.application_id,
                    item.content_sha256,
                    item.outcome.value,
                    item.record_id,
                    item.case_id,
                    item.reason,
                    item.message,
                    candidates_to_json(item.candidates),
                    json.dumps(item.measures),
                    item.created_at,
                ),
            )
            for event in commit.audit:
                self._insert_audit(event)

    def _insert_record(self, record: Record) -> None:
        self._db.execute(
            "INSERT INTO records(record_id, tenant, model_pack, application_id, source, content_sha256, "
            "status, linked_to, created_at, quality, embedding) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.record_id,
                record.tenant,
                record.model_pack,
                record.application_id,
                record.source,
                record.content_sha256,
                record.status.value,
                record.linked_to,
                record.created_at,
                json.dumps(record.quality),
                np.asarray(record.embedding, dtype=np.float32).tobytes(),
            ),
        )

    def _insert_case(self, case: Case) -> None:
        self._db.execute(
            "INSERT INTO cases(case_id, tenant, probe_record_id, kind, candidates, status, created_at, "
            "thresholds) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                case.case_id,
                case.tenant,
                case.probe_record_id,
                case.kind.value,
                candidates_to_json(case.candidates),
                case.status.value,
                case.created_at,
                json.dumps(case.thresholds),
            ),
        )

    # -- staged inputs (serverless workflow) ------------------------------------------------

    @_names_the_file
    def stage(self, staged: StagedInput) -> None:
        with self._lock, self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO staged(key, record_id, tenant, model_pack, source, application_id, "
                "content_sha256, embedding, measures, quality, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    staged.key,
                    staged.record_id,
                    staged.tenant,
                    staged.model_pack,
                    staged.source,
                    staged.application_id,
                    staged.content_sha256,
                    np.asarray(staged.embedding, dtype=np.float32).tobytes(),
                    json.dumps(staged.measures),
                    json.dumps(staged.quality),
                    staged.created_at,
                ),
            )

    def get_staged(self, key: str) -> StagedInput | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM staged WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        return StagedInput(
            key=row["key"],
            record_id=row["record_id"],
            tenant=row["tenant"],
            model_pack=row["model_pack"],
            source=row["source"],
            application_id=row["application_id"],
            content_sha256=row["content_sha256"],
            embedding=np.frombuffer(row["embedding"], dtype=np.float32),
            measures=json.loads(row["measures"]),
            quality=json.loads(row["quality"]),
            created_at=row["created_at"],
        )

    @_names_the_file
    def drop_staged(self, key: str) -> None:
        with self._lock, self._db:
            self._db.execute("DELETE FROM staged WHERE key = ?", (key,))

    @_names_the_file
    def open_case(self, case: Case, probe_status: RecordStatus, audit: tuple[AuditEvent, ...]) -> bool:
        with self._lock, self._db:
            if self._db.execute("SELECT 1 FROM cases WHERE case_id = ?", (case.case_id,)).fetchone():
                return False
            self._insert_case(case)
            self._db.execute(
                "UPDATE records SET status = ? WHERE record_id = ?",
                (probe_status.value, case.probe_record_id),
            )
            for event in audit:
                self._insert_audit(event)
        return True

    # -- records --------------------------------------------------------------------------

    def get_record(self, record_id: str) -> Record | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM records WHERE record_id = ?", (record_id,)).fetchone()
        return None if row is None else self._record(row)

    def find_application_records(self, *, tenant: str, application_id: str, model_pack: str) -> list[Record]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM records WHERE tenant = ? AND application_id = ? AND model_pack = ? "
                "ORDER BY rowid",
                (tenant, application_id, model_pack),
            ).fetchall()
        return [self._record(row) for row in rows]

    def describe_records(self, record_ids: Iterable[str]) -> dict[str, Record]:
        ids = list(dict.fromkeys(record_ids))
        if not ids:
            return {}
        marks = ",".join("?" for _ in ids)
        with self._lock:
            rows = self._db.execute(f"SELECT * FROM records WHERE record_id IN ({marks})", ids).fetchall()  # noqa: S608
        return {row["record_id"]: self._record(row) for row in rows}

    def iter_templates(self, *, tenant: str | None = None) -> Iterator[Record]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM records WHERE (? IS NULL OR tenant = ?) ORDER BY rowid", (tenant, tenant)
            ).fetchall()
        for row in rows:
            yield self._record(row)

    def are_distinct(self, *, tenant: str, record_a: str, record_b: str) -> bool:
        a, b = sorted((record_a, record_b))
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM distinct_pairs WHERE tenant = ? AND record_a = ? AND record_b = ?",
                (tenant, a, b),
            ).fetchone()
        return row is not None

    def count_templates(self, *, tenant: str, model_pack: str) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*) FROM records WHERE tenant = ? AND model_pack = ?", (tenant, model_pack)
            ).fetchone()
        return int(row[0])

    def template_packs(self, *, tenant: str) -> frozenset[str]:
        """One seek of the records_tenant index (tenant, model_pack) per distinct pack: MIN over
        an index range is answered from its first entry, so the cost is a few B-tree descents
        whatever the number of records (a DISTINCT would read every entry of the tenant)."""
        packs: set[str] = set()
        after = ""  # a pack id is never empty (find_pack / the records' NOT NULL column)
        with self._lock:
            while True:
                row = self._db.execute(
                    "SELECT MIN(model_pack) FROM records WHERE tenant = ? AND model_pack > ?",
                    (tenant, after),
                ).fetchone()
                if row is None or row[0] is None:
                    return frozenset(packs)
                after = str(row[0])
                packs.add(after)

    # -- templates of another model pack (migration) ------------------------------------------

    @_names_the_file
    def put_pack_template(
        self, *, record_id: str, tenant: str, model_pack: str, embedding: NDArray[np.float32]
    ) -> bool:
        blob = np.asarray(embedding, dtype=np.float32).tobytes()
        with self._lock, self._db:
            # Only while the record exists (an erasure that got there first wins) and holds one
            # template: a photo added since its crop was read makes it a several-template record,
            # migrated by put_pack_record_templates (else the added photo is lost at cut-over).
            cursor = self._db.execute(
                "INSERT OR REPLACE INTO pack_templates(record_id, tenant, model_pack, embedding) "
                "SELECT record_id, tenant, ?, ? FROM records WHERE record_id = ? AND tenant = ? "
                "AND model_pack != ? AND template_count = 1",
                (model_pack, blob, record_id, tenant, model_pack),
            )
            return cursor.rowcount == 1

    def pack_templates(self, *, tenant: str, model_pack: str) -> dict[str, NDArray[np.float32]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT record_id, embedding FROM pack_templates WHERE tenant = ? AND model_pack = ?",
                (tenant, model_pack),
            ).fetchall()
        return {row[0]: np.frombuffer(row[1], dtype=np.float32) for row in rows}

    @_names_the_file
    def switch_pack(self, *, tenant: str, source: str, target: str, audit: AuditEvent) -> int:
        with self._lock, self._db:
            missing = self._db.execute(
                "SELECT COUNT(*) FROM records r WHERE r.tenant = ? AND r.model_pack = ? AND NOT EXISTS "
                "(SELECT 1 FROM pack_templates p WHERE p.record_id = r.record_id AND p.model_pack = ?)",
                (tenant, source, target),
            ).fetchone()[0]
            if missing:
                raise InvalidState(f"{missing} record(s) of {source} have no {target} template yet")
            # The record's own template goes beside it (rollback), the target's becomes its own.
            self._db.execute(
                "INSERT OR REPLACE INTO pack_templates(record_id, tenant, model_pack, embedding) "
                "SELECT record_id, tenant, model_pack, embedding FROM records "
                "WHERE tenant = ? AND model_pack = ?",
                (tenant, source),
            )
            switched = self._db.execute(
                "UPDATE records SET model_pack = ?, embedding = (SELECT p.embedding FROM pack_templates p "
                "WHERE p.record_id = records.record_id AND p.model_pack = ?), "
                "template_count = MAX(1, (SELECT COUNT(*) FROM record_templates t "
                "WHERE t.record_id = records.record_id AND t.model_pack = ?)) "
                "WHERE tenant = ? AND model_pack = ?",
                (target, target, target, tenant, source),
            ).rowcount
            self._db.execute(
                "DELETE FROM pack_templates WHERE tenant = ? AND model_pack = ?", (tenant, target)
            )
            self._insert_audit(audit)
        return int(switched)

    @_names_the_file
    def drop_pack_templates(self, *, tenant: str, model_pack: str) -> int:
        with self._lock, self._db:
            dropped = self._db.execute(
                "DELETE FROM pack_templates WHERE tenant = ? AND model_pack = ?", (tenant, model_pack)
            ).rowcount
            self._db.execute(  # several-template records' templates in that pack
                "DELETE FROM record_templates WHERE model_pack = ? AND record_id IN "
                "(SELECT record_id FROM records WHERE tenant = ? AND model_pack != ?)",
                (model_pack, tenant, model_pack),
            )
        self.flush()  # erased templates out of the write-ahead log too
        return int(dropped)

    # -- several templates per record ---------------------------------------------------------

    def record_templates(self, record_id: str) -> list[Template]:
        with self._lock:
            rows = self._db.execute(
                "SELECT t.* FROM record_templates t JOIN records r ON r.record_id = t.record_id "
                "AND r.model_pack = t.model_pack WHERE t.record_id = ? ORDER BY t.number",
                (record_id,),
            ).fetchall()
        return [self._template(row) for row in rows]

    def pack_record_templates(self, record_id: str, model_pack: str) -> list[Template]:
        """The record's templates in `model_pack` (a migration's target, or its own)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM record_templates WHERE record_id = ? AND model_pack = ? ORDER BY number",
                (record_id, model_pack),
            ).fetchall()
        return [self._template(row) for row in rows]

    @_names_the_file
    def put_pack_record_templates(
        self, *, record_id: str, tenant: str, templates: list[Template], centroid: NDArray[np.float32]
    ) -> bool:
        """A migration's re-embedded templates of a several-template record, with their centroid
        as the record's template in that pack; False when the record is gone, or no longer holds
        exactly the templates that were re-made (a photo added or replaced since the migration
        read them: kept, this stale copy would drop it at cut-over; the next run redoes it)."""
        if not templates:
            raise ValueError("no templates")
        pack = templates[0].model_pack
        numbers = sorted({int(t.number) for t in templates})
        if len(numbers) != len(templates) or any(t.model_pack != pack for t in templates):
            raise ValueError("the templates are not distinct templates of one pack")
        with self._lock, self._db:
            # The check and the first write are one statement: atomic against another process.
            # Template numbers are never reused, so the same numbers are the same templates.
            kept = self._db.execute(
                "INSERT OR REPLACE INTO pack_templates(record_id, tenant, model_pack, embedding) "
                "SELECT r.record_id, r.tenant, ?, ? FROM records r WHERE r.record_id = ? AND r.tenant = ? "
                "AND r.model_pack != ? AND r.template_count = ? AND (SELECT COUNT(*) FROM record_templates t "
                "WHERE t.record_id = r.record_id AND t.model_pack = r.model_pack "
                "AND t.number IN (SELECT value FROM json_each(?))) = ?",
                (
                    pack,
                    np.asarray(centroid, dtype=np.float32).tobytes(),
                    record_id,
                    tenant,
                    pack,
                    len(numbers),
                    json.dumps(numbers),
                    len(numbers),
                ),
            ).rowcount
            if kept != 1:
                return False
            self._db.execute(
                "DELETE FROM record_templates WHERE record_id = ? AND model_pack = ?", (record_id, pack)
            )
            self._insert_templates(templates)
        return True

    @_names_the_file
    def replace_templates(
        self,
        record: Record,
        templates: Sequence[Template],
        centroid: NDArray[np.float32],
        audit: AuditEvent,
    ) -> bool:
        old = np.asarray(record.embedding, dtype=np.float32).tobytes()
        with self._lock, self._db:
            changed = self._db.execute(
                "UPDATE records SET embedding = ?, template_count = ? WHERE record_id = ? "
                "AND model_pack = ? AND embedding = ? AND template_count = ?",
                (
                    np.asarray(centroid, dtype=np.float32).tobytes(),
                    len(templates),
                    record.record_id,
                    record.model_pack,
                    old,
                    record.template_count,
                ),
            ).rowcount
            if changed != 1:
                return False
            # Every pack's templates go: a migration's copy of this record is stale now and
            # `migrate run` re-embeds it (it has no template in the target pack any more).
            self._db.execute("DELETE FROM record_templates WHERE record_id = ?", (record.record_id,))
            self._db.execute("DELETE FROM pack_templates WHERE record_id = ?", (record.record_id,))
            self._insert_templates(templates)
            self._insert_audit(audit)
        self.flush()  # a replaced template's bytes out of the write-ahead log too
        return True

    def _insert_templates(self, templates: Iterable[Template]) -> None:
        self._db.executemany(
            "INSERT INTO record_templates(record_id, model_pack, number, source, captured_at, added_at, "
            "quality, embedding) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    t.record_id,
                    t.model_pack,
                    t.number,
                    t.source.value,
                    t.captured_at,
                    t.added_at,
                    json.dumps(t.quality),
                    np.asarray(t.embedding, dtype=np.float32).tobytes(),
                )
                for t in templates
            ],
        )

    @staticmethod
    def _template(row: sqlite3.Row) -> Template:
        return Template(
            record_id=row["record_id"],
            number=int(row["number"]),
            model_pack=row["model_pack"],
            source=TemplateSource(row["source"]),
            captured_at=row["captured_at"],
            added_at=row["added_at"],
            quality=json.loads(row["quality"]),
            embedding=np.frombuffer(row["embedding"], dtype=np.float32),
        )

    # -- cases ----------------------------------------------------------------------------

    def get_case(self, case_id: str) -> Case | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM cases WHERE case_id = ?", (case_id,)).fetchone()
        return None if row is None else self._case(row)

    def list_cases(
        self, *, tenant: str, status: str | None = None, limit: int = 50, offset: int = 0
    ) -> list[Case]:
        query = "SELECT * FROM cases WHERE tenant = ?"
        params: list[Any] = [tenant]
        if status:
            query += " AND status = ?"
            params.append(status)
        query += " ORDER BY created_at, case_id LIMIT ? OFFSET ?"
        params += [limit, offset]
        with self._lock:
            return [self._case(row) for row in self._db.execute(query, params).fetchall()]

    @_names_the_file
    def save_case_transition(
        self,
        case: Case,
        *,
        probe_status: RecordStatus | None,
        probe_linked_to: str | None,
        remember_distinct: bool,
        audit: AuditEvent,
    ) -> Case:
        with self._lock, self._db:
            updated = self._db.execute(
                "UPDATE cases SET status = ?, decision = ?, decided_by = ?, decided_at = ?, comment = ?, "
                "matched_record_id = ?, claimed_by = ?, confirmed_by = ?, confirmed_at = ?, escalated = ?, "
                "history = ?, version = version + 1 WHERE case_id = ? AND version = ?",
                (
                    case.status.value,
                    case.decision.value if case.decision else None,
                    case.decided_by,
                    case.decided_at,
                    case.comment,
                    case.matched_record_id,
                    case.claimed_by,
                    case.confirmed_by,
                    case.confirmed_at,
                    int(case.escalated),
                    json.dumps(list(case.history)),
                    case.case_id,
                    case.version,
                ),
            ).rowcount
            if updated != 1:
                if self.get_case(case.case_id) is None:
                    raise NotFound(f"no case {case.case_id}")
                raise InvalidState(f"case {case.case_id} was changed by someone else meanwhile; reload it")
            if probe_status is not None:
                self._db.execute(
                    "UPDATE records SET status = ?, linked_to = ? WHERE record_id = ?",
                    (probe_status.value, probe_linked_to, case.probe_record_id),
                )
            if remember_distinct:
                for candidate in case.candidates:
                    a, b = sorted((case.probe_record_id, candidate.record_id))
                    self._db.execute(
                        "INSERT OR IGNORE INTO distinct_pairs(tenant, record_a, record_b, case_id) "
                        "VALUES (?, ?, ?, ?)",
                        (case.tenant, a, b, case.case_id),
                    )
            self._insert_audit(audit)
        stored = self.get_case(case.case_id)
        assert stored is not None
        return stored

    # -- erasure --------------------------------------------------------------------------

    @_names_the_file
    def erase_record(self, record_id: str, audit: AuditEvent) -> dict[str, int]:
        with self._lock, self._db:
            record = self._db.execute("SELECT 1 FROM records WHERE record_id = ?", (record_id,)).fetchone()
            if record is None:
                raise NotFound(f"no record {record_id} (never enrolled, or already erased)")
            counts = {
                "records": self._db.execute("DELETE FROM records WHERE record_id = ?", (record_id,)).rowcount,
                "import_items": self._db.execute(
                    "DELETE FROM import_items WHERE record_id = ?", (record_id,)
                ).rowcount,
                "cases_closed": self._db.execute(
                    "UPDATE cases SET status = ?, comment = 'probe record erased', version = version + 1 "
                    "WHERE probe_record_id = ? AND status != ?",
                    (CaseStatus.CLOSED.value, record_id, CaseStatus.CLOSED.value),
                ).rowcount,
                "distinct_pairs": self._db.execute(
                    "DELETE FROM distinct_pairs WHERE record_a = ? OR record_b = ?", (record_id, record_id)
                ).rowcount,
            }
            self._db.execute("UPDATE records SET linked_to = NULL WHERE linked_to = ?", (record_id,))
            counts |= self._redact_candidate(record_id, audit.at)
            self._insert_audit(audit)
        # Push erased pages out of the write-ahead log too (retrying while a reader is inside
        # an older snapshot); the service then verifies by scanning the files.
        self.flush()
        return counts

    def _redact_candidate(self, record_id: str, at: str) -> dict[str, int]:
        """The erased person's file name and application id leave every other case and import
        item that listed them as a candidate. A case still waiting for people is settled so it
        can never be confirmed against the missing record: its only candidate gone, it is closed
        and its probe enrolled (nobody left to be a duplicate of); the decided match gone, it
        goes back to the queue (open, decision cleared) for the remaining candidates."""
        pattern = f'%"{record_id}"%'
        counts = {"cases_redacted": 0, "cases_requeued": 0, "cases_resolved": 0, "import_items_redacted": 0}
        for row in self._db.execute(
            "SELECT * FROM cases WHERE candidates LIKE ? AND probe_record_id != ?", (pattern, record_id)
        ).fetchall():
            case = self._case(row)
            remaining = tuple(c for c in case.candidates if c.record_id != record_id)
            if len(remaining) == len(case.candidates):
                continue
            status, comment, decision = case.status, case.comment, case.decision
            matched, decided_by, decided_at = case.matched_record_id, case.decided_by, case.decided_at
            probe_status: RecordStatus | None = None
            action = "candidate_erased"
            if case.status is not CaseStatus.CLOSED and not remaining:
                status, comment, action = (
                    CaseStatus.CLOSED,
                    "closed: its only candidate was erased",
                    "resolved",
                )
                probe_status = RecordStatus.ENROLLED
                counts["cases_resolved"] += 1
            elif case.status is CaseStatus.AWAITING_CONFIRMATION and case.matched_record_id == record_id:
                status, comment, action = (
                    CaseStatus.OPEN,
                    "re-queued: the matched record was erased",
                    "requeued",
                )
                decision, matched, decided_by, decided_at = None, None, None, None
                counts["cases_requeued"] += 1
            counts["cases_redacted"] += 1
            entry = {
                "at": at,
                "actor": "system",
                "role": "system",
                "action": action,
                "comment": comment or "",
            }
            self._db.execute(
                "UPDATE cases SET candidates = ?, status = ?, comment = ?, decision = ?, "
                "matched_record_id = ?, decided_by = ?, decided_at = ?, "
                "claimed_by = CASE WHEN ? THEN NULL ELSE claimed_by END, "
                "history = ?, version = version + 1 WHERE case_id = ?",
                (
                    candidates_to_json(remaining),
                    status.value,
                    comment,
                    decision.value if decision else None,
                    matched,
                    decided_by,
                    decided_at,
                    int(status is not case.status),
                    json.dumps([*case.history, entry]),
                    case.case_id,
                ),
            )
            if probe_status is not None:
                self._db.execute(
                    "UPDATE records SET status = ?, linked_to = NULL WHERE record_id = ?",
                    (probe_status.value, case.probe_record_id),
                )
        for row in self._db.execute(
            "SELECT key, candidates FROM import_items WHERE candidates LIKE ?", (pattern,)
        ).fetchall():
            candidates = candidates_from_json(row["candidates"])
            kept = tuple(c for c in candidates if c.record_id != record_id)
            if len(kept) != len(candidates):
                self._db.execute(
                    "UPDATE import_items SET candidates = ? WHERE key = ?",
                    (candidates_to_json(kept), row["key"]),
                )
                counts["import_items_redacted"] += 1
        return counts

    def flush(self) -> bool:
        """Checkpoint the write-ahead log into the main file and truncate it (erasure, doctor)."""
        with self._lock:
            return checkpoint_truncate(self._db)

    # -- audit ----------------------------------------------------------------------------

    @_names_the_file
    def append_audit(self, event: AuditEvent) -> None:
        with self._lock, self._db:
            self._insert_audit(event)

    def _insert_audit(self, event: AuditEvent) -> None:
        self._db.execute(
            "INSERT INTO audit(at, actor, action, tenant, details) VALUES (?, ?, ?, ?, ?)",
            (event.at, event.actor, event.action, event.tenant, json.dumps(event.details, sort_keys=True)),
        )

    def audit_events(self, *, tenant: str | None = None) -> list[AuditEvent]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM audit WHERE (? IS NULL OR tenant = ?) ORDER BY seq", (tenant, tenant)
            ).fetchall()
        return [
            AuditEvent(r["action"], r["actor"], r["tenant"], r["at"], json.loads(r["details"]), r["seq"])
            for r in rows
        ]

    def outcome_counts(self, *, tenant: str) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute(
                "SELECT outcome, COUNT(*) AS n FROM import_items WHERE tenant = ? GROUP BY outcome", (tenant,)
            ).fetchall()
        return {row["outcome"]: int(row["n"]) for row in rows}

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- row mapping ----------------------------------------------------------------------

    @staticmethod
    def _record(row: sqlite3.Row) -> Record:
        return Record(
            record_id=row["record_id"],
            tenant=row["tenant"],
            model_pack=row["model_pack"],
            application_id=row["application_id"],
            source=row["source"],
            content_sha256=row["content_sha256"],
            status=RecordStatus(row["status"]),
            created_at=row["created_at"],
            embedding=np.frombuffer(row["embedding"], dtype=np.float32),
            linked_to=row["linked_to"],
            quality=json.loads(row["quality"]),
            template_count=int(row["template_count"]),
        )

    @staticmethod
    def _case(row: sqlite3.Row) -> Case:
        return Case(
            case_id=row["case_id"],
            tenant=row["tenant"],
            probe_record_id=row["probe_record_id"],
            kind=Outcome(row["kind"]),
            candidates=candidates_from_json(row["candidates"]),
            status=CaseStatus(row["status"]),
            created_at=row["created_at"],
            thresholds=json.loads(row["thresholds"]),
            decision=CaseDecision(row["decision"]) if row["decision"] else None,
            decided_by=row["decided_by"],
            decided_at=row["decided_at"],
            comment=row["comment"],
            matched_record_id=row["matched_record_id"],
            claimed_by=row["claimed_by"],
            confirmed_by=row["confirmed_by"],
            confirmed_at=row["confirmed_at"],
            escalated=bool(row["escalated"]),
            history=tuple(json.loads(row["history"])),
            version=int(row["version"]),
        )

    @staticmethod
    def _item(row: sqlite3.Row) -> ImportItem:
        return ImportItem(
            key=row["key"],
            tenant=row["tenant"],
            source=row["source"],
            application_id=row["application_id"],
            content_sha256=row["content_sha256"],
            outcome=Outcome(row["outcome"]),
            created_at=row["created_at"],
            record_id=row["record_id"],
            case_id=row["case_id"],
            reason=row["reason"],
            message=row["message"],
            candidates=candidates_from_json(row["candidates"]),
            measures=json.loads(row["measures"]),
        )

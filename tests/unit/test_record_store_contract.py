"""Contract of the RecordStore port: every adapter (SQLite; DynamoDB on moto) passes it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import boto3
import numpy as np
import pytest
from moto import mock_aws

from face_dedup.adapters.dynamodb_store import DynamoRecordStore, TableNames, create_tables
from face_dedup.adapters.sqlite_store import SqliteRecordStore
from face_dedup.domain import (
    AuditEvent,
    Candidate,
    Case,
    CaseDecision,
    CaseStatus,
    ImportItem,
    Outcome,
    Record,
    RecordStatus,
    StagedInput,
    utc_now,
)
from face_dedup.errors import InvalidState, NotFound
from face_dedup.ports import EnrollmentCommit, RecordStore


def event(action: str = "x") -> AuditEvent:
    return AuditEvent(action, "tester", "t1", utc_now(), {"k": 1})


def record(record_id: str, status: RecordStatus = RecordStatus.ENROLLED) -> Record:
    vector = np.full(4, 0.5, dtype=np.float32)
    return Record(
        record_id,
        "t1",
        "p1",
        f"APP-{record_id}",
        f"/in/{record_id}.jpg",
        "0" * 64,
        status,
        utc_now(),
        vector,
        quality={"sharpness": 100.0},
    )


def item(key: str, outcome: Outcome, record_id: str | None = None, case_id: str | None = None) -> ImportItem:
    return ImportItem(key, "t1", f"/in/{key}.jpg", None, "0" * 64, outcome, utc_now(), record_id, case_id)


@pytest.fixture(params=["sqlite", "dynamodb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RecordStore]:
    if request.param == "sqlite":
        sqlite = SqliteRecordStore(tmp_path / "registry.sqlite")
        yield sqlite
        sqlite.close()
        return
    with mock_aws():
        client = boto3.client("dynamodb", region_name="eu-west-1")
        names = TableNames.with_prefix("test-")
        create_tables(client, names)
        yield DynamoRecordStore(client, names)


def open_case(store: RecordStore) -> Case:
    store.commit(EnrollmentCommit(item("k1", Outcome.ENROLLED, "r1"), record("r1")))
    case = Case(
        "c1",
        "t1",
        "r2",
        Outcome.REVIEW,
        (Candidate("r1", 0.55, "/in/r1.jpg"),),
        CaseStatus.OPEN,
        utc_now(),
        {"review": 0.5},
    )
    store.commit(
        EnrollmentCommit(
            item("k2", Outcome.REVIEW, "r2", "c1"),
            record("r2", RecordStatus.PENDING_REVIEW),
            case,
            (event("import.review"),),
        )
    )
    return case


def test_commit_roundtrip_and_idempotency(store: RecordStore) -> None:
    store.commit(EnrollmentCommit(item("k1", Outcome.ENROLLED, "r1"), record("r1"), audit=(event(),)))
    again = EnrollmentCommit(item("k1", Outcome.REJECTED), audit=(event(),))
    store.commit(again)  # the first commit of a key stands
    assert store.get_import_item("k1").outcome is Outcome.ENROLLED  # type: ignore[union-attr]
    loaded = store.get_record("r1")
    assert loaded is not None and loaded.quality == {"sharpness": 100.0}
    assert np.allclose(loaded.embedding, 0.5)
    assert len(store.audit_events()) == 1
    assert store.count_templates(tenant="t1", model_pack="p1") == 1


def test_commit_is_all_or_nothing(store: RecordStore) -> None:
    store.commit(EnrollmentCommit(item("k1", Outcome.ENROLLED, "r1"), record("r1")))
    with pytest.raises(Exception):  # noqa: B017 - same record id under another key: each adapter's own error
        store.commit(EnrollmentCommit(item("k2", Outcome.ENROLLED, "r1"), record("r1"), audit=(event(),)))
    assert store.get_import_item("k2") is None
    assert store.audit_events() == []


def test_case_transitions_are_conditional_on_the_version_read(store: RecordStore) -> None:
    case = open_case(store)
    loaded = store.get_case("c1")
    assert loaded is not None and loaded.version == 0
    decided = replace(
        loaded,
        status=CaseStatus.CLOSED,
        decision=CaseDecision.SAME_PERSON,
        decided_by="ann",
        matched_record_id="r1",
        history=({"actor": "ann", "action": "decided"},),
    )
    stored = store.save_case_transition(
        decided,
        probe_status=RecordStatus.CONFIRMED_DUPLICATE,
        probe_linked_to="r1",
        remember_distinct=False,
        audit=event("case.decided"),
    )
    assert stored.version == 1 and stored.status is CaseStatus.CLOSED and stored.decided_by == "ann"
    assert store.get_case("c1") == stored
    assert stored.history == ({"actor": "ann", "action": "decided"},)
    probe = store.get_record("r2")
    assert probe is not None and probe.status is RecordStatus.CONFIRMED_DUPLICATE and probe.linked_to == "r1"
    # A second writer that read version 0 loses: nothing it wrote lands, not even its audit entry.
    with pytest.raises(InvalidState):
        store.save_case_transition(
            replace(loaded, decided_by="bob"),
            probe_status=RecordStatus.ENROLLED,
            probe_linked_to=None,
            remember_distinct=True,
            audit=event("case.decided"),
        )
    assert store.get_record("r2").status is RecordStatus.CONFIRMED_DUPLICATE  # type: ignore[union-attr]
    with pytest.raises(NotFound):
        store.save_case_transition(
            replace(case, case_id="nope"),
            probe_status=None,
            probe_linked_to=None,
            remember_distinct=False,
            audit=event(),
        )
    assert [e.action for e in store.audit_events()] == ["import.review", "case.decided"]


def test_cases_are_listed_by_status_with_pagination(store: RecordStore) -> None:
    open_case(store)
    assert [c.case_id for c in store.list_cases(tenant="t1", status="open")] == ["c1"]
    assert store.list_cases(tenant="t1", status="closed") == []
    assert store.list_cases(tenant="t1", limit=1, offset=1) == []
    assert store.list_cases(tenant="other") == []


def test_erase_removes_the_record_and_keeps_a_receipt(store: RecordStore) -> None:
    open_case(store)
    counts = store.erase_record("r2", event("record.erased"))
    assert counts["records"] == 1 and counts["import_items"] == 1 and counts["cases_closed"] == 1
    assert store.get_record("r2") is None
    assert store.get_import_item("k2") is None
    assert store.get_case("c1").status is CaseStatus.CLOSED  # type: ignore[union-attr]
    assert store.audit_events()[-1].action == "record.erased"
    with pytest.raises(NotFound):
        store.erase_record("r2", event())


def test_staged_inputs_round_trip(store: RecordStore) -> None:
    staged = StagedInput(
        key="k9",
        record_id="r9",
        tenant="t1",
        model_pack="p1",
        source="uploads/x.jpg",
        application_id=None,
        content_sha256="1" * 64,
        embedding=np.full(4, 0.5, dtype=np.float32),
        measures={"sharpness": 50.0},
        quality={"notes": []},
        created_at=utc_now(),
    )
    assert store.get_staged("k9") is None
    store.stage(staged)
    loaded = store.get_staged("k9")
    assert loaded is not None and loaded.record_id == "r9" and loaded.measures == {"sharpness": 50.0}
    assert np.allclose(loaded.embedding, 0.5)
    store.drop_staged("k9")
    assert store.get_staged("k9") is None


def test_open_case_only_once(store: RecordStore) -> None:
    store.commit(EnrollmentCommit(item("k1", Outcome.ENROLLED, "r1"), record("r1")))
    store.commit(EnrollmentCommit(item("k2", Outcome.ENROLLED, "r2"), record("r2")))
    case = Case("c9", "t1", "r2", Outcome.REVIEW, (Candidate("r1", 0.6),), CaseStatus.OPEN, utc_now(), {})
    assert store.open_case(case, RecordStatus.PENDING_REVIEW, (event("case.opened"),)) is True
    assert store.open_case(case, RecordStatus.PENDING_REVIEW, (event("case.opened"),)) is False
    assert store.get_record("r2").status is RecordStatus.PENDING_REVIEW  # type: ignore[union-attr]
    assert [e.action for e in store.audit_events()] == ["case.opened"]
    assert store.get_case("c9") is not None


def test_different_people_decisions_are_remembered(store: RecordStore) -> None:
    case = open_case(store)
    assert not store.are_distinct(tenant="t1", record_a="r1", record_b="r2")
    store.save_case_transition(
        replace(case, status=CaseStatus.CLOSED, decision=CaseDecision.DIFFERENT_PEOPLE),
        probe_status=RecordStatus.ENROLLED,
        probe_linked_to=None,
        remember_distinct=True,
        audit=event(),
    )
    assert store.are_distinct(tenant="t1", record_a="r1", record_b="r2")
    assert store.are_distinct(tenant="t1", record_a="r2", record_b="r1")
    assert not store.are_distinct(tenant="other", record_a="r1", record_b="r2")

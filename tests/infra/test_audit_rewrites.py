"""An audit entry rewritten or removed in the table (IAM cannot make a role's PutItem
conditional, so any role that appends entries could also replace one) is counted and alarmed,
never silently skipped, and nothing of the entry reaches the log."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest


def test_a_rewritten_or_removed_entry_is_counted_not_archived(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from functions.audit_archive import handler as archive_handler

    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "FaceDedupTest")
    archived: list[str] = []

    class Archive:
        def put(self, key: str, data: bytes, content_type: str) -> None:
            archived.append(key)

    monkeypatch.setattr(archive_handler, "archive", lambda: Archive())
    image = {
        "tenant": {"S": "north"},
        "event": {"S": "2026-12-01T10:00:00Z#abc"},
        "action": {"S": "record.erased"},
        "actor": {"S": "officer-1"},
        "details": {"S": '{"application_id": "APP-SECRET-42"}'},
    }
    records: list[dict[str, Any]] = [
        {"eventID": "1", "eventName": "MODIFY", "dynamodb": {"NewImage": image, "SequenceNumber": "1"}},
        {"eventID": "2", "eventName": "REMOVE", "dynamodb": {"Keys": image, "SequenceNumber": "2"}},
    ]

    class Context:
        function_name = "audit-archive"
        memory_limit_in_mb = 256
        invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:audit-archive"
        aws_request_id = "r"

    result = archive_handler.handler({"Records": records}, Context())
    assert result == {"batchItemFailures": []}
    assert archived == []  # the archive keeps the original: nothing overwrites it
    out = capsys.readouterr().out
    emf = [json.loads(line) for line in io.StringIO(out) if '"_aws"' in line]
    counts = [m.get("AuditEntriesRewritten", 0) for m in emf]  # one value, or a list of them
    assert sum(sum(c) if isinstance(c, list) else c for c in counts) == 2
    assert "APP-SECRET-42" not in out and "officer-1" not in out

"""The audit trail, write-once: the audit table's stream delivers every new entry, and this
function copies it to the archive bucket, whose Object Lock (compliance mode) keeps any
principal, the account's root included, from changing or deleting it before its retention
ends. The service only appends to the table (conditional puts), but IAM cannot make a role's
PutItem conditional: an entry rewritten or removed in the table is counted here and alarmed;
the archive is append-only for everyone, so it is told apart from the archived original."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from face_dedup.bootstrap import build_function
from face_dedup.ports import BlobStore
from face_dedup.settings import Settings

logger = Logger(service="face-dedup-audit-archive")
metrics = Metrics(namespace="FaceDedup", service="audit-archive")
processor = BatchProcessor(event_type=EventType.DynamoDBStreams)


@lru_cache(maxsize=1)
def archive() -> BlobStore:
    return build_function(Settings.load(), "audit_archive").archive


def archive_key(entry: dict[str, Any]) -> str:
    """`<tenant>/<event>.json`: the entry's own key, so a redelivered record writes the same
    object (a new version, refused by nothing and changing nothing: the content is the same)."""
    tenant, event = str(entry["tenant"]), str(entry["event"])
    if not tenant or "/" in tenant or ".." in tenant or not event or "/" in event:
        raise ValueError("audit entry without a usable tenant/event key")
    return f"{tenant}/{event.replace(':', '-').replace('#', '_')}.json"


def record_handler(record: DynamoDBRecord) -> None:
    kind = record.event_name.name if record.event_name is not None else ""
    if kind in ("MODIFY", "REMOVE"):
        # The service never rewrites or deletes an entry (conditional puts, no TTL on the table),
        # but IAM cannot make a role's PutItem conditional: an entry rewritten or removed anyway
        # is counted and alarmed (the archive keeps the original; nothing of the entry is logged).
        metrics.add_metric(name="AuditEntriesRewritten", unit=MetricUnit.Count, value=1)
        logger.warning("audit entry rewritten or removed in the table", change=kind)
        return
    if kind != "INSERT" or record.dynamodb is None:
        return
    entry = record.dynamodb.new_image
    body = json.dumps(entry, sort_keys=True, default=str).encode("utf-8")
    archive().put(archive_key(entry), body, "application/json")
    metrics.add_metric(name="AuditEntriesArchived", unit=MetricUnit.Count, value=1)


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return dict(
        process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
    )

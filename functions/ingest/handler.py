"""Ingest: S3 ObjectCreated events, delivered through SQS (bursts queue up; failures retry,
then land in the dead-letter queue) -> decode, detect, quality, embed -> park the template ->
start the de-duplication workflow.

Thin by design: parse the event, call the core once per object, report partial batch
failures. Unusable photos are not failures: the core records them as rejected, with reasons.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes import S3Event
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from face_dedup.bootstrap import build_ingestor
from face_dedup.ingest import Ingestor
from face_dedup.settings import Settings

logger = Logger(service="face-dedup-ingest")
tracer = Tracer(service="face-dedup-ingest", auto_patch=False)  # see tests/infra/test_traces.py
metrics = Metrics(namespace="FaceDedup", service="ingest")
processor = BatchProcessor(event_type=EventType.SQS)


@lru_cache(maxsize=1)
def ingestor() -> Ingestor:
    """Models and clients load once per cold start, never per request."""
    return build_ingestor(Settings.load())


@tracer.capture_method
def record_handler(record: SQSRecord) -> None:
    metrics.add_metric(name="QueueMessages", unit=MetricUnit.Count, value=1)
    body = json.loads(record.body)
    for raw in body.get("Records", []):  # an s3:TestEvent has none
        if not str(raw.get("eventName", "")).startswith("ObjectCreated"):
            continue
        key = S3Event({"Records": [raw]}).object_key  # URL-decoded by Powertools
        outcome = ingestor().ingest(key)
        # Keys can carry application ids or names: log the outcome, not the key.
        logger.info("upload handled", status=outcome.status, detail=outcome.detail)
        metrics.add_metric(name=f"Uploads{outcome.status.capitalize()}", unit=MetricUnit.Count, value=1)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return dict(
        process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
    )

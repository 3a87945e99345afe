"""Case notifications, batched: SQS delivers up to a period's worth at once (batching window);
officers get one SNS message per tenant listing the new cases, with a link, instead of one
message per case. Messages carry case ids and a link only."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import SQSEvent
from aws_lambda_powertools.utilities.typing import LambdaContext

from face_dedup.adapters.sqs_notifier import parse_notification
from face_dedup.bootstrap import build_function
from face_dedup.domain import batch_notifications
from face_dedup.ports import Notifier
from face_dedup.settings import Settings

logger = Logger(service="face-dedup-digest")
tracer = Tracer(service="face-dedup-digest", auto_patch=False)  # see tests/infra/test_traces.py
metrics = Metrics(namespace="FaceDedup", service="digest")


@lru_cache(maxsize=1)
def _sns() -> tuple[Notifier, str]:
    settings = Settings.load()
    return build_function(settings, "digest").officers, settings.review_link_base


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    notifier, link_base = _sns()
    notifications = [parse_notification(record.body) for record in SQSEvent(event).records]
    messages = batch_notifications(notifications, link_base)
    for message in messages:
        notifier.notify(message)
    metrics.add_metric(name="CaseNotifications", unit=MetricUnit.Count, value=len(notifications))
    metrics.add_metric(name="OfficerMessages", unit=MetricUnit.Count, value=len(messages))
    return {"notifications": len(notifications), "messages": len(messages)}

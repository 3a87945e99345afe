"""SQS adapter of the notifier: case notifications queue up, and a digest function sends
officers one message per period (see `batch_notifications`) instead of one per case."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from face_dedup.domain import Notification
from face_dedup.ports import Notifier


class SqsNotifier(Notifier):
    def __init__(self, client: Any, queue_url: str) -> None:
        """`client` is a boto3 SQS client."""
        self._client = client
        self._queue_url = queue_url

    def notify(self, notification: Notification) -> None:
        self._client.send_message(QueueUrl=self._queue_url, MessageBody=json.dumps(asdict(notification)))


def parse_notification(body: str) -> Notification:
    raw = json.loads(body)
    return Notification(
        kind=str(raw["kind"]),
        tenant=str(raw["tenant"]),
        case_id=str(raw.get("case_id", "")),
        link=str(raw["link"]),
        case_ids=tuple(raw.get("case_ids") or ()),
    )

"""SNS adapter of the notifier: officers subscribe to the topic (e-mail, SQS, chat). The
message is a case id and a link (see `Notification`); the subject says nothing personal."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from face_dedup.domain import Notification
from face_dedup.ports import Notifier


class SnsNotifier(Notifier):
    def __init__(self, client: Any, topic_arn: str) -> None:
        """`client` is a boto3 SNS client."""
        self._client = client
        self._topic_arn = topic_arn

    def notify(self, notification: Notification) -> None:
        self._client.publish(
            TopicArn=self._topic_arn,
            Subject="face-dedup: a case needs review",
            Message=json.dumps(asdict(notification), sort_keys=True),
            MessageAttributes={
                "kind": {"DataType": "String", "StringValue": notification.kind},
                "tenant": {"DataType": "String", "StringValue": notification.tenant},
            },
        )

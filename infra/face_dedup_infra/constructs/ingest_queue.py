from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_notifications as s3n
from aws_cdk import aws_sqs as sqs
from constructs import Construct


def encrypted_queue_with_dead_letters(
    scope: Construct, key: kms.IKey, *, visibility_timeout: Duration, retention: Duration
) -> tuple[sqs.Queue, sqs.Queue]:
    """A KMS-encrypted, TLS-only queue whose messages go to a dead-letter queue after five
    failed attempts, with their content intact."""
    dead_letters = sqs.Queue(
        scope,
        "DeadLetters",
        encryption=sqs.QueueEncryption.KMS,
        encryption_master_key=key,
        enforce_ssl=True,
        retention_period=Duration.days(14),
    )
    queue = sqs.Queue(
        scope,
        "Queue",
        encryption=sqs.QueueEncryption.KMS,
        encryption_master_key=key,
        enforce_ssl=True,
        visibility_timeout=visibility_timeout,
        retention_period=retention,
        dead_letter_queue=sqs.DeadLetterQueue(max_receive_count=5, queue=dead_letters),
    )
    return queue, dead_letters


class IngestQueue(Construct):
    """Upload events queue here (bursts of millions wait their turn), are retried, and after
    five failed attempts land in the dead-letter queue (alarmed) with their message intact."""

    def __init__(
        self, scope: Construct, construct_id: str, *, uploads: s3.Bucket, function_timeout: Duration
    ) -> None:
        super().__init__(scope, construct_id)
        # Its own key: S3 must be allowed to use the queue's key for event notifications, and
        # sharing the buckets' key would make the bucket and the key depend on each other.
        key = kms.Key(self, "Key", description="face-dedup: upload event queues", enable_key_rotation=True)
        self.queue, self.dead_letters = encrypted_queue_with_dead_letters(
            self,
            key,
            visibility_timeout=Duration.seconds(function_timeout.to_seconds() * 6),
            retention=Duration.days(14),
        )
        for prefix in ("selfies/", "imports/"):
            uploads.add_event_notification(
                s3.EventType.OBJECT_CREATED,
                s3n.SqsDestination(self.queue),
                s3.NotificationKeyFilter(prefix=prefix),
            )


class CaseNotificationQueue(Construct):
    """New-case notifications wait here for the digest function, which sends officers one
    message per period; failures retry, then dead-letter (alarmed, see Monitoring)."""

    def __init__(self, scope: Construct, construct_id: str, *, key: kms.IKey) -> None:
        super().__init__(scope, construct_id)
        self.queue, self.dead_letters = encrypted_queue_with_dead_letters(
            # above the five-minute batching window plus the function's own time
            self,
            key,
            visibility_timeout=Duration.minutes(15),
            retention=Duration.days(4),
        )

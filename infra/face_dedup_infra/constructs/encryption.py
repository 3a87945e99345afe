from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_kms as kms
from constructs import Construct


class Encryption(Construct):
    """One customer-managed key for everything that holds personal data: photos, templates,
    records, queues, the topic and logs. Rotated yearly; kept if the stack is deleted."""

    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        self.key = kms.Key(
            self,
            "Key",
            description="face-dedup: photos, templates, records, queues, notifications",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.RETAIN,
        )

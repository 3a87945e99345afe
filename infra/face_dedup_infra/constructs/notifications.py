from __future__ import annotations

from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct


class Notifications(Construct):
    """Two topics, two audiences. `topic`: case digests for officers (a case id and a link,
    never a face, a name or a score). `operations`: every alarm, for the people who run the
    stack (dead letters, failed workflows, errors, the cluster). Both encrypted, TLS only."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        key: kms.IKey,
        email: str | None,
        operations_email: str | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.topic = self._topic("Cases", key, "face-dedup cases for review")
        # CloudWatch alarms publish with the key: the key policy lets CloudWatch use it.
        self.operations = self._topic("Operations", key, "face-dedup operations alarms")
        key.add_to_resource_policy(
            iam.PolicyStatement(
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                resources=["*"],
            )
        )
        if email:
            self.topic.add_subscription(subscriptions.EmailSubscription(email))
        if operations_email:
            self.operations.add_subscription(subscriptions.EmailSubscription(operations_email))

    def _topic(self, name: str, key: kms.IKey, display: str) -> sns.Topic:
        topic = sns.Topic(self, name, master_key=key, display_name=display)
        topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="TlsOnly",
                effect=iam.Effect.DENY,
                principals=[iam.AnyPrincipal()],
                actions=["sns:Publish"],
                resources=[topic.topic_arn],
                conditions={"Bool": {"aws:SecureTransport": "false"}},
            )
        )
        return topic

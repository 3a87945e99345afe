from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_opensearchservice as opensearch
from constructs import Construct


class SearchDomain(Construct):
    """The OpenSearch domain holding the k-NN index: inside the VPC (no public endpoint),
    encrypted at rest with the KMS key and node to node, HTTPS only (TLS 1.2+), fine-grained
    access control with IAM, audit/application/slow logs to CloudWatch, two AZs."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        vpc: ec2.IVpc,
        security_group: ec2.ISecurityGroup,
        key: kms.IKey,
        instance_type: str,
        data_nodes: int,
    ) -> None:
        super().__init__(scope, construct_id)
        self.master_role = iam.Role(
            self,
            "MasterRole",
            assumed_by=iam.AccountRootPrincipal(),
            description="face-dedup: fine-grained access control master user (administration only)",
        )
        log_group = logs.LogGroup(self, "Logs", retention=logs.RetentionDays.ONE_YEAR)
        self.domain = opensearch.Domain(
            self,
            "Domain",
            version=opensearch.EngineVersion.OPENSEARCH_2_17,
            vpc=vpc,
            vpc_subnets=[ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)],
            security_groups=[security_group],
            capacity=opensearch.CapacityConfig(
                data_nodes=data_nodes,
                data_node_instance_type=instance_type,
                multi_az_with_standby_enabled=False,
            ),
            zone_awareness=opensearch.ZoneAwarenessConfig(enabled=True, availability_zone_count=2),
            ebs=opensearch.EbsOptions(volume_size=100),
            encryption_at_rest=opensearch.EncryptionAtRestOptions(enabled=True, kms_key=key),
            node_to_node_encryption=True,
            enforce_https=True,
            tls_security_policy=opensearch.TLSSecurityPolicy.TLS_1_2,
            fine_grained_access_control=opensearch.AdvancedSecurityOptions(
                master_user_arn=self.master_role.role_arn
            ),
            logging=opensearch.LoggingOptions(
                app_log_enabled=True,
                app_log_group=log_group,
                slow_search_log_enabled=True,
                slow_search_log_group=log_group,
                slow_index_log_enabled=True,
                slow_index_log_group=log_group,
                audit_log_enabled=True,
                audit_log_group=log_group,
            ),
            removal_policy=RemovalPolicy.RETAIN,
        )

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_opensearchservice as opensearch
from constructs import Construct


class SearchDomain(Construct):
    """The OpenSearch domain holding the k-NN index: inside the VPC (no public endpoint),
    encrypted at rest with the KMS key and node to node, HTTPS only (TLS 1.2+), fine-grained
    access control with IAM, audit/application/slow logs to CloudWatch, two AZs.

    Its size (instance type, data nodes, volume) comes from DeploymentConfig, which takes it
    from face_dedup.capacity.plan for the declared `registry-size` (the formulas behind
    `face-dedup plan-capacity`) and refuses at synth a size the index method was not measured
    to serve; the index method itself is capacity.DEFAULT_METHOD (the adapter's defaults)."""

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
        volume_gb: int = 100,
        dedicated_masters: int = 0,
        master_type: str = "m7g.large.search",
        zones: int = 2,
    ) -> None:
        super().__init__(scope, construct_id)
        self._vpc, self._key = vpc, key
        # The master user is the deployment's index-setup function, nothing else: it creates the
        # index and maps the functions' roles (provision_index); no person holds this role.
        self.master_role = iam.Role(
            self,
            "MasterRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description="face-dedup: fine-grained access control master user (the index-setup step only)",
            managed_policies=[
                iam.ManagedPolicy.from_aws_managed_policy_name("service-role/AWSLambdaVPCAccessExecutionRole")
            ],
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
                master_nodes=dedicated_masters or None,
                master_node_instance_type=master_type if dedicated_masters else None,
                multi_az_with_standby_enabled=False,
            ),
            zone_awareness=opensearch.ZoneAwarenessConfig(enabled=zones > 1, availability_zone_count=zones)
            if zones > 1
            else None,
            ebs=opensearch.EbsOptions(volume_size=volume_gb, volume_type=ec2.EbsDeviceVolumeType.GP3),
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

    def provision_index(
        self,
        roles: dict[str, iam.Role],
        settings: dict[str, str],
        *,
        layer: lambda_.ILayerVersion,
        security_group: ec2.ISecurityGroup,
        records: dynamodb.ITable | None = None,
        tenants: tuple[str, ...] = (),
    ) -> None:
        """The deploy-time index step: a custom resource whose function (the master user, in
        the VPC) creates the index and maps each function's role to its security-plugin role
        (read-only for functions that only search). Runs on every deployment; idempotent.
        With `records` and `tenants` it first reads one record per tenant and fails the
        deployment when that record's pack is neither the deployed active nor shadow pack
        (pack_guard.check_deployment): Query on the records table's indexes, nothing else."""
        from aws_cdk import CustomResource, Duration
        from aws_cdk import custom_resources as cr

        from face_dedup import wiring
        from face_dedup.deployment import CLOUD_SETTINGS, env_name
        from face_dedup_infra.constructs.functions import ARCHITECTURE, FUNCTIONS_DIR, RUNTIME

        env = {env_name(name): settings[name] for name in wiring.PORT_SETTINGS[wiring.INDEX]}
        env |= {
            env_name("model_pack"): settings["model_pack"],
            "POWERTOOLS_SERVICE_NAME": "face-dedup-index-setup",
        }
        if settings.get("shadow_pack"):  # a migration's shadow pack: its own index is created too
            env[env_name("shadow_pack")] = settings["shadow_pack"]
        if records is not None and tenants:  # the pack check reads one record per tenant
            env[env_name("table_records")] = records.table_name
            env[env_name("store_backend")] = CLOUD_SETTINGS["store_backend"]  # as every function's
            self.master_role.add_to_policy(
                iam.PolicyStatement(actions=["dynamodb:Query"], resources=[f"{records.table_arn}/index/*"])
            )
            if records.encryption_key is not None:
                records.encryption_key.grant_decrypt(self.master_role)
        self.domain.grant_read_write(self.master_role)
        self.setup_function = lambda_.Function(
            self,
            "IndexSetup",
            runtime=RUNTIME,
            architecture=ARCHITECTURE,
            code=lambda_.Code.from_asset(
                str(FUNCTIONS_DIR / "index_setup"), exclude=["__pycache__", "*.pyc"]
            ),
            handler="handler.handler",
            layers=[layer],
            memory_size=256,
            timeout=Duration.minutes(2),
            environment=env,
            environment_encryption=self._key,
            role=self.master_role,
            vpc=self._vpc,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED),
            security_groups=[security_group],  # the functions' group: the one the domain admits
            log_group=logs.LogGroup(self, "IndexSetupLogs", retention=logs.RetentionDays.ONE_YEAR),
            description="face-dedup: creates the index and maps the functions' roles (deployment only)",
        )
        provider = cr.Provider(self, "IndexSetupProvider", on_event_handler=self.setup_function)
        readers: list[str] = []
        writers: list[str] = []
        for spec in map(wiring.function_spec, roles):  # the optional functions deployed too
            if spec.in_vpc:
                role = roles[spec.name]
                (readers if wiring.index_role(spec) == "face_dedup_read" else writers).append(role.role_arn)
        self.index_setup = CustomResource(
            self,
            "Index",
            service_token=provider.service_token,
            properties={
                "ReadRoleArns": readers,
                "WriteRoleArns": writers,
                "Tenants": list(tenants) if records is not None else [],
            },
        )
        self.index_setup.node.add_dependency(self.domain)
        # The domain's resource policy admits exactly the roles that reach it, each with only the
        # HTTP verbs its own code sends (a same-account resource policy adds to the role's own
        # policy: granting every verb here would undo the role's least privilege); inside, the
        # security plugin's role mapping (above) limits each to read or write.
        from face_dedup import permissions

        statements = [
            iam.PolicyStatement(
                principals=[self.master_role],
                actions=["es:ESHttpGet", "es:ESHttpHead", "es:ESHttpPost", "es:ESHttpPut", "es:ESHttpDelete"],
                resources=[f"{self.domain.domain_arn}/*"],
            )
        ]
        for spec in map(wiring.function_spec, roles):
            verbs = sorted(n.action for n in permissions.needs(spec) if n.resource == wiring.INDEX)
            if spec.in_vpc and verbs:
                statements.append(
                    iam.PolicyStatement(
                        principals=[roles[spec.name]],
                        actions=verbs,
                        resources=[f"{self.domain.domain_arn}/*"],
                    )
                )
        self.domain.add_access_policies(*statements)

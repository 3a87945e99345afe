from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from aws_cdk import Duration
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_logs as logs
from constructs import Construct

from face_dedup import permissions, wiring
from face_dedup.deployment import FUNCTION_ENV, env_name

FUNCTIONS_DIR = Path(__file__).resolve().parents[3] / "functions"
RUNTIME = lambda_.Runtime.PYTHON_3_12  # the layers are built for exactly this runtime
ARCHITECTURE = lambda_.Architecture.ARM_64  # onnxruntime + OpenCV fit the 250 MB limit only on arm64


def camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


class Functions(Construct):
    """The Lambda functions, thin handlers over the core library (in the runtime layer), each
    built from its declaration in `face_dedup.wiring`: its own role with exactly the actions
    its adapters' code performs (`face_dedup.permissions`) on exactly its resources, in the VPC
    if and only if it talks to the index, and only the settings it reads in its environment.
    Only functions that look at photos load the model layer."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        layers_dir: Path,
        settings: dict[str, str],
        resources: dict[str, list[str]],
        vpc: ec2.IVpc,
        security_group: ec2.ISecurityGroup,
        reserved: dict[str, int],
        key: kms.IKey,
    ) -> None:
        super().__init__(scope, construct_id)
        self._settings = settings
        self._key = key
        self.runtime_layer = lambda_.LayerVersion(
            self,
            "RuntimeLayer",
            code=lambda_.Code.from_asset(str(layers_dir / "runtime")),
            compatible_runtimes=[RUNTIME],
            compatible_architectures=[ARCHITECTURE],
            description="face-dedup core library and its runtime dependencies (arm64, Python 3.12)",
        )
        self.models_layer = lambda_.LayerVersion(
            self,
            "ModelsLayer",
            code=lambda_.Code.from_asset(str(layers_dir / "models")),
            compatible_runtimes=[RUNTIME],
            compatible_architectures=[ARCHITECTURE],
            description="face-dedup model pack files, verified by SHA-256 at build time",
        )
        self.by_name: dict[str, lambda_.Function] = {}
        self.roles: dict[str, iam.Role] = {}
        self._resources, self._vpc, self._security_group = resources, vpc, security_group
        for spec, needs in permissions.iter_all():
            self.add(spec, needs, reserved.get(spec.name))

    def add(
        self, spec: wiring.FunctionSpec, needs: set[permissions.Need], reserved: int | None
    ) -> lambda_.Function:
        """One function and its role from its declaration (the optional ones too)."""
        resources, vpc, security_group = self._resources, self._vpc, self._security_group
        role = iam.Role(
            self,
            f"{camel(spec.name)}Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"face-dedup {spec.name}: {spec.description}",
            managed_policies=[
                iam.ManagedPolicy.from_aws_managed_policy_name(
                    "service-role/AWSLambdaVPCAccessExecutionRole"
                    if spec.in_vpc
                    else "service-role/AWSLambdaBasicExecutionRole"
                )
            ],
        )
        grouped: dict[str, set[str]] = defaultdict(set)
        for need in needs:
            grouped[need.resource].add(need.action)
        for resource, actions in sorted(grouped.items()):
            if resource not in resources:
                continue  # created after the functions (the state machine): granted there
            role.add_to_policy(iam.PolicyStatement(actions=sorted(actions), resources=resources[resource]))
        self.roles[spec.name] = role
        self.by_name[spec.name] = self._function(spec, role, vpc, security_group, reserved)
        return self.by_name[spec.name]

    def _function(
        self,
        spec: wiring.FunctionSpec,
        role: iam.Role,
        vpc: ec2.IVpc,
        security_group: ec2.ISecurityGroup,
        reserved: int | None,
    ) -> lambda_.Function:
        name = camel(spec.name)
        log_group = logs.LogGroup(self, f"{name}Logs", retention=logs.RetentionDays.ONE_YEAR)
        environment = {
            FUNCTION_ENV: spec.name,  # which declaration it runs under (tests, logs)
            "POWERTOOLS_SERVICE_NAME": f"face-dedup-{spec.name}",
            # traces keep timings, never payloads: responses and errors carry ids and keys
            "POWERTOOLS_TRACER_CAPTURE_RESPONSE": "false",
            "POWERTOOLS_TRACER_CAPTURE_ERROR": "false",
        }
        for setting in wiring.settings_for(spec):
            if setting in self._settings:  # the rest are added once their resource exists
                environment[env_name(setting)] = self._settings[setting]
        return lambda_.Function(
            self,
            name,
            runtime=RUNTIME,
            architecture=ARCHITECTURE,
            code=lambda_.Code.from_asset(
                str(FUNCTIONS_DIR / spec.code_dir), exclude=["__pycache__", "*.pyc"]
            ),
            handler=spec.handler,
            layers=[self.runtime_layer, self.models_layer] if spec.engine else [self.runtime_layer],
            memory_size=spec.memory,
            timeout=Duration.seconds(spec.timeout_s),
            environment=environment,
            environment_encryption=self._key,
            tracing=lambda_.Tracing.ACTIVE,
            log_group=log_group,
            role=role,
            reserved_concurrent_executions=reserved,
            vpc=vpc if spec.in_vpc else None,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)
            if spec.in_vpc
            else None,
            security_groups=[security_group] if spec.in_vpc else None,
            description=f"face-dedup {spec.name}: {spec.description}",
        )

    def set_setting(self, setting: str, value: str) -> None:
        """A setting whose resource is created after the functions (the state machine's ARN)."""
        for spec in wiring.FUNCTIONS.values():
            if setting in wiring.settings_for(spec):
                self.by_name[spec.name].add_environment(env_name(setting), value)

    def __getattr__(self, name: str) -> lambda_.Function:
        # stack.functions.search etc. (tests and the workflow read them by name)
        by_name = self.__dict__.get("by_name", {})
        if name in by_name:
            return by_name[name]  # type: ignore[no-any-return]
        raise AttributeError(name)

    def digest_notifications(self, queue: object) -> None:
        # Up to five minutes of case notifications at a time: many new cases, one message.
        self.by_name["digest"].add_event_source(
            sources.SqsEventSource(queue, batch_size=100, max_batching_window=Duration.minutes(5))  # type: ignore[arg-type]
        )

    def archive_audit(self, table: object) -> None:
        # Every new audit entry, in order per tenant partition; a failing batch is retried
        # (split in halves to isolate a bad record) for up to a day, then alarmed as an error.
        self.by_name["audit_archive"].add_event_source(
            sources.DynamoEventSource(
                table,  # type: ignore[arg-type]
                starting_position=lambda_.StartingPosition.TRIM_HORIZON,
                batch_size=100,
                bisect_batch_on_error=True,
                retry_attempts=100,
                max_record_age=Duration.days(1),
                report_batch_item_failures=True,
            )
        )

    def consume(self, queue: object, max_concurrency: int) -> None:
        self.by_name["ingest"].add_event_source(
            sources.SqsEventSource(
                queue,  # type: ignore[arg-type]
                batch_size=10,
                max_batching_window=Duration.seconds(5),
                report_batch_item_failures=True,
                # bounded: each upload starts a workflow that searches and writes the index
                max_concurrency=max_concurrency,
            )
        )

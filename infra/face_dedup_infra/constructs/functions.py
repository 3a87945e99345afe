from __future__ import annotations

from pathlib import Path

from aws_cdk import Duration
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_logs as logs
from constructs import Construct

FUNCTIONS_DIR = Path(__file__).resolve().parents[3] / "functions"
RUNTIME = lambda_.Runtime.PYTHON_3_12  # the layers are built for exactly this runtime
ARCHITECTURE = lambda_.Architecture.ARM_64  # onnxruntime + OpenCV fit the 250 MB limit only on arm64


class Functions(Construct):
    """The Lambda functions, thin handlers over the core library (in the runtime layer).
    Only `ingest` loads the model layer: the workflow's tasks never look at a photo."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        layers_dir: Path,
        environment: dict[str, str],
        vpc: ec2.IVpc,
        index_security_group: ec2.ISecurityGroup,
    ) -> None:
        super().__init__(scope, construct_id)
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
        # The two functions that query the index share a role: it is the identity the domain
        # trusts (see SearchDomain), so that one role, not every function, reaches the index.
        self.index_client_role = iam.Role(
            self,
            "IndexClientRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            managed_policies=[
                iam.ManagedPolicy.from_aws_managed_policy_name("service-role/AWSLambdaVPCAccessExecutionRole")
            ],
        )

        def function(
            name: str,
            code_dir: str,
            handler: str,
            *,
            memory: int,
            timeout: Duration,
            models: bool = False,
            in_vpc: bool = False,
        ) -> lambda_.Function:
            log_group = logs.LogGroup(self, f"{name}Logs", retention=logs.RetentionDays.ONE_YEAR)
            return lambda_.Function(
                self,
                name,
                runtime=RUNTIME,
                architecture=ARCHITECTURE,
                code=lambda_.Code.from_asset(str(FUNCTIONS_DIR / code_dir), exclude=["__pycache__", "*.pyc"]),
                handler=handler,
                layers=[self.runtime_layer, self.models_layer] if models else [self.runtime_layer],
                memory_size=memory,
                timeout=timeout,
                environment={**environment, "POWERTOOLS_SERVICE_NAME": f"face-dedup-{name.lower()}"},
                tracing=lambda_.Tracing.ACTIVE,
                log_group=log_group,
                role=self.index_client_role if in_vpc else None,
                vpc=vpc if in_vpc else None,
                vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)
                if in_vpc
                else None,
                security_groups=[index_security_group] if in_vpc else None,
            )

        self.ingest = function(
            "Ingest", "ingest", "handler.handler", memory=3008, timeout=Duration.seconds(60), models=True
        )
        self.search = function(
            "Search", "workflow", "handler.search", memory=1024, timeout=Duration.seconds(30), in_vpc=True
        )
        self.complete = function(
            "Complete", "workflow", "handler.complete", memory=1024, timeout=Duration.seconds(30), in_vpc=True
        )
        self.notify = function(
            "Notify", "workflow", "handler.notify", memory=512, timeout=Duration.seconds(10)
        )
        self.api = function(
            "Api",
            "api",
            "handler.handler",
            memory=2048,
            timeout=Duration.seconds(29),
            models=True,
            in_vpc=True,
        )
        self.digest = function(
            "Digest", "digest", "handler.handler", memory=512, timeout=Duration.seconds(60)
        )
        self.record_failure = function(
            "RecordFailure", "workflow", "handler.record_failure", memory=512, timeout=Duration.seconds(30)
        )

    def digest_notifications(self, queue: object) -> None:
        # Up to five minutes of case notifications at a time: many new cases, one message.
        self.digest.add_event_source(
            sources.SqsEventSource(queue, batch_size=100, max_batching_window=Duration.minutes(5))  # type: ignore[arg-type]
        )

    def consume(self, queue: object) -> None:
        self.ingest.add_event_source(
            sources.SqsEventSource(
                queue,  # type: ignore[arg-type]
                batch_size=10,
                max_batching_window=Duration.seconds(5),
                report_batch_item_failures=True,
            )
        )

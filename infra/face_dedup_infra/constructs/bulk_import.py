"""The bulk de-duplication job, first half (optional: CDK context `face-dedup:bulk-import=true`;
README, "Bulk de-duplication in the cloud").

A Step Functions state machine, started with {"tenant", "batch"} once a batch is uploaded as
`bulk/<tenant>/<batch>/<file>` + `bulk/<tenant>/<batch>/manifest.csv` in the uploads bucket:

    Plan (Pass: the manifest's key; the job's name is the execution's name)
      -> Rows: Distributed Map, ItemReader = the manifest CSV (header row), each row selected as
         {row (its index: manifest order), file, application_id}, batched; each batch goes to
         the item processor (functions/bulk), at most `max_concurrency` at a time; items that
         fail (a malformed item; a transient AWS error past its retries) are tolerated up to
         `tolerated_failure_percent`; every item's result (row numbers, counts, reason codes)
         is written to the job's results bucket (ResultWriter).

The item processor writes the analysed templates of its rows to the faces bucket
(`_bulk/<tenant>/<job>/`, KMS). The ordered join-and-decide step that would register them in
manifest order is NOT part of this state machine yet (README says what it needs).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aws_cdk import Acknowledgment, CfnOutput, CfnResource, Duration, RemovalPolicy, Stack, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from face_dedup import permissions, wiring
from face_dedup.bulk_keys import MANIFEST_NAME, MAX_ROWS, UPLOAD_PREFIX
from face_dedup_infra.constructs.functions import Functions
from face_dedup_infra.constructs.migration import MAX_CONCURRENCY_LIMIT, RESULTS_KEPT_DAYS
from face_dedup_infra.constructs.workflow import RETRY, TRANSIENT

MANIFEST_FORMAT = f"{UPLOAD_PREFIX}/{{}}/{{}}/{MANIFEST_NAME}"  # bulk/<tenant>/<batch>/manifest.csv


@dataclass(frozen=True)
class BulkImportOptions:
    enabled: bool = False
    max_concurrency: int = 10
    tolerated_failure_percent: float = 0.0  # a lost batch leaves a gap the ordered step refuses
    batch_size: int = 100  # manifest rows per item

    def __post_init__(self) -> None:
        if not 1 <= self.max_concurrency <= MAX_CONCURRENCY_LIMIT:
            raise ValueError(
                f"face-dedup:bulk-import-max-concurrency must be 1..{MAX_CONCURRENCY_LIMIT} "
                f"(bounded: 0 would let Step Functions run every item at once), got {self.max_concurrency}"
            )
        if not 0 <= self.tolerated_failure_percent <= 100:
            raise ValueError("face-dedup:bulk-import-tolerated-failure-percent must be 0..100")
        if not 1 <= self.batch_size <= MAX_ROWS:
            raise ValueError(f"face-dedup:bulk-import-batch-size must be 1..{MAX_ROWS}")

    @classmethod
    def from_context(cls, get: Any) -> BulkImportOptions:
        def value(name: str, default: Any) -> Any:
            found = get(f"face-dedup:bulk-import{name}")
            return default if found is None else found

        return cls(
            enabled=str(value("", "false")).lower() == "true",
            max_concurrency=int(value("-max-concurrency", cls.max_concurrency)),
            tolerated_failure_percent=float(
                value("-tolerated-failure-percent", cls.tolerated_failure_percent)
            ),
            batch_size=int(value("-batch-size", cls.batch_size)),
        )


class BulkImportJob(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        options: BulkImportOptions,
        functions: Functions,
        uploads: s3.IBucket,
        access_logs: s3.IBucket,
        key: kms.IKey,
    ) -> None:
        super().__init__(scope, construct_id)
        spec = wiring.OPTIONAL_FUNCTIONS[wiring.BULK_ANALYSE]
        found = permissions.needs(spec)
        # reserved concurrency: the job can never take more Lambda instances than it is given
        analyse = functions.add(spec, found | permissions.key_needs(found), options.max_concurrency)
        built = {wiring.BULK_ANALYSE: analyse}

        self.results = s3.Bucket(
            self,
            "Results",
            encryption=s3.BucketEncryption.KMS,
            encryption_key=key,
            bucket_key_enabled=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            versioned=True,
            server_access_logs_bucket=access_logs,
            server_access_logs_prefix="bulk-import-results/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    expiration=Duration.days(RESULTS_KEPT_DAYS),
                    noncurrent_version_expiration=Duration.days(1),
                )
            ],
            removal_policy=RemovalPolicy.RETAIN,
        )
        task = tasks.LambdaInvoke(
            self,
            "Analyse",
            lambda_function=analyse,
            payload_response_only=True,
            retry_on_service_exceptions=False,
        )
        task.add_retry(
            errors=TRANSIENT,
            interval=Duration.seconds(RETRY["interval_s"]),
            backoff_rate=RETRY["backoff_rate"],
            max_attempts=int(RETRY["max_attempts"]),
            max_delay=Duration.seconds(RETRY["max_delay_s"]),
            jitter_strategy=sfn.JitterType.FULL,
        )
        plan = sfn.Pass(
            self,
            "Plan",
            parameters={
                "tenant.$": "$.tenant",
                "batch.$": "$.batch",
                "job.$": "$$.Execution.Name",
                "manifest.$": f"States.Format('{MANIFEST_FORMAT}', $.tenant, $.batch)",
            },
        )
        rows = sfn.DistributedMap(
            self,
            "Rows",
            item_reader=sfn.S3CsvItemReader(
                bucket=uploads,
                key=sfn.JsonPath.string_at("$.manifest"),
                csv_headers=sfn.CsvHeaders.use_first_row(),
            ),
            # the row's index is its place in the manifest: the order the decisions follow
            item_selector={
                "row.$": "$$.Map.Item.Index",
                "file.$": "$$.Map.Item.Value.file",
                "application_id.$": "$$.Map.Item.Value.application_id",
            },
            item_batcher=sfn.ItemBatcher(
                max_items_per_batch=options.batch_size,
                batch_input={"tenant.$": "$.tenant", "batch.$": "$.batch", "job.$": "$.job"},
            ),
            max_concurrency=options.max_concurrency,
            tolerated_failure_percentage=options.tolerated_failure_percent,
            result_writer_v2=sfn.ResultWriterV2(bucket=self.results, prefix="results"),
            map_execution_type=sfn.StateMachineType.STANDARD,  # items of up to 10 minutes
            result_path="$.rows",
        )
        rows.item_processor(task)
        log_group = logs.LogGroup(self, "Logs", retention=logs.RetentionDays.ONE_YEAR)
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            definition_body=sfn.DefinitionBody.from_chainable(plan.next(rows)),
            tracing_enabled=True,
            logs=sfn.LogOptions(destination=log_group, level=sfn.LogLevel.ALL, include_execution_data=False),
            timeout=Duration.days(7),
        )
        # the manifest is read (uploads bucket) and the result manifests written with the key
        key.grant_encrypt_decrypt(self.state_machine.role)
        self._acknowledge(built, key, uploads)
        CfnOutput(self, "StateMachineArn", value=self.state_machine.state_machine_arn)
        CfnOutput(self, "ResultsBucket", value=self.results.bucket_name)
        self.functions = built
        self.role: iam.IRole = self.state_machine.role

    def _acknowledge(self, built: dict[str, Any], key: kms.IKey, uploads: s3.IBucket) -> None:
        """The cdk-nag findings of CDK's own grants to the state machine, acknowledged on it with
        the reason each wildcard is bounded (as face_dedup_infra.nag does for the workflow)."""
        stack = Stack.of(self)

        def logical(construct: Any) -> str:
            child = construct.node.default_child
            assert isinstance(child, CfnResource)
            return str(stack.resolve(child.logical_id))

        machine = logical(self.state_machine)
        name = json.dumps({"Fn::Select": [6, {"Fn::Split": [":", {"Ref": machine}]}]}, separators=(",", ":"))
        execution = f"arn:<AWS::Partition>:states:<AWS::Region>:<AWS::AccountId>:execution:{name}"
        found = {
            **{
                f"IAM5[Resource::<{logical(fn)}.Arn>:*]": "The job invokes this function (its versions too)."
                for fn in built.values()
            },
            f"IAM5[Resource::arn:<AWS::Partition>:s3:::<{logical(self.results)}>/*]": (
                "The Distributed Map's result writer puts its manifests in the job's own results bucket."
            ),
            f"IAM5[Resource::arn:<AWS::Partition>:s3:::<{logical(uploads)}>/*]": (
                "The Distributed Map's CSV item reader reads the job's manifest; CDK grants its "
                "GetObject on the bucket's objects (the key is the execution input's)."
            ),
            f"IAM5[Resource::{execution}:*]": (
                "The Distributed Map starts and stops child executions of this state machine only."
            ),
            f"IAM5[Resource::{execution}/*:*]": (
                "The Distributed Map's child executions of this state machine only."
            ),
        }
        for rule, reason in found.items():
            Validations.of(self.state_machine).acknowledge(
                Acknowledgment(id=f"AwsSolutions::AwsSolutions-{rule}", reason=reason)
            )

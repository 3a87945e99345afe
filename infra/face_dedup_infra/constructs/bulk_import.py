"""The bulk de-duplication job (optional: CDK context `face-dedup:bulk-import=true`; README,
"Bulk de-duplication in the cloud").

A Step Functions state machine, started with {"tenant", "batch"} once a batch is uploaded as
`bulk/<tenant>/<batch>/<file>` + `bulk/<tenant>/<batch>/manifest.csv` in the uploads bucket:

    Plan (Pass: the manifest's key; the job's name is the execution's name)
      -> Rows: Distributed Map, ItemReader = the manifest CSV (header row), each row selected as
         {row (its index: manifest order), file, application_id}, batched; each batch goes to
         the item processor (functions/bulk `handler`), at most `max_concurrency` at a time;
         items that fail are tolerated up to `tolerated_failure_percent` (a lost item is a gap
         the join refuses); every item's result (row numbers, counts, reason codes) is
         written to the job's results bucket (ResultWriter).
      -> Prepare (functions/bulk `prepare`): the manifest's row count, the tenant's gallery
         snapshot, the join threshold and the chunks (face_dedup.cloud_bulk_decide).
      -> Join: Distributed Map over the plan's chunks (at most `join_concurrency` at a time,
         no failure tolerated): each chunk joined against the snapshot and every earlier row
         (functions/bulk `join`), its pairs written to the faces bucket (KMS).
      -> Decide (functions/bulk `decide`, reserved concurrency 1: one decider) <-> Decided?
         (Choice on `$.plan.done`): the rows registered in manifest order, each call from the
         plan's checkpoint (`next`) to the end of its chunk or until its time runs short.
      -> Finish (functions/bulk `decide` with {"finish": plan}): the job's objects deleted.

History: each Decide round is 7 events (the task's 5, the Choice's 2). 1M rows are 245 chunks
of 4,096; a call stops 60 s before its 900 s timeout, so at t seconds per row the rounds are
about 245 + 1e6 t / 840: under 25,000 events (3,500 rounds) for any t up to 2.7 s per row.
The two maps' child executions keep their own histories.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aws_cdk import CfnOutput, Duration
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from face_dedup import permissions, wiring
from face_dedup.bulk_keys import MANIFEST_NAME, MAX_ROWS, PARTS_PREFIX, UPLOAD_PREFIX
from face_dedup.deployment import FACES_PREFIX
from face_dedup_infra.constructs.functions import Functions
from face_dedup_infra.constructs.job_parts import (
    acknowledge_map_grants,
    logical_id,
    results_bucket,
    retried_invoke,
)
from face_dedup_infra.constructs.migration import MAX_CONCURRENCY_LIMIT

# A Lambda stopped at its timeout (the Decide call resumes from its checkpoint; a Join chunk is
# written whole or not at all): retried a few times, beside the transient errors.
TIMED_OUT = ["Sandbox.Timedout", "States.Timeout", "Lambda.Unknown"]
STEPS = (wiring.BULK_ANALYSE, wiring.BULK_PREPARE, wiring.BULK_JOIN, wiring.BULK_DECIDE)

MANIFEST_FORMAT = f"{UPLOAD_PREFIX}/{{}}/{{}}/{MANIFEST_NAME}"  # bulk/<tenant>/<batch>/manifest.csv
# The job objects each step writes, as names under _bulk/<tenant>/<job>/ (cloud_bulk.part_key,
# vectors_key; cloud_bulk_decide.gallery_key, candidates_key): analyse's vectors are what the
# join reads of them (tests/infra/test_bulk_import_job.py checks the names match).
JOB_OBJECTS = {
    "analyse": ("part-*.json", "vectors-*.npz"),
    "prepare": ("gallery*",),
    "join": ("candidates-*.npz",),
}


@dataclass(frozen=True)
class BulkImportOptions:
    enabled: bool = False
    max_concurrency: int = 10
    tolerated_failure_percent: float = 0.0  # a lost batch leaves a gap the ordered step refuses
    batch_size: int = 100  # manifest rows per item
    join_concurrency: int = 10  # chunks joined at a time (each reads every earlier part)

    def __post_init__(self) -> None:
        if not 1 <= self.max_concurrency <= MAX_CONCURRENCY_LIMIT:
            raise ValueError(
                f"face-dedup:bulk-import-max-concurrency must be 1..{MAX_CONCURRENCY_LIMIT} "
                f"(bounded: 0 would let Step Functions run every item at once), got {self.max_concurrency}"
            )
        if not 0 <= self.tolerated_failure_percent <= 100:
            raise ValueError("face-dedup:bulk-import-tolerated-failure-percent must be 0..100")
        if not 1 <= self.join_concurrency <= MAX_CONCURRENCY_LIMIT:
            raise ValueError(
                f"face-dedup:bulk-import-join-concurrency must be 1..{MAX_CONCURRENCY_LIMIT}, "
                f"got {self.join_concurrency}"
            )
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
            join_concurrency=int(value("-join-concurrency", cls.join_concurrency)),
        )


def add_bulk_functions(
    functions: Functions, options: BulkImportOptions, *, faces: s3.IBucket, uploads: s3.IBucket
) -> dict[str, Any]:
    """The job's four functions, each with exactly what its adapters' code performs. Called
    before the index setup is declared: the decide step reaches the index, so its role must be
    mapped in the domain's security plugin like every other. The analysis, prepare and join
    steps read and write the job's own objects only, each only those it does (the records'
    photos and crops are out of their reach; of the uploads bucket, only the batches)."""
    reserved = {
        # reserved concurrency: the job can never take more Lambda instances than it is given
        wiring.BULK_ANALYSE: options.max_concurrency,
        wiring.BULK_PREPARE: 1,
        wiring.BULK_JOIN: options.join_concurrency,
        wiring.BULK_DECIDE: 1,  # one decider: the rows are registered in order
    }
    built = {}
    for name in STEPS:
        spec = wiring.OPTIONAL_FUNCTIONS[name]
        found = permissions.needs(spec)
        built[name] = functions.add(spec, found | permissions.key_needs(found), reserved[name])

    # Each step may read and write only the job objects it does (an explicit deny on every
    # other object of both buckets): the analysis, which decodes hostile images, cannot
    # overwrite a job's gallery snapshot or pairs (decide trusts them to find duplicates),
    # nor the join a part.
    def job(*names: str) -> list[str]:
        return [faces.arn_for_objects(f"{FACES_PREFIX}{PARTS_PREFIX}/*/{name}") for name in names]

    batches = [uploads.arn_for_objects(f"{UPLOAD_PREFIX}/*")]
    reach = {
        wiring.BULK_ANALYSE: {"s3:GetObject": batches, "s3:PutObject": job(*JOB_OBJECTS["analyse"])},
        wiring.BULK_PREPARE: {"s3:GetObject": batches, "s3:PutObject": job(*JOB_OBJECTS["prepare"])},
        wiring.BULK_JOIN: {
            "s3:GetObject": job(*JOB_OBJECTS["analyse"][1:], *JOB_OBJECTS["prepare"]),
            "s3:PutObject": job(*JOB_OBJECTS["join"]),
        },
    }
    for name, by_action in reach.items():
        for action, allowed in by_action.items():
            functions.roles[name].add_to_policy(
                iam.PolicyStatement(effect=iam.Effect.DENY, actions=[action], not_resources=allowed)
            )
    return built


class BulkImportJob(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        options: BulkImportOptions,
        built: dict[str, Any],
        uploads: s3.IBucket,
        access_logs: s3.IBucket,
        key: kms.IKey,
    ) -> None:
        super().__init__(scope, construct_id)
        analyse = built[wiring.BULK_ANALYSE]

        self.results = results_bucket(
            self, key=key, access_logs=access_logs, logs_prefix="bulk-import-results/"
        )

        def invoke(
            name: str,
            function: Any,
            payload: sfn.TaskInput | None = None,
            result_path: str | None = None,
            timeouts: bool = False,
        ) -> tasks.LambdaInvoke:
            # every step's function has a reserved concurrency this job alone fills (decide: 1):
            # while another job's calls hold it, a call waits its turn instead of failing the job
            task = retried_invoke(self, name, function, payload, result_path, waits_for_slot=True)
            if timeouts:
                task.add_retry(
                    errors=TIMED_OUT, interval=Duration.seconds(10), backoff_rate=2, max_attempts=2
                )
            return task

        task = invoke("Analyse", analyse)
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
            # each child's output only (counts, row numbers, reason codes): the default (NONE)
            # also writes each child's input, the rows' file names and application ids
            result_writer_v2=sfn.ResultWriterV2(
                bucket=self.results,
                prefix="results",
                writer_config=sfn.WriterConfig(
                    output_type=sfn.OutputType.JSON, transformation=sfn.Transformation.COMPACT
                ),
            ),
            map_execution_type=sfn.StateMachineType.STANDARD,  # items of up to 10 minutes
            result_path="$.rows",
        )
        rows.item_processor(task)
        prepare = invoke(
            "Prepare",
            built[wiring.BULK_PREPARE],
            sfn.TaskInput.from_object({"tenant.$": "$.tenant", "batch.$": "$.batch", "job.$": "$.job"}),
            "$.plan",
        )
        join = sfn.DistributedMap(
            self,
            "Join",
            items_path="$.plan.chunks",
            item_selector={
                "tenant.$": "$.plan.tenant",
                "job.$": "$.plan.job",
                "first.$": "$$.Map.Item.Value.first",
                "last.$": "$$.Map.Item.Value.last",
            },
            max_concurrency=options.join_concurrency,
            tolerated_failure_percentage=0,  # a chunk not joined would leave rows undecidable
            map_execution_type=sfn.StateMachineType.STANDARD,  # chunks of up to 15 minutes
            result_path=sfn.JsonPath.DISCARD,  # counts only, in the children's histories
        )
        join.item_processor(invoke("JoinChunk", built[wiring.BULK_JOIN], timeouts=True))
        decide = invoke(
            "Decide",
            built[wiring.BULK_DECIDE],
            sfn.TaskInput.from_object({"plan.$": "$.plan"}),
            "$.plan",
            timeouts=True,  # resumed from the same checkpoint: decided rows are found, not redone
        )
        # every row decided: the job's objects (copies of templates and crops) are deleted
        finish = invoke(
            "Finish",
            built[wiring.BULK_DECIDE],
            sfn.TaskInput.from_object({"finish.$": "$.plan"}),
            sfn.JsonPath.DISCARD,
        ).next(sfn.Succeed(self, "Done"))
        decided = (
            sfn.Choice(self, "Decided")
            .when(sfn.Condition.boolean_equals("$.plan.done", True), finish)
            .otherwise(decide)
        )
        chain = plan.next(rows).next(prepare).next(join).next(decide).next(decided)
        log_group = logs.LogGroup(self, "Logs", retention=logs.RetentionDays.ONE_YEAR)
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            definition_body=sfn.DefinitionBody.from_chainable(chain),
            tracing_enabled=True,
            logs=sfn.LogOptions(destination=log_group, level=sfn.LogLevel.ALL, include_execution_data=False),
            timeout=Duration.days(7),
        )
        # the manifest is read (uploads bucket) and the result manifests written with the key
        key.grant_encrypt_decrypt(self.state_machine.role)
        self._acknowledge(built, uploads)
        CfnOutput(self, "StateMachineArn", value=self.state_machine.state_machine_arn)
        CfnOutput(self, "ResultsBucket", value=self.results.bucket_name)
        self.functions = built
        self.role: iam.IRole = self.state_machine.role

    def _acknowledge(self, built: dict[str, Any], uploads: s3.IBucket) -> None:
        """cdk-nag: CDK's own grants to the state machine (job_parts.acknowledge_map_grants),
        and the CSV item reader's read of the manifest."""
        acknowledge_map_grants(
            self.state_machine,
            invoked=list(built.values()),
            results=self.results,
            extra={
                f"IAM5[Resource::arn:<AWS::Partition>:s3:::<{logical_id(uploads)}>/*]": (
                    "The Distributed Map's CSV item reader reads the job's manifest; CDK grants its "
                    "GetObject on the bucket's objects (the key is the execution input's)."
                )
            },
        )

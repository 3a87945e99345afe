"""The model-pack migration job (optional: CDK context `face-dedup:migration=true`; README,
"Migrating between packs in the cloud").

A Step Functions state machine:

    Plan (Pass: the tenant's key prefix in the faces bucket)
      -> Records: Distributed Map, ItemReader = the S3 listing of that prefix (a record's photo
         and aligned crop), batched; each batch goes to the item processor
         (functions/migrate `handler`), at most `max_concurrency` at a time; items that fail
         (a record without a usable photo or crop, raised as `RecordsFailed` with record ids and
         reason codes) are tolerated up to `tolerated_failure_percent`, and every item's result,
         failures with their cause, is written to the results bucket (ResultWriter)
      -> FillShadowIndex (only with a shadow pack declared: functions/migrate `shadow_fill`,
         the shadow pack's own index := the templates the job kept in it)
      -> CutOver? (Choice on the input's `cutover`)
      -> Switch (functions/migrate `switch`: every record takes its target template as its own;
         refused, changing nothing, while any record lacks one).

Both functions are declared in face_dedup.wiring (OPTIONAL_FUNCTIONS) and built by `Functions`
like every other: their roles hold exactly what their adapters' code performs. Neither is in
the VPC: the job never touches the index (the new pack's index is filled by the reconcile
function once the stack runs the new pack).

Shadow mode (context `face-dedup:shadow-pack=<pack id>`, only with the job): `add_shadow_functions`
deploys `migrate_shadow` (the workflow's shadow step, DedupWorkflow), `migrate_shadow_fill` (a
state of this job) and `migrate_report` (invoked by hand). The first two reach the index, so they
run in the VPC, and the deploy-time index setup creates the shadow pack's own index beside the
active one (functions/index_setup).
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
from constructs import Construct

from face_dedup import permissions, wiring
from face_dedup.deployment import FACES_PREFIX
from face_dedup.models.registry import PACKS
from face_dedup_infra.constructs.functions import Functions
from face_dedup_infra.constructs.job_parts import acknowledge_map_grants, results_bucket, retried_invoke

# Step Functions' own ceiling for a Distributed Map's child executions at a time is 10,000;
# 0 would mean "as many as possible". The job's concurrency is bounded on purpose: each item
# processor holds one Lambda instance with the models loaded, and writes to the records table
# that live enrollments write to.
MAX_CONCURRENCY_LIMIT = 1000


@dataclass(frozen=True)
class MigrationOptions:
    enabled: bool = False
    max_concurrency: int = 10
    tolerated_failure_percent: float = 1.0
    batch_size: int = 50  # records' keys per item (each record lists its photo and its crop)
    # the migration's target pack run in shadow beside the active one ("" = no shadow mode)
    shadow_pack: str = ""

    def __post_init__(self) -> None:
        if self.shadow_pack and not self.enabled:
            raise ValueError(
                "face-dedup:shadow-pack needs face-dedup:migration=true: shadow mode runs the "
                "migration's target pack, whose templates only the migration job makes"
            )
        if self.shadow_pack and self.shadow_pack not in PACKS:
            raise ValueError(
                f"face-dedup:shadow-pack must be a shipped model pack ({', '.join(sorted(PACKS))}), "
                f"got {self.shadow_pack!r}"
            )
        if not 1 <= self.max_concurrency <= MAX_CONCURRENCY_LIMIT:
            raise ValueError(
                f"face-dedup:migration-max-concurrency must be 1..{MAX_CONCURRENCY_LIMIT} "
                f"(bounded: 0 would let Step Functions run every item at once), got {self.max_concurrency}"
            )
        if not 0 <= self.tolerated_failure_percent <= 100:
            raise ValueError("face-dedup:migration-tolerated-failure-percent must be 0..100")
        if not 1 <= self.batch_size <= 500:
            raise ValueError("face-dedup:migration-batch-size must be 1..500")

    @classmethod
    def from_context(cls, get: Any) -> MigrationOptions:
        def value(name: str, default: Any) -> Any:
            found = get(f"face-dedup:migration{name}")
            return default if found is None else found

        return cls(
            enabled=str(value("", "false")).lower() == "true",
            max_concurrency=int(value("-max-concurrency", cls.max_concurrency)),
            tolerated_failure_percent=float(
                value("-tolerated-failure-percent", cls.tolerated_failure_percent)
            ),
            batch_size=int(value("-batch-size", cls.batch_size)),
            shadow_pack=str(get("face-dedup:shadow-pack") or ""),
        )

    def shadow_for(self, active_pack: str) -> str:
        """The declared shadow pack ("" when none), refused when it is the active pack."""
        if self.shadow_pack and self.shadow_pack == active_pack:
            raise ValueError(
                f"face-dedup:shadow-pack {self.shadow_pack!r} is the active pack (face-dedup:model-pack): "
                "the shadow must be the migration's other pack"
            )
        return self.shadow_pack


SHADOW_STEPS = (wiring.MIGRATE_SHADOW, wiring.MIGRATE_SHADOW_FILL, wiring.MIGRATE_REPORT)


def add_shadow_functions(functions: Functions, *, index_concurrency: int) -> dict[str, Any]:
    """The shadow mode's three functions, each with exactly what its adapters' code performs.
    Called before the index setup is declared, so that the two that reach the index are mapped
    to their security-plugin roles and admitted by the domain's policy like every other."""
    reserved = {
        # one shadow search per workflow execution: bounded like the search step it follows
        wiring.MIGRATE_SHADOW: index_concurrency,
        wiring.MIGRATE_SHADOW_FILL: 1,  # one fill at a time (each run of the job)
        wiring.MIGRATE_REPORT: 1,
    }
    built = {}
    for name in SHADOW_STEPS:
        spec = wiring.OPTIONAL_FUNCTIONS[name]
        found = permissions.needs(spec)
        built[name] = functions.add(spec, found | permissions.key_needs(found), reserved[name])
    return built


class MigrationJob(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        options: MigrationOptions,
        functions: Functions,
        faces: s3.IBucket,
        access_logs: s3.IBucket,
        key: kms.IKey,
        shadow: dict[str, Any] | None = None,
        shadow_pack: str = "",
    ) -> None:
        super().__init__(scope, construct_id)
        built: dict[str, Any] = {}
        steps = (
            (wiring.MIGRATE, options.max_concurrency),
            (wiring.MIGRATE_SWITCH, 1),
            (wiring.MIGRATE_FINISH, 1),
        )
        for name, reserved in steps:
            spec = wiring.OPTIONAL_FUNCTIONS[name]
            found = permissions.needs(spec)
            # reserved concurrency: the job can never take more Lambda instances than it is given
            built[name] = functions.add(spec, found | permissions.key_needs(found), reserved)

        self.results = results_bucket(
            self, key=key, access_logs=access_logs, logs_prefix="migration-results/"
        )

        def invoke(name: str, function: Any, payload: sfn.TaskInput | None, result_path: str | None) -> Any:
            return retried_invoke(self, name, function, payload, result_path)

        # The faces bucket's keys are <s3_prefix><tenant>/<record id>/<photo|aligned.png>.
        plan = sfn.Pass(
            self,
            "Plan",
            parameters={
                "tenant.$": "$.tenant",
                "source_pack.$": "$.source_pack",
                "target_pack.$": "$.target_pack",
                "cutover.$": "$.cutover",
                "prefix.$": f"States.Format('{FACES_PREFIX}{{}}/', $.tenant)",
            },
        )
        records = sfn.DistributedMap(
            self,
            "Records",
            item_reader=sfn.S3ObjectsItemReader(bucket=faces, prefix=sfn.JsonPath.string_at("$.prefix")),
            item_selector={"key.$": "$$.Map.Item.Value.Key"},  # the key only: no sizes, no etags
            item_batcher=sfn.ItemBatcher(
                max_items_per_batch=options.batch_size,
                batch_input={"tenant.$": "$.tenant", "target_pack.$": "$.target_pack"},
            ),
            max_concurrency=options.max_concurrency,
            tolerated_failure_percentage=options.tolerated_failure_percent,
            result_writer_v2=sfn.ResultWriterV2(bucket=self.results, prefix="results"),
            # each child runs a Lambda item of up to 10 minutes: longer than an Express child's 5
            map_execution_type=sfn.StateMachineType.STANDARD,
            result_path="$.records",
        )
        records.item_processor(invoke("Reembed", built[wiring.MIGRATE], None, None))
        switch = invoke(
            "Switch",
            built[wiring.MIGRATE_SWITCH],
            sfn.TaskInput.from_object(
                {"tenant.$": "$.tenant", "source_pack.$": "$.source_pack", "target_pack.$": "$.target_pack"}
            ),
            "$.switch",
        )
        done = sfn.Succeed(self, "Done")
        cutover = (
            sfn.Choice(self, "CutOver")
            .when(sfn.Condition.boolean_equals("$.cutover", True), switch.next(done))
            .otherwise(done)
        )
        after_records: sfn.IChainable = cutover
        if shadow and shadow_pack:
            # the records just re-embedded enter the shadow pack's index before any cut-over:
            # the shadow searches (and, after a cut-over, the new pack) see the whole gallery
            fill = invoke(
                "FillShadowIndex",
                shadow[wiring.MIGRATE_SHADOW_FILL],
                sfn.TaskInput.from_object({"tenant.$": "$.tenant"}),
                "$.shadow_fill",
            )
            built[wiring.MIGRATE_SHADOW_FILL] = shadow[wiring.MIGRATE_SHADOW_FILL]
            # only a run into the deployed shadow pack fills its index (a run into another
            # pack, e.g. a rollback's, has nothing of the shadow's to add)
            after_records = (
                sfn.Choice(self, "IntoShadowPack")
                .when(sfn.Condition.string_equals("$.target_pack", shadow_pack), fill.next(cutover))
                .otherwise(cutover)
            )
        log_group = logs.LogGroup(self, "Logs", retention=logs.RetentionDays.ONE_YEAR)
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            definition_body=sfn.DefinitionBody.from_chainable(plan.next(records).next(after_records)),
            tracing_enabled=True,
            logs=sfn.LogOptions(destination=log_group, level=sfn.LogLevel.ALL, include_execution_data=False),
            timeout=Duration.days(7),
        )
        # the result manifests are written encrypted with the stack's key
        key.grant_encrypt_decrypt(self.state_machine.role)
        self._acknowledge(built)
        # what `aws stepfunctions start-execution --state-machine-arn` takes (README)
        CfnOutput(self, "StateMachineArn", value=self.state_machine.state_machine_arn)
        CfnOutput(self, "ResultsBucket", value=self.results.bucket_name)
        # invoked by hand once the migration is final (README): erases the old pack's templates
        CfnOutput(self, "FinishFunction", value=built[wiring.MIGRATE_FINISH].function_name)
        if shadow:  # invoked by hand: progress and the shadow's disagreements (README)
            CfnOutput(self, "ShadowReportFunction", value=shadow[wiring.MIGRATE_REPORT].function_name)
        self.functions = built
        self.role: iam.IRole = self.state_machine.role

    def _acknowledge(self, built: dict[str, Any]) -> None:
        """cdk-nag: CDK's own grants to the state machine (job_parts.acknowledge_map_grants)."""
        acknowledge_map_grants(
            self.state_machine,
            # the finish step is invoked by hand, not by the state machine
            invoked=[fn for step, fn in built.items() if step != wiring.MIGRATE_FINISH],
            results=self.results,
            extra={},
        )

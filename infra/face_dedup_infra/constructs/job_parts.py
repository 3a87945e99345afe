"""What the two Distributed Map jobs (migration.py, bulk_import.py) build the same way: their
KMS results bucket, a Lambda task retried on transient errors, and the cdk-nag
acknowledgements of CDK's own grants to a state machine that runs a Distributed Map.

Plain functions, not a construct: each creates its resources in the job's own scope under the
ids the jobs always used, so the synthesized logical ids (and the deployed buckets) are
unchanged."""

from __future__ import annotations

import json
from typing import Any

from aws_cdk import Acknowledgment, CfnResource, Duration, RemovalPolicy, Stack, Validations
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from face_dedup_infra.constructs.workflow import RETRY, TRANSIENT

# A throttled call of a one-at-a-time function: asked again after up to 5 minutes, for a day
# (each try is ~3 history events: 288 tries stay far below an execution's 25,000).
SLOT_WAIT_S = 300
SLOT_WAITS = 288
RESULTS_KEPT_DAYS = 90  # the jobs' result manifests: ids, row numbers and reason codes, nothing else


def results_bucket(
    scope: Construct, *, key: kms.IKey, access_logs: s3.IBucket, logs_prefix: str
) -> s3.Bucket:
    """The job's own results bucket ("Results" in `scope`): KMS, private, TLS only, versioned,
    access-logged, its result manifests kept RESULTS_KEPT_DAYS."""
    return s3.Bucket(
        scope,
        "Results",
        encryption=s3.BucketEncryption.KMS,
        encryption_key=key,
        bucket_key_enabled=True,
        block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
        enforce_ssl=True,
        versioned=True,
        server_access_logs_bucket=access_logs,
        server_access_logs_prefix=logs_prefix,
        lifecycle_rules=[
            s3.LifecycleRule(
                expiration=Duration.days(RESULTS_KEPT_DAYS),
                noncurrent_version_expiration=Duration.days(1),
            )
        ],
        removal_policy=RemovalPolicy.RETAIN,
    )


def retried_invoke(
    scope: Construct,
    name: str,
    function: Any,
    payload: sfn.TaskInput | None = None,
    result_path: str | None = None,
    *,
    waits_for_slot: bool = False,
) -> tasks.LambdaInvoke:
    """A Lambda task whose answer is the function's own, retried on the transient errors (the
    workflow's RETRY policy, full jitter) and on nothing else. `waits_for_slot`: a function of
    reserved concurrency 1 that another execution's call may hold for up to its 15 minutes is
    throttled meanwhile: it is asked again every few minutes for up to a day (SLOT_WAITS), not
    the transient policy's few tries, which end the execution within about 20 minutes."""
    task = tasks.LambdaInvoke(
        scope,
        name,
        lambda_function=function,
        payload=payload,
        payload_response_only=True,
        result_path=result_path,
        retry_on_service_exceptions=False,
    )
    if waits_for_slot:  # before the transient policy: the first retrier that matches applies
        task.add_retry(
            errors=["Lambda.TooManyRequestsException"],
            interval=Duration.seconds(SLOT_WAIT_S),
            backoff_rate=1,
            max_attempts=SLOT_WAITS,
            jitter_strategy=sfn.JitterType.FULL,
        )
    task.add_retry(
        errors=TRANSIENT,
        interval=Duration.seconds(RETRY["interval_s"]),
        backoff_rate=RETRY["backoff_rate"],
        max_attempts=int(RETRY["max_attempts"]),
        max_delay=Duration.seconds(RETRY["max_delay_s"]),
        jitter_strategy=sfn.JitterType.FULL,
    )
    return task


def acknowledge_map_grants(
    state_machine: sfn.StateMachine, *, invoked: list[Any], results: s3.IBucket, extra: dict[str, str]
) -> None:
    """The cdk-nag findings of CDK's own grants to a state machine with a Distributed Map,
    acknowledged on it with the reason each wildcard is bounded (as face_dedup_infra.nag does
    for the workflow): the functions it invokes, its results bucket, its child executions.
    `extra`: more findings, keyed by a template where `{logical}` is a construct's logical id
    (see `logical_id`)."""
    machine = logical_id(state_machine)
    name = json.dumps({"Fn::Select": [6, {"Fn::Split": [":", {"Ref": machine}]}]}, separators=(",", ":"))
    execution = f"arn:<AWS::Partition>:states:<AWS::Region>:<AWS::AccountId>:execution:{name}"
    found = {
        **{
            f"IAM5[Resource::<{logical_id(fn)}.Arn>:*]": "The job invokes this function (its versions too)."
            for fn in invoked
        },
        f"IAM5[Resource::arn:<AWS::Partition>:s3:::<{logical_id(results)}>/*]": (
            "The Distributed Map's result writer puts its manifests in the job's own results bucket."
        ),
        f"IAM5[Resource::{execution}:*]": (
            "The Distributed Map starts and stops child executions of this state machine only."
        ),
        f"IAM5[Resource::{execution}/*:*]": (
            "The Distributed Map's child executions of this state machine only."
        ),
        **extra,
    }
    for rule, reason in found.items():
        Validations.of(state_machine).acknowledge(
            Acknowledgment(id=f"AwsSolutions::AwsSolutions-{rule}", reason=reason)
        )


def logical_id(construct: Any) -> str:
    """A construct's CloudFormation logical id, as cdk-nag names it in a finding."""
    child = construct.node.default_child
    assert isinstance(child, CfnResource)
    return str(Stack.of(construct).resolve(child.logical_id))

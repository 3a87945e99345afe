from __future__ import annotations

from aws_cdk import Acknowledgment, CfnResource, Duration, Stack, Validations
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from face_dedup.outcomes import NO_CASE, OPENS_CASE, Outcome

TRANSIENT = [
    "TransientError",
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
    "Lambda.Unknown",
    "Sandbox.Timedout",  # the function ran past its own timeout
    "States.Timeout",
]
PERMANENT = "PermanentError"  # raised by functions/workflow/handler.py for non-transient errors
# Retried with full jitter for about 18 minutes (3 s, 7.5 s, ... capped at 5 minutes, 8 attempts):
# an overloaded cluster or throttled Lambda recovers within that, and jitter spreads the retries.
RETRY = {"interval_s": 3, "backoff_rate": 2.5, "max_attempts": 8, "max_delay_s": 300}
# The shadow step's own limit: a shadow search adds at most this to an enrollment's latency.
SHADOW_TIMEOUT_S = 30
OUTCOME = "$.search.result.outcome"  # StagedDecision.to_dict()'s outcome, as the search task returns it


def outcome_is_one_of(outcomes: tuple[Outcome, ...]) -> sfn.Condition:
    """A choice condition generated from the policy's outcome groups (face_dedup.outcomes), so
    the state machine cannot drift from what the search step can decide."""
    return sfn.Condition.or_(*(sfn.Condition.string_equals(OUTCOME, o.value) for o in outcomes))


class DedupWorkflow(Construct):
    """search -> decide (Choice on the outcome) -> enroll | open case -> notify officers.

    Transient failures (the index or store briefly unavailable) are retried with exponential
    backoff; anything else, or retries exhausted, goes to the failure path, which records the
    reason as a rejected item (nothing is lost) before the execution fails. Only ids and
    scores travel between states: templates stay in the store, faces in the bucket.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        search: lambda_.IFunction,
        complete: lambda_.IFunction,
        notify: lambda_.IFunction,
        record_failure: lambda_.IFunction,
        shadow: lambda_.IFunction | None = None,
    ) -> None:
        """`shadow`: the migration's shadow step (functions/migrate `shadow`), called between
        the search and the decision while a shadow pack is declared (README, "Migrating between
        packs in the cloud"); None leaves the state machine as it is without one."""
        super().__init__(scope, construct_id)

        def invoke(
            name: str, function: lambda_.IFunction, payload: dict[str, object], result_path: str
        ) -> tasks.LambdaInvoke:
            task = tasks.LambdaInvoke(
                self,
                name,
                lambda_function=function,
                payload=sfn.TaskInput.from_object(payload),
                result_selector={"result.$": "$.Payload"},
                result_path=result_path,
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
            return task

        failed = sfn.Fail(self, "Failed", cause="recorded as rejected with the reason", error="DedupFailed")
        record = invoke(
            "RecordFailure",
            record_failure,
            {"key.$": "$.key", "tenant.$": "$.tenant", "error.$": "$.error"},
            "$.failure",
        ).next(failed)

        search_task = invoke("Search", search, {"key.$": "$.key", "tenant.$": "$.tenant"}, "$.search")
        enroll = invoke(
            "Enroll", complete, {"tenant.$": "$.tenant", "decision.$": "$.search.result"}, "$.complete"
        )
        open_case = invoke(
            "OpenCase", complete, {"tenant.$": "$.tenant", "decision.$": "$.search.result"}, "$.complete"
        )
        notify_task = invoke(
            "NotifyOfficers",
            notify,
            {"tenant.$": "$.tenant", "case_id.$": "$.complete.result.case_id"},
            "$.notify",
        )
        # Only an error the handler classified as permanent (`PermanentError`: a bug, bad data)
        # takes the failure path and is recorded as a rejection. Anything else (transient causes
        # that outlast the retries, Lambda service errors, timeouts, crashes) is not caught: the
        # execution fails AT that task with its staged input intact, and
        # `aws stepfunctions redrive-execution` resumes it there once the cause is gone.
        for task in (search_task, enroll, open_case, notify_task):
            task.add_catch(record, errors=[PERMANENT], result_path="$.error")

        done = sfn.Succeed(self, "Done")
        decide = (
            sfn.Choice(self, "Decide")
            # enrolled, or verified (a photo matching its own application's face: nothing enrolled)
            .when(outcome_is_one_of(NO_CASE), enroll.next(done))
            # a case: opened, then its officers told (outcomes.case_to_notify's rule)
            .when(outcome_is_one_of(OPENS_CASE), open_case.next(notify_task).next(done))
            # decided before (a redelivered upload): its stored outcome, nothing to do
            .otherwise(sfn.Succeed(self, "AlreadyDecided"))
        )
        after_search: sfn.IChainable = decide
        if shadow is not None:
            after_search = self._shadow_step(shadow, decide)
        log_group = logs.LogGroup(self, "Logs", retention=logs.RetentionDays.ONE_YEAR)
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            definition_body=sfn.DefinitionBody.from_chainable(search_task.next(after_search)),
            tracing_enabled=True,
            # no execution data: inputs carry upload keys and application ids
            logs=sfn.LogOptions(destination=log_group, level=sfn.LogLevel.ALL, include_execution_data=False),
            # longer than every task's full retry schedule together (5 tasks x ~18 min of
            # retries + their attempts): the execution's own timeout must not cut retries short
            timeout=Duration.hours(2),
        )
        if shadow is not None:
            # CDK's invoke grant names the function's versions too (`<arn>:*`); cdk-nag's finding
            # acknowledged on this state machine only (face_dedup_infra.nag does the others)
            child = shadow.node.default_child
            assert isinstance(child, CfnResource)
            arn = f"<{Stack.of(self).resolve(child.logical_id)}.Arn>"
            Validations.of(self.state_machine).acknowledge(
                Acknowledgment(
                    id=f"AwsSolutions::AwsSolutions-IAM5[Resource::{arn}:*]",
                    reason="The workflow invokes the shadow step's function (its versions too).",
                )
            )

    def _shadow_step(self, shadow: lambda_.IFunction, decide: sfn.Choice) -> sfn.IChainable:
        """The search again in the shadow pack, deciding nothing: its result is discarded (the
        decision reads the search step's output, unchanged), it is not retried, it has a short
        timeout, and any failure at all (States.ALL: a timeout, a crash, a throttle) is caught
        and goes on to the decision as if the step had not run. A shadow failure can delay an
        enrollment by at most SHADOW_TIMEOUT_S, never block or change it. It runs before the
        decision because it reads the staged input, which completing the record removes."""
        step = tasks.LambdaInvoke(
            self,
            "Shadow",
            lambda_function=shadow,
            payload=sfn.TaskInput.from_object({"tenant.$": "$.tenant", "decision.$": "$.search.result"}),
            payload_response_only=True,
            result_path=sfn.JsonPath.DISCARD,
            retry_on_service_exceptions=False,
            task_timeout=sfn.Timeout.duration(Duration.seconds(SHADOW_TIMEOUT_S)),
        )
        step.add_catch(decide, errors=[sfn.Errors.ALL], result_path=sfn.JsonPath.DISCARD)
        return step.next(decide)

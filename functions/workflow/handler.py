"""The de-duplication workflow's tasks (Step Functions calls each as its own Lambda function,
with its own permissions): search, complete (enroll, or open a case), notify, and the failure
path. Each parses its input, calls the core once and returns plain ids: no template and no
face ever passes through the workflow, so none lands in execution histories.

Errors: `TransientError` (index or store briefly unavailable) propagates under that name,
which the state machine retries with jittered backoff; a transient cause that outlasts the
retries leaves the execution failed at its task, to be redriven. Every other exception is
raised as `PermanentError` (message: the original type only, nothing of the input), the one
error the state machine sends to the failure path, which records a rejection.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Callable
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from face_dedup.adapters.aws_errors import is_transient
from face_dedup.bootstrap import build_function
from face_dedup.errors import TransientError
from face_dedup.service import DedupService, StagedDecision
from face_dedup.settings import Settings

logger = Logger(service="face-dedup-workflow")
tracer = Tracer(service="face-dedup-workflow", auto_patch=False)  # see tests/infra/test_traces.py
metrics = Metrics(namespace="FaceDedup", service="workflow")


@cache
def _service(function: str) -> DedupService:
    """Each task is its own Lambda function: it builds only the ports face_dedup.wiring declares
    for it (search: index and store, read only; notify: the notification queue only; ...)."""
    return build_function(Settings.load(), function).service


class PermanentError(Exception):
    """Not worth retrying: the workflow records the input as rejected with this reason."""


Handler = Callable[[dict[str, Any], LambdaContext], dict[str, Any]]


def classified(task: Handler) -> Handler:
    @functools.wraps(task)
    def run(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        try:
            return task(event, context)
        except TransientError:
            raise
        except Exception as exc:
            # an AWS throttle, 5xx or dropped connection that outlasted the SDK's own retries
            # is retried by the state machine, never recorded as the applicant's rejection
            if is_transient(exc):
                raise TransientError(f"AWS unavailable: {type(exc).__name__}") from exc
            raise PermanentError(type(exc).__name__) from exc

    return run


def service_for(function: str, event: dict[str, Any]) -> DedupService:
    return _service(function).for_tenant(str(event["tenant"]))


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@classified
def search(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """{key, tenant} -> the decision: outcome, candidate ids and scores, thresholds."""
    decision = service_for("search", event).search_staged(str(event["key"]))
    logger.info("decided", outcome=decision.outcome.value, candidates=len(decision.candidates))
    return decision.to_dict()


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
@classified
def complete(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """{tenant, decision} -> enrolled, or a case opened (idempotent on retries)."""
    decision = StagedDecision.from_dict(event["decision"])
    item = service_for("complete", event).complete_staged(decision.key, decision, actor="workflow")
    metrics.add_metric(name=f"Outcome{item.outcome.value.capitalize()}", unit=MetricUnit.Count, value=1)
    return {"outcome": item.outcome.value, "record_id": item.record_id, "case_id": item.case_id}


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@classified
def notify(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """{tenant, case_id} -> officers told (case id and link only)."""
    service_for("notify", event).notify_case(str(event["case_id"]))
    return {"notified": event["case_id"]}


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def record_failure(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """{key, tenant, error: {Error, Cause}} -> a rejected item with the reason; nothing lost."""
    error = event.get("error") or {}
    reason = str(error.get("Error") or "unknown error")
    if reason == PermanentError.__name__:  # the original error's type, from Lambda's Cause
        with contextlib.suppress(ValueError, KeyError, TypeError):
            reason = str(json.loads(str(error.get("Cause")))["errorMessage"]) or reason
    item = service_for("record_failure", event).fail_staged(str(event["key"]), reason, actor="workflow")
    metrics.add_metric(name="WorkflowFailures", unit=MetricUnit.Count, value=1)
    logger.warning("workflow failed", error=reason)
    return {"outcome": item.outcome.value, "reason": item.reason}

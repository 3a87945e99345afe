"""The bulk de-duplication job's Lambda handlers (infra: constructs/bulk_import.py): `handler`,
the analysis map's item processor; `prepare`, `join` and `decide`, the second half
(face_dedup.cloud_bulk_decide).

Input, as the Distributed Map builds it from the manifest's rows:
    {"Items": [{"row": <manifest row>, "file": "...", "application_id": "..."}, ...],
     "BatchInput": {"tenant": "...", "batch": "...", "job": "..."}}
It analyses the rows' photos and writes them as one part of the job (face_dedup.cloud_bulk);
it returns counts and, per rejected row, its row number and reason code only.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from face_dedup import cloud_bulk_decide, wiring
from face_dedup.adapters.aws_errors import is_transient
from face_dedup.bootstrap import FunctionParts, build_function
from face_dedup.cloud_bulk import BadItem, RowsResult, analyse_rows
from face_dedup.errors import TransientError
from face_dedup.settings import Settings

logger = Logger(service="face-dedup-bulk")
tracer = Tracer(service="face-dedup-bulk", auto_patch=False)  # see tests/infra/test_traces.py


@cache
def _parts() -> FunctionParts:
    return build_function(Settings.load(), wiring.BULK_ANALYSE)


@cache
def _step(name: str) -> FunctionParts:
    return build_function(Settings.load(), name)


def _aws(call: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        return call()
    except Exception as exc:  # a throttle or 5xx past the SDK's retries: the state retries it
        if is_transient(exc):
            raise TransientError(f"AWS unavailable: {type(exc).__name__}") from exc
        raise


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def prepare(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """{"tenant", "batch", "job"} -> the plan: row count, gallery size, chunks, checkpoint."""
    parts = _step(wiring.BULK_PREPARE)
    plan = _aws(
        lambda: cloud_bulk_decide.prepare(
            service=parts.service,
            uploads=parts.uploads,
            parts=parts.service.blobs,
            tenant=event.get("tenant"),
            batch=event.get("batch"),
            job=event.get("job"),
        )
    )
    logger.info("prepared", rows=plan["total"], gallery=plan["gallery"], chunks=len(plan["chunks"]))
    return plan


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def join(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """{"tenant", "job", "first", "last"} (one map item) -> counts of the chunk's pairs."""
    parts = _step(wiring.BULK_JOIN)
    result = _aws(
        lambda: cloud_bulk_decide.join_chunk(
            parts=parts.service.blobs,
            tenant=event.get("tenant"),
            job=event.get("job"),
            first=event.get("first"),
            last=event.get("last"),
        )
    )
    logger.info("joined", **result)
    return result


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def decide(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """The plan -> the plan with its checkpoint (`next`, `indexed`) moved on, `done` once every
    row is decided, and this call's counts (outcomes, reason codes). {"finish": plan} once
    done: the job's objects deleted (cloud_bulk_decide.finish) -> {"removed": count}."""
    from face_dedup.vision.png import encode_png  # the kept crops (no engine here)

    parts = _step(wiring.BULK_DECIDE)
    if isinstance(event.get("finish"), dict):  # the loop is done: the job's own objects go
        finished = _aws(lambda: cloud_bulk_decide.finish(parts=parts.service.blobs, plan=event["finish"]))
        logger.info("finished", **finished)
        return finished
    plan = event.get("plan")
    if not isinstance(plan, dict):
        raise BadItem("the decide step's input has no plan object")
    result = _aws(
        lambda: cloud_bulk_decide.decide(
            service=parts.service,
            uploads=parts.uploads,
            parts=parts.service.blobs,
            plan=plan,
            remaining_ms=context.get_remaining_time_in_millis,
            crop_png=encode_png,
        )
    )
    logger.info("decided", next=result["next"], done=result["done"], **result.get("last_call", {}))
    # the plan's chunk list stays in the state's input; the loop carries the checkpoint only
    return {k: v for k, v in result.items() if k != "chunks"}


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    parts = _parts()
    batch = event.get("BatchInput")
    if not isinstance(batch, dict):
        raise BadItem("the item has no BatchInput object (tenant, batch, job)")
    items = event.get("Items")
    if not isinstance(items, list):
        raise BadItem("the item has no Items list")
    try:
        result = _analyse(parts, batch, items)
    except Exception as exc:  # a throttle or 5xx past the SDK's retries: the map retries it
        if is_transient(exc):
            raise TransientError(f"AWS unavailable: {type(exc).__name__}") from exc
        raise
    summary = result.as_dict()
    logger.info("analysed", rows=result.rows, analysed=result.analysed, rejected=len(result.rejected))
    return summary


def _analyse(parts: FunctionParts, batch: dict[str, Any], items: list[object]) -> RowsResult:
    return analyse_rows(
        service=parts.service,
        uploads=parts.uploads,
        parts=parts.service.blobs,
        tenant=batch.get("tenant"),  # validated there
        batch=batch.get("batch"),
        job=batch.get("job"),
        items=items,
    )

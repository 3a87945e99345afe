"""The bulk de-duplication job's item processor (infra: constructs/bulk_import.py).

Input, as the Distributed Map builds it from the manifest's rows:
    {"Items": [{"row": <manifest row>, "file": "...", "application_id": "..."}, ...],
     "BatchInput": {"tenant": "...", "batch": "...", "job": "..."}}
It analyses the rows' photos and writes them as one part of the job (face_dedup.cloud_bulk);
it returns counts and, per rejected row, its row number and reason code only.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from face_dedup import wiring
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

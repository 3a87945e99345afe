"""Scheduled (EventBridge Scheduler): for each tenant, make the index hold exactly the store's
templates (records without index entries are added, entries without records removed) and
report what was repaired as metrics. The functions never reconcile at cold start; this does."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from face_dedup.bootstrap import build_function
from face_dedup.identifiers import tenant as valid_tenant
from face_dedup.service import DedupService
from face_dedup.settings import Settings

logger = Logger(service="face-dedup-reconcile")
tracer = Tracer(service="face-dedup-reconcile", auto_patch=False)  # see tests/infra/test_traces.py
metrics = Metrics(namespace="FaceDedup", service="reconcile")


@lru_cache(maxsize=1)
def _service() -> DedupService:
    return build_function(Settings.load(), "reconcile").service


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """{tenants: [...]} (the schedule's input) -> per tenant {added, removed}."""
    results: dict[str, dict[str, int]] = {}
    for tenant in event.get("tenants") or []:
        repaired = _service().for_tenant(valid_tenant(str(tenant))).reconcile()
        results[str(tenant)] = repaired
        metrics.add_metric(name="IndexEntriesAdded", unit=MetricUnit.Count, value=repaired["added"])
        metrics.add_metric(name="IndexOrphansRemoved", unit=MetricUnit.Count, value=repaired["removed"])
    logger.info("reconciled", tenants=len(results))
    return {"tenants": results}

"""The model-pack migration job's Lambda functions (infra: constructs/migration.py).

`handler`: the Distributed Map's item processor. Input, as the map builds it:
    {"Items": [{"key": "<faces bucket key>"}, ...],
     "BatchInput": {"tenant": "...", "target_pack": "..."}}
It re-embeds the batch's records into the target pack (face_dedup.cloud_migration) and
returns counts. A record that could not be re-embedded fails the item with `RecordsFailed`,
whose cause lists record ids and reason codes only (the map's result writer keeps it).

`switch`: the cut-over (or roll-back) step: {"tenant", "source_pack", "target_pack"} -> every
record of the source pack takes its target template as its own (the old one kept beside it).
Refused, changing nothing, while a record lacks a target template.

`finish` (invoked directly, once the migration is final): {"tenant", "pack"} -> the old pack's
templates kept beside the records are erased.

`shadow` (shadow mode, while the deployment declares a shadow pack): {"tenant", "decision": the
search step's output} -> the same input searched in the shadow pack, deciding nothing; whether
the packs agree is audited (face_dedup.cloud_shadow; record ids only).

`shadow_fill` (invoked after each run of the job): {"tenant"} -> the shadow pack's own index
holds exactly the templates the job kept in that pack.

`report` (invoked directly): {"tenant", "shadow_pack"} -> the migration's progress and the
shadow's comparisons and disagreements, as `face-dedup migrate status` reports them locally.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from face_dedup import wiring
from face_dedup.adapters.aws_errors import is_transient
from face_dedup.bootstrap import FunctionParts, build_engine, build_function
from face_dedup.cloud_migration import BadItem, finish_pack, migrate_batch, record_ids_from_keys, switch_packs
from face_dedup.cloud_shadow import NotShadowed, compare, fill_index
from face_dedup.cloud_shadow import report as shadow_report
from face_dedup.deployment import env_name
from face_dedup.errors import ConfigError, TransientError
from face_dedup.identifiers import tenant as valid_tenant
from face_dedup.models.custom import find_pack
from face_dedup.service import StagedDecision
from face_dedup.settings import Settings
from face_dedup.vision.pipeline import FaceEngine

logger = Logger(service="face-dedup-migrate")
tracer = Tracer(service="face-dedup-migrate", auto_patch=False)  # see tests/infra/test_traces.py


class RecordsFailed(Exception):
    """Some records of the item could not be re-embedded; the message is JSON {record id: reason}."""


@cache
def _parts(function: str) -> tuple[Settings, FunctionParts]:
    settings = Settings.load()
    return settings, build_function(settings, function)


@cache
def _shadow_parts(function: str = wiring.MIGRATE_SHADOW) -> tuple[Settings, FunctionParts]:
    """The shadow steps are built for the SHADOW pack: its engine, calibration and index."""
    settings = Settings.load()
    if not settings.shadow_pack:
        raise ConfigError(f"no shadow pack declared ({env_name('shadow_pack')}): no migration under way")
    shadow = settings.with_overrides(model_pack=settings.shadow_pack, shadow_pack="")
    return settings, build_function(shadow, function)


@cache
def _engine(pack_id: str) -> FaceEngine:
    settings, _ = _parts("migrate")
    return build_engine(settings, find_pack(pack_id, settings.models_dir))


Step = Callable[[dict[str, Any], LambdaContext], dict[str, Any]]


def retried_when_transient(step: Step) -> Step:
    """An AWS throttle, 5xx or dropped connection that outlasted the SDK's own retries is raised
    as `TransientError`, which the state machine retries with backoff; anything else fails the
    item (or the cut-over) with its own error type."""

    @functools.wraps(step)
    def run(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        try:
            return step(event, context)
        except Exception as exc:
            if is_transient(exc):
                raise TransientError(f"AWS unavailable: {type(exc).__name__}") from exc
            raise

    return run


def _pack_id(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{what} is missing")
    return value


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@retried_when_transient
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings, parts = _parts("migrate")
    batch = event.get("BatchInput")
    if not isinstance(batch, dict):
        raise BadItem("the item has no BatchInput object (tenant, target_pack)")
    tenant = valid_tenant(batch.get("tenant"))
    target = find_pack(_pack_id(batch.get("target_pack"), "target_pack"), settings.models_dir)
    active = find_pack(settings.model_pack, settings.models_dir)
    keys = [item.get("key") if isinstance(item, dict) else item for item in event.get("Items") or []]
    record_ids = record_ids_from_keys(keys, s3_prefix=settings.s3_prefix, tenant=tenant)
    result = migrate_batch(
        store=parts.service.store,
        blobs=parts.service.blobs,
        analyzer=_engine(target.id),
        active_pack=active,
        target_pack=target,
        tenant=tenant,
        record_ids=record_ids,
    )
    summary = result.as_dict() | {"failed": len(result.failed)}
    logger.info("migrated", target=target.id, **summary)
    if result.failed:
        raise RecordsFailed(json.dumps(result.failed, sort_keys=True))
    return summary


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@retried_when_transient
def switch(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings, parts = _parts("migrate_switch")
    tenant = valid_tenant(event.get("tenant"))
    source = find_pack(_pack_id(event.get("source_pack"), "source_pack"), settings.models_dir).id
    target = find_pack(_pack_id(event.get("target_pack"), "target_pack"), settings.models_dir).id
    switched = switch_packs(parts.service.store, tenant=tenant, source=source, target=target)
    logger.info("switched", source=source, target=target, records=switched)
    return {"tenant": tenant, "active": target, "previous": source, "records": switched}


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@retried_when_transient
def finish(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """{"tenant", "pack"} -> erase every template of `pack` kept beside the records (after a
    cut-over, the old pack's; no rollback after this). Refused while the deployment runs that
    pack or any record of the tenant still has it as its own."""
    settings, parts = _parts("migrate_finish")
    tenant = valid_tenant(event.get("tenant"))
    pack = find_pack(_pack_id(event.get("pack"), "pack"), settings.models_dir).id
    erased = finish_pack(parts.service.store, tenant=tenant, pack=pack, active_pack=settings.model_pack)
    logger.info("finished", erased_pack=pack, templates=erased)
    return {"tenant": tenant, "erased_pack": pack, "templates_erased": erased}


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@retried_when_transient
def shadow(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """{"tenant", "decision"} -> the shadow pack's comparison (audited), or why there is none."""
    settings, parts = _shadow_parts()
    tenant = valid_tenant(event.get("tenant"))
    decision = event.get("decision")
    if not isinstance(decision, dict):
        raise BadItem("the event has no decision object (the search step's output)")
    active = find_pack(settings.model_pack, settings.models_dir)
    try:
        details = compare(
            parts.service.for_tenant(tenant), active, StagedDecision.from_dict(decision), actor="migration"
        )
    except NotShadowed as exc:
        logger.info("not shadowed", reason=str(exc))
        return {"compared": False, "reason": str(exc)}
    logger.info("shadowed", agree=details["agree"], shadow_pack=details["model_pack"])
    return {"compared": True, "agree": details["agree"], "shadow_outcome": details["shadow_outcome"]}


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@retried_when_transient
def report(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """{"tenant", "shadow_pack"} -> progress and the shadow's disagreements (record ids only)."""
    settings, parts = _parts(wiring.MIGRATE_REPORT)
    tenant = valid_tenant(event.get("tenant"))
    pack = find_pack(_pack_id(event.get("shadow_pack"), "shadow_pack"), settings.models_dir).id
    return shadow_report(parts.service.for_tenant(tenant), pack)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@retried_when_transient
def shadow_fill(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """{"tenant"} -> the shadow pack's index filled from the templates the job kept."""
    settings, parts = _shadow_parts(wiring.MIGRATE_SHADOW_FILL)
    tenant = valid_tenant(event.get("tenant"))
    done = fill_index(parts.service.for_tenant(tenant))
    logger.info(
        "shadow index filled", shadow_pack=settings.shadow_pack, added=done["added"], removed=done["removed"]
    )
    return {"tenant": tenant, "shadow_pack": settings.shadow_pack, **done}

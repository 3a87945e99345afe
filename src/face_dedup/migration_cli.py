"""`face-dedup migrate`: move a registry to another model pack without stopping it (see
face_dedup.migration for the steps and why each is safe to interrupt)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from face_dedup import cli_common, migration
from face_dedup.ports import RecordStore

migrate_app = typer.Typer(
    help="Move a registry to another model pack: start, run, status, cutover, rollback, finish.",
    no_args_is_help=True,
)

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Registry folder.", show_default=False)]
ModelsDir = Annotated[Path | None, typer.Option("--models-dir", help="Model cache.", show_default=False)]
Tenant = Annotated[str | None, typer.Option("--tenant", help="Registry partition.", show_default=False)]
Json = Annotated[bool, typer.Option("--json", help="Machine-readable output (JSON).")]


def _service(data_dir: Path | None, models_dir: Path | None, tenant: str | None) -> Any:
    from face_dedup.bootstrap import build_service

    settings = cli_common._run(lambda: cli_common._settings(data_dir, models_dir, tenant))
    if settings.store_backend == "dynamodb":
        # the cloud registry's packs come from its deployment, not packs.json: its migration is
        # the Step Functions job (README, "In the cloud: the migration job")
        cli_common.err.print(
            "error: a cloud registry migrates with its migration job (README: migrating, in the cloud)"
        )
        raise typer.Exit(1)
    # No engine (nothing is decided here) and no reconcile: an interrupted cut-over is finished
    # by running it again, which a reconcile in between would make harder.
    service, adapters = cli_common._run(lambda: build_service(settings, with_engine=False, reconcile=False))
    if type(adapters.store).switch_pack is RecordStore.switch_pack:
        adapters.close()
        cli_common.err.print(
            f"error: the {settings.store_backend} store cannot migrate between packs yet (local SQLite can)"
        )
        raise typer.Exit(1)
    # the service's settings: the pack the registry's templates are in (bootstrap's pack guard)
    return service.settings, service, adapters


def _show(as_json: bool, payload: dict[str, Any]) -> None:

    cli_common._emit(as_json, payload, lambda: cli_common.out.print(payload, highlight=False))


@migrate_app.command("start")
def start(
    to: Annotated[str, typer.Option("--to", help="The pack to move to (shipped, or added and calibrated).")],
    data_dir: DataDir = None,
    models_dir: ModelsDir = None,
    tenant: Tenant = None,
    as_json: Json = False,
) -> None:
    """Make PACK the shadow pack: every new input is also searched in it (deciding nothing)."""
    from face_dedup.bootstrap import load_tail
    from face_dedup.errors import ConfigError
    from face_dedup.models.custom import find_pack

    settings, service, adapters = _service(data_dir, models_dir, tenant)
    try:

        def begin() -> dict[str, Any]:
            if settings.shadow_pack and settings.shadow_pack != to:
                raise ConfigError(f"a migration to {settings.shadow_pack} is under way: finish it first")
            if to == settings.model_pack:
                raise ConfigError(f"{to} is already the active pack")
            load_tail(settings, find_pack(to, settings.models_dir))  # calibrated, or refused here
            migration.write_packs(settings.data_dir, settings.tenant, settings.model_pack, to)
            service.record_event(
                "migration.started", cli_common._actor(), source=settings.model_pack, target=to
            )
            return {"active": settings.model_pack, "shadow": to, "next": "face-dedup migrate run"}

        _show(as_json, cli_common._run(begin))
    finally:
        adapters.close()


@migrate_app.command("run")
def run(
    rate: Annotated[float, typer.Option(help="At most this many records per second (0: no limit).")] = 0.0,
    limit: Annotated[int | None, typer.Option(help="Stop after this many records.")] = None,
    data_dir: DataDir = None,
    models_dir: ModelsDir = None,
    tenant: Tenant = None,
    as_json: Json = False,
) -> None:
    """Re-embed every record into the shadow pack from its stored crop or photo. Resumable:
    stop it at any time (even kill -9) and run it again; done records are skipped."""
    from face_dedup.bootstrap import build_engine
    from face_dedup.errors import ConfigError
    from face_dedup.models.custom import find_pack

    settings, service, adapters = _service(data_dir, models_dir, tenant)
    try:

        def engines() -> tuple[Any, Any]:
            if not settings.shadow_pack:
                raise ConfigError("no migration under way: `face-dedup migrate start --to PACK` first")
            target = build_engine(settings, find_pack(settings.shadow_pack, settings.models_dir))
            return target, find_pack(settings.model_pack, settings.models_dir)

        engine, active = cli_common._run(engines)

        def progress(done: int, total: int) -> None:  # one line each: a log, or a pipe, reads it
            sys.stderr.write(f"migrated {done}/{total}\n")
            sys.stderr.flush()

        result = cli_common._run(
            lambda: migration.run(service, engine, active, rate=rate, limit=limit, progress=progress)
        )
        _show(as_json, result.as_dict())
    finally:
        adapters.close()


@migrate_app.command("status")
def status(
    data_dir: DataDir = None, models_dir: ModelsDir = None, tenant: Tenant = None, as_json: Json = False
) -> None:
    """Records migrated, and shadow mode's comparisons and disagreements."""
    settings, service, adapters = _service(data_dir, models_dir, tenant)
    try:
        _show(as_json, migration.status(service, settings.shadow_pack))
    finally:
        adapters.close()


def _switch(
    action: str, data_dir: Path | None, models_dir: Path | None, tenant: str | None, as_json: bool
) -> None:

    settings, service, adapters = _service(data_dir, models_dir, tenant)
    try:
        _show(as_json, cli_common._run(lambda: migration.switch(service, settings, action=action)))
    finally:
        adapters.close()


@migrate_app.command("cutover")
def cutover(
    data_dir: DataDir = None, models_dir: ModelsDir = None, tenant: Tenant = None, as_json: Json = False
) -> None:
    """Decide with the shadow pack from now on (the old one stays the shadow, for a rollback)."""
    _switch("cutover", data_dir, models_dir, tenant, as_json)


@migrate_app.command("rollback")
def rollback(
    data_dir: DataDir = None, models_dir: ModelsDir = None, tenant: Tenant = None, as_json: Json = False
) -> None:
    """Go back to the previous pack (run `migrate run` first if it says records are missing)."""
    _switch("rollback", data_dir, models_dir, tenant, as_json)


@migrate_app.command("finish")
def finish(
    data_dir: DataDir = None, models_dir: ModelsDir = None, tenant: Tenant = None, as_json: Json = False
) -> None:
    """End the migration: erase every template of the shadow pack; no rollback after this."""

    settings, service, adapters = _service(data_dir, models_dir, tenant)
    try:
        _show(as_json, cli_common._run(lambda: migration.finish(service, settings, cli_common._actor())))
    finally:
        adapters.close()

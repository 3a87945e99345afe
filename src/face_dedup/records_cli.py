"""`face-dedup records`: a record's later photos (several templates per record, see
face_dedup.record_templates for the rules and add_template for the use case)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from face_dedup import cli_common

records_app = typer.Typer(help="Enrolled records: add a later, verified photo.", no_args_is_help=True)

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Registry folder.", show_default=False)]
ModelsDir = Annotated[Path | None, typer.Option("--models-dir", help="Model cache.", show_default=False)]
Tenant = Annotated[str | None, typer.Option("--tenant", help="Registry partition.", show_default=False)]
Json = Annotated[bool, typer.Option("--json", help="Machine-readable output (JSON).")]


def _captured(value: str | None) -> str | None:
    """An ISO 8601 date or time, normalised; anything else is refused (a clear usage error)."""
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value).isoformat()
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not an ISO 8601 date (e.g. 2026-11-30)") from None


@records_app.command("add-photo")
def add_photo_command(
    record: Annotated[str, typer.Option("--record", help="The enrolled record's id.")],
    photo: Annotated[Path, typer.Option("--photo", help="The later photo of the same person.")],
    by: Annotated[str, typer.Option("--by", help="Who adds it (an officer or supervisor).")],
    role: Annotated[str, typer.Option("--role", help="officer or supervisor.")] = "officer",
    source: Annotated[str, typer.Option("--source", help="verified (a 1:1 check) or renewal.")] = "verified",
    captured_at: Annotated[str | None, typer.Option("--captured-at", help="When it was taken (ISO).")] = None,
    data_dir: DataDir = None,
    models_dir: ModelsDir = None,
    tenant: Tenant = None,
    as_json: Json = False,
) -> None:
    """Add a later photo to an enrolled record as one more template: only when it matches the
    record 1:1 at the verify threshold, reaches the quality floor and matches no other record.
    When the record is full, its oldest later photo is replaced (never the enrollment photo).
    Audited without any biometric data."""
    from face_dedup.add_template import TemplateAdded, add_photo
    from face_dedup.domain import Actor, Role
    from face_dedup.importer import read_input
    from face_dedup.record_templates import TemplateRefused, TemplateSource

    if role not in (Role.OFFICER.value, Role.SUPERVISOR.value):
        raise typer.BadParameter("--role must be officer or supervisor")
    if source not in (TemplateSource.VERIFIED.value, TemplateSource.RENEWAL.value):
        raise typer.BadParameter("--source must be verified or renewal")
    when = _captured(captured_at)
    actor = cli_common._run(lambda: Actor(by, Role(role)))
    settings = cli_common._settings(data_dir, models_dir, tenant)
    data = read_input(photo, settings.decode.max_bytes)
    if not isinstance(data, bytes):
        cli_common.err.print(f"error: {photo.name}: {data.message}", highlight=False, markup=False)
        raise typer.Exit(1)

    def attempt(service: Any) -> TemplateAdded | TemplateRefused:
        try:
            return add_photo(service, record, data, actor, source=TemplateSource(source), captured_at=when)
        except TemplateRefused as refused:  # its reason code goes out too, not only the message
            return refused

    with cli_common._opened(settings) as service:
        added = cli_common._run(lambda: attempt(service))
    if isinstance(added, TemplateRefused):
        refusal = {"added": False, "reason": added.reason, "message": added.message}
        cli_common._emit(
            as_json,
            refusal,
            lambda: cli_common.err.print(f"refused: {refusal['message']}", highlight=False, markup=False),
        )
        raise typer.Exit(1)
    payload = {"added": True, **added.as_dict()}
    cli_common._emit(
        as_json,
        payload,
        lambda: cli_common.out.print(
            f"added template {added.number} to {added.record_id} ({added.template_count} held"
            + (f", replaced template {added.replaced}" if added.replaced else "")
            + ")",
            highlight=False,
            markup=False,
        ),
    )

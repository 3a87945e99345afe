"""Uploads arriving in object storage: which channel, which tenant, which application, and
what happens next (stage the template, start the de-duplication workflow).

Key layout of the uploads bucket (the only contract with uploaders):
- `selfies/<tenant>/<application_id>/<any name>`: one person's selfie (mobile channel).
- `imports/<tenant>/<batch>/<file>`, with `imports/<tenant>/<batch>/manifest.csv`
  (`file,application_id[,...]`): a registry's batch. The manifest itself is not an input.
Keys arrive URL-encoded in S3 events; callers pass them decoded.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any

from face_dedup.domain import ImportItem, Outcome, utc_now
from face_dedup.errors import BlobTooLarge, NotFound, Reason
from face_dedup.outcomes import case_to_notify
from face_dedup.ports import BlobStore, WorkflowStarter
from face_dedup.service import DedupService, InputRef, StagedDecision

MANIFEST_NAME = "manifest.csv"


@dataclass(frozen=True)
class Route:
    channel: str  # "selfie" | "import"
    tenant: str
    application_id: str | None
    manifest_key: str | None = None
    file_name: str = ""


@dataclass(frozen=True)
class IngestOutcome:
    key: str
    status: str  # "started" (workflow running) | "final" (decided or rejected now) | "ignored"
    detail: str = ""
    item: ImportItem | None = None


def route(key: str) -> Route | None:
    """The upload's channel, or None for objects that are not inputs (manifests, unknown paths)."""
    parts = key.split("/")
    if len(parts) == 4 and parts[0] == "selfies" and all(parts[1:]):
        return Route("selfie", parts[1], parts[2], file_name=parts[3])
    if len(parts) == 4 and parts[0] == "imports" and all(parts[1:]) and parts[3] != MANIFEST_NAME:
        manifest = "/".join([*parts[:3], MANIFEST_NAME])
        return Route("import", parts[1], None, manifest_key=manifest, file_name=parts[3])
    return None


def execution_name(key: str) -> str:
    """Step Functions names are at most 80 characters of [A-Za-z0-9-_]; the idempotency key is."""
    return key.replace("imp_", "dedup-")[:80]


class Ingestor:
    def __init__(self, service: DedupService, uploads: BlobStore, workflow: WorkflowStarter) -> None:
        self._service = service
        self._uploads = uploads
        self._workflow = workflow

    @property
    def service(self) -> DedupService:
        return self._service

    def ingest(self, key: str) -> IngestOutcome:
        where = route(key)
        if where is None:
            return IngestOutcome(key, "ignored", "not an input (manifest or unknown prefix)")
        service = self._service.for_tenant(where.tenant)
        application_id = where.application_id
        if where.channel == "import":
            application_id = self._application_from_manifest(where)
            if application_id is None:
                # Not losing it: a rejected item with its reason, visible in reports and audit.
                message = f"no application id for {where.file_name} in {where.manifest_key}"
                rejected = self._reject(service, key, where, Reason.UNREADABLE, message, "no manifest row")
                return IngestOutcome(key, "final", "no manifest row", rejected)
        try:  # the photo size limit before its bytes are held (a ranged read on S3)
            data = self._uploads.get_limited(key, service.config.max_input_bytes)
        except NotFound:
            return IngestOutcome(key, "ignored", "the object is gone (deleted after the event)")
        except BlobTooLarge as exc:
            rejected = self._reject(service, key, where, Reason.TOO_LARGE, exc.message)
            return IngestOutcome(key, "final", "too large", rejected)
        staged = service.stage(data, InputRef(key, application_id), actor=f"upload:{where.channel}")
        if staged.item is not None:
            return IngestOutcome(key, "final", staged.item.outcome.value, staged.item)
        execution = self._workflow.start(
            execution_name(staged.key), {"key": staged.key, "tenant": where.tenant, "channel": where.channel}
        )
        return IngestOutcome(key, "started", execution)

    def _application_from_manifest(self, where: Route) -> str | None:
        assert where.manifest_key is not None
        try:
            text = self._uploads.get(where.manifest_key).decode("utf-8-sig")
        except (NotFound, UnicodeDecodeError):
            return None
        for row in csv.DictReader(io.StringIO(text)):
            if (row.get("file") or "").strip() == where.file_name:
                return (row.get("application_id") or "").strip() or None
        return None

    @staticmethod
    def _reject(
        service: DedupService, key: str, where: Route, reason: Reason, message: str, detail: str = ""
    ) -> ImportItem:
        item = ImportItem(
            key="",
            tenant=where.tenant,
            source=key,
            application_id=None,
            content_sha256="",
            outcome=Outcome.REJECTED,
            created_at=utc_now(),
            reason=reason.value,
            message=message,
        )
        service.record_event(
            "import.rejected", f"upload:{where.channel}", reason=reason.value, detail=detail or reason.value
        )
        return item


class InlineWorkflow(WorkflowStarter):
    """Runs the workflow's steps in-process, in order (one machine; tests)."""

    def __init__(self, service: DedupService) -> None:
        self._service = service
        self.started: dict[str, ImportItem] = {}

    def start(self, name: str, payload: dict[str, Any]) -> str:
        if name not in self.started:
            service = self._service.for_tenant(str(payload["tenant"]))
            decision: StagedDecision = service.search_staged(str(payload["key"]))
            item = service.complete_staged(decision.key, decision)
            if (case_id := case_to_notify(item.outcome, item.case_id)) is not None:
                service.notify_case(case_id)
            self.started[name] = item
        return name

"""Ingest reads an upload through the blob port's size-limited read: an object over the photo
size limit is rejected (TOO_LARGE, audited) without its bytes being held, and nothing is staged
or started; one within the limit goes on as before."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from face_dedup.adapters.local_blobs import LocalBlobStore
from face_dedup.bootstrap import build_service
from face_dedup.errors import Reason
from face_dedup.ingest import Ingestor
from face_dedup.models.custom import find_pack
from face_dedup.ports import WorkflowStarter
from face_dedup.settings import Settings
from tests.support.fake_face_analyzer import FakeFaceAnalyzer, unit

LIMIT = 4096


class _Recorded(WorkflowStarter):
    def __init__(self) -> None:
        self.started: list[str] = []

    def start(self, name: str, payload: dict[str, Any]) -> str:
        self.started.append(name)
        return name


def test_an_upload_over_the_limit_is_rejected_unread(tmp_path: Path) -> None:
    settings = Settings.load(
        {"FACE_DEDUP_DECODE_MAX_BYTES": str(LIMIT)}, data_dir=tmp_path / "data", models_dir=tmp_path / "none"
    )
    fake = FakeFaceAnalyzer(find_pack(settings.model_pack, settings.models_dir))
    service, adapters = build_service(settings, analyzer=fake)
    assert service.config.max_input_bytes == LIMIT
    uploads = LocalBlobStore(tmp_path / "uploads")
    workflow = _Recorded()
    ingestor = Ingestor(service, uploads, workflow)
    big = fake.face(b"B" * (LIMIT + 1), unit(fake.dim, 1))
    uploads.put("selfies/t1/APP-1/big.jpg", big, "image/jpeg")
    small = fake.face(b"s" * 100, unit(fake.dim, 2))
    uploads.put("selfies/t1/APP-2/small.jpg", small, "image/jpeg")

    outcome = ingestor.ingest("selfies/t1/APP-1/big.jpg")
    assert outcome.status == "final" and outcome.item is not None
    assert outcome.item.reason == Reason.TOO_LARGE.value and str(LIMIT) in (outcome.item.message or "")
    assert fake.calls == 0 and workflow.started == []  # never analysed, nothing started
    audited = [e for e in service.store.audit_events(tenant="t1") if e.action == "import.rejected"]
    assert [e.details.get("reason") for e in audited] == [Reason.TOO_LARGE.value]

    assert ingestor.ingest("selfies/t1/APP-2/small.jpg").status == "started"
    assert fake.calls == 1 and len(workflow.started) == 1
    adapters.close()

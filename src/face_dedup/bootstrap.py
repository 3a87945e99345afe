"""Composition root: builds every adapter and the service from settings. Swapping an adapter
is a setting here, never a code fork elsewhere."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from face_dedup.adapters.embedded_index import ExactVectorIndex
from face_dedup.adapters.local_blobs import LocalBlobStore
from face_dedup.adapters.outbox import OutboxNotifier
from face_dedup.adapters.sqlite_store import SqliteRecordStore
from face_dedup.calibration import ImpostorTail
from face_dedup.errors import ConfigError, ModelError
from face_dedup.models.registry import ModelPack, get_pack, verified_path
from face_dedup.ports import BlobStore, Notifier, RecordStore, VectorIndex
from face_dedup.service import DedupService
from face_dedup.settings import Settings
from face_dedup.vision.detect import YuNetDetector
from face_dedup.vision.embed import SFaceEmbedder, create_session
from face_dedup.vision.pipeline import FaceEngine


def build_engine(settings: Settings, pack: ModelPack | None = None, threads: int = 1) -> FaceEngine:
    pack = pack or get_pack(settings.model_pack)
    detector = YuNetDetector(verified_path(settings.models_dir, pack, pack.detector))
    session = create_session(verified_path(settings.models_dir, pack, pack.embedder), threads=threads)
    embedder = SFaceEmbedder(session, pack.contract)
    return FaceEngine(pack, detector, embedder, settings.quality, settings.decode)


def calibration_path(settings: Settings, pack_id: str) -> Path:
    """Where `calibrate --save` puts a registry's own calibration (preferred when present)."""
    return settings.data_dir / "calibration" / f"{pack_id}.json"


def load_tail(settings: Settings, pack: ModelPack) -> ImpostorTail:
    own = calibration_path(settings, pack.id)
    if own.is_file():
        tail = ImpostorTail.load(own)
    else:
        packaged = resources.files("face_dedup.models").joinpath(pack.calibration)
        if not packaged.is_file():
            raise ModelError(f"model pack {pack.id} ships no calibration ({pack.calibration})")
        tail = ImpostorTail.from_json(packaged.read_text(encoding="utf-8"))
    if tail.model_pack != pack.id:
        raise ConfigError(f"{own} is a calibration of {tail.model_pack}, not of {pack.id}")
    return tail


@dataclass
class Adapters:
    index: VectorIndex
    store: RecordStore
    blobs: BlobStore
    notifier: Notifier

    def close(self) -> None:
        self.index.close()
        self.store.close()


def build_adapters(settings: Settings) -> Adapters:
    data = settings.data_dir
    data.mkdir(parents=True, exist_ok=True, mode=0o700)
    if settings.index_backend != "embedded":
        raise ConfigError(f"unknown index backend {settings.index_backend!r} (available: embedded)")
    if settings.store_backend != "sqlite":
        raise ConfigError(f"unknown store backend {settings.store_backend!r} (available: sqlite)")
    if settings.blob_backend != "local":
        raise ConfigError(f"unknown blob backend {settings.blob_backend!r} (available: local)")
    if settings.notifier_backend != "outbox":
        raise ConfigError(f"unknown notifier backend {settings.notifier_backend!r} (available: outbox)")
    return Adapters(
        index=ExactVectorIndex(data / "index.sqlite"),
        store=SqliteRecordStore(data / "registry.sqlite"),
        blobs=LocalBlobStore(data / "blobs"),
        notifier=OutboxNotifier(data / "outbox" / "notifications.jsonl"),
    )


def build_service(settings: Settings, *, threads: int = 1) -> tuple[DedupService, Adapters]:
    pack = get_pack(settings.model_pack)
    engine = build_engine(settings, pack, threads=threads)
    tail = load_tail(settings, pack)
    adapters = build_adapters(settings)
    service = DedupService(
        settings, engine, adapters.index, adapters.store, adapters.blobs, adapters.notifier, tail
    )
    service.reconcile()
    return service, adapters

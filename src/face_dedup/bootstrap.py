"""Composition root: builds every adapter and the service from settings. Swapping an adapter
is a setting here, never a code fork elsewhere."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from face_dedup.adapters.embedded_index import ExactVectorIndex
from face_dedup.adapters.local_blobs import LocalBlobStore
from face_dedup.adapters.outbox import OutboxNotifier
from face_dedup.adapters.sqlite_store import SqliteRecordStore
from face_dedup.calibration import ImpostorTail
from face_dedup.errors import ConfigError, ModelError
from face_dedup.ingest import Ingestor, StepFunctionsStarter
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


def _require(settings: Settings, *names: str) -> None:
    missing = [n for n in names if not getattr(settings, n)]
    if missing:
        raise ConfigError("missing settings: " + ", ".join(f"FACE_DEDUP_{n.upper()}" for n in missing))


def client_for(settings: Settings, service: str) -> Any:
    import boto3  # the `aws` extra; only the AWS adapters need it
    from botocore.config import Config

    return boto3.client(
        service,
        region_name=settings.aws_region or None,
        endpoint_url=settings.aws_endpoint_url or None,
        # adaptive retries absorb throttling before it becomes a workflow retry
        config=Config(retries={"mode": "adaptive", "max_attempts": 5}, connect_timeout=5, read_timeout=30),
    )


def _opensearch_client(settings: Settings) -> Any:
    from opensearchpy import AWSV4SignerAuth, OpenSearch, RequestsHttpConnection

    _require(settings, "opensearch_url")
    if settings.opensearch_auth == "none":
        return OpenSearch(hosts=[settings.opensearch_url])
    import boto3

    service = {"sigv4": "es", "sigv4-serverless": "aoss"}.get(settings.opensearch_auth)
    if service is None:
        raise ConfigError(f"unknown opensearch_auth {settings.opensearch_auth!r}")
    credentials = boto3.Session().get_credentials()
    return OpenSearch(
        hosts=[settings.opensearch_url],
        http_auth=AWSV4SignerAuth(credentials, settings.aws_region, service),
        use_ssl=True,
        verify_certs=True,
        connection_class=RequestsHttpConnection,
        timeout=10,
    )


def build_adapters(settings: Settings) -> Adapters:
    """Each port's adapter, as the settings name it. Clients are created here, once."""
    data = settings.data_dir
    if (
        "embedded" in settings.index_backend
        or settings.store_backend == "sqlite"
        or settings.blob_backend == "local"
    ):
        data.mkdir(parents=True, exist_ok=True, mode=0o700)
    index: VectorIndex
    if settings.index_backend == "embedded":
        index = ExactVectorIndex(data / "index.sqlite")
    elif settings.index_backend == "opensearch":
        from face_dedup.adapters.opensearch_index import OpenSearchVectorIndex

        dim = get_pack(settings.model_pack).contract.embedding_dim
        index = OpenSearchVectorIndex(
            _opensearch_client(settings), settings.opensearch_index, dim, engine=settings.opensearch_engine
        )
    else:
        raise ConfigError(f"unknown index backend {settings.index_backend!r} (embedded or opensearch)")
    store: RecordStore
    if settings.store_backend == "sqlite":
        store = SqliteRecordStore(data / "registry.sqlite")
    elif settings.store_backend == "dynamodb":
        from face_dedup.adapters.dynamodb_store import DynamoRecordStore, TableNames

        default = TableNames.with_prefix(settings.dynamodb_table_prefix)
        names = TableNames(
            *(
                getattr(settings, f"table_{role}") or getattr(default, role)
                for role in ("records", "cases", "imports", "audit", "staged")
            )
        )
        store = DynamoRecordStore(client_for(settings, "dynamodb"), names)
    else:
        raise ConfigError(f"unknown store backend {settings.store_backend!r} (sqlite or dynamodb)")
    blobs: BlobStore
    if settings.blob_backend == "local":
        blobs = LocalBlobStore(data / "blobs")
    elif settings.blob_backend == "s3":
        from face_dedup.adapters.s3_blobs import S3BlobStore

        _require(settings, "s3_bucket")
        blobs = S3BlobStore(
            client_for(settings, "s3"),
            settings.s3_bucket,
            prefix=settings.s3_prefix,
            kms_key_id=settings.kms_key_id or None,
        )
    else:
        raise ConfigError(f"unknown blob backend {settings.blob_backend!r} (local or s3)")
    notifier: Notifier
    if settings.notifier_backend == "outbox":
        notifier = OutboxNotifier(data / "outbox" / "notifications.jsonl")
    elif settings.notifier_backend == "sns":
        from face_dedup.adapters.sns_notifier import SnsNotifier

        _require(settings, "sns_topic_arn")
        notifier = SnsNotifier(client_for(settings, "sns"), settings.sns_topic_arn)
    elif settings.notifier_backend == "sqs":
        from face_dedup.adapters.sqs_notifier import SqsNotifier

        _require(settings, "notification_queue_url")
        notifier = SqsNotifier(client_for(settings, "sqs"), settings.notification_queue_url)
    else:
        raise ConfigError(f"unknown notifier backend {settings.notifier_backend!r} (outbox, sns or sqs)")
    return Adapters(index=index, store=store, blobs=blobs, notifier=notifier)


def build_ingestor(settings: Settings) -> Ingestor:
    """The ingest function's core: the service with its engine, the uploads bucket, and the
    workflow it starts. Built once per cold start (models load here, never per request)."""
    from face_dedup.adapters.s3_blobs import S3BlobStore

    _require(settings, "uploads_bucket", "state_machine_arn")
    service, _ = build_service(settings, reconcile=False)
    uploads = S3BlobStore(client_for(settings, "s3"), settings.uploads_bucket, prefix="")
    starter = StepFunctionsStarter(client_for(settings, "stepfunctions"), settings.state_machine_arn)
    return Ingestor(service, uploads, starter)


def build_workflow_service(settings: Settings) -> DedupService:
    """The workflow steps' core: no face engine, no model files."""
    service, _ = build_service(settings, with_engine=False, reconcile=False)
    return service


def build_service(
    settings: Settings, *, threads: int = 1, with_engine: bool = True, reconcile: bool = True
) -> tuple[DedupService, Adapters]:
    """`reconcile=False` where a separate job keeps the index in step (the cloud functions)."""
    pack = get_pack(settings.model_pack)
    engine = build_engine(settings, pack, threads=threads) if with_engine else None
    tail = load_tail(settings, pack)
    adapters = build_adapters(settings)
    service = DedupService(
        settings,
        engine,
        adapters.index,
        adapters.store,
        adapters.blobs,
        adapters.notifier,
        tail,
        **_local_registry(settings),
    )
    if reconcile:
        service.reconcile()
    return service, adapters


def _local_registry(settings: Settings) -> dict[str, Any]:
    """A data dir that several processes share: their write lock, and the scan that verifies an
    erasure left no copy in its files (see adapters/registry_lock.py, adapters/erasure_scan.py)."""
    if not (
        settings.index_backend == "embedded"
        or settings.store_backend == "sqlite"
        or settings.blob_backend == "local"
    ):
        return {}
    from face_dedup.adapters.erasure_scan import DataDirScan
    from face_dedup.adapters.registry_lock import RegistryLock

    return {
        "registry_lock": RegistryLock(settings.data_dir / "registry.lock"),
        "erasure_check": DataDirScan(settings.data_dir),
    }

"""Composition root: builds every adapter and the service from settings. Swapping an adapter
is a setting here, never a code fork elsewhere."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from face_dedup import wiring
from face_dedup.adapters.embedded_index import ExactVectorIndex, open_index, rebuild_from
from face_dedup.adapters.local_blobs import LocalBlobStore
from face_dedup.adapters.outbox import OutboxNotifier
from face_dedup.adapters.private_files import prepare_data_dir
from face_dedup.adapters.sqlite_metrics import SqliteDriftStore
from face_dedup.adapters.sqlite_store import SqliteRecordStore
from face_dedup.calibration import ImpostorTail
from face_dedup.drift import DriftRecorder, DriftStore
from face_dedup.errors import ConfigError, ModelError
from face_dedup.ingest import Ingestor
from face_dedup.models.custom import find_pack
from face_dedup.models.registry import ModelPack, get_pack, verified_bytes, verified_path
from face_dedup.pack_guard import registry_pack
from face_dedup.ports import BlobStore, FaceAnalyzer, Notifier, RecordStore, VectorIndex, WorkflowStarter
from face_dedup.queries import RegistryQueries
from face_dedup.service import DedupService, ServiceConfig
from face_dedup.settings import Settings
from face_dedup.vision import runtimes
from face_dedup.vision.decode import decode_image
from face_dedup.vision.detect import YuNetDetector
from face_dedup.vision.embed import SFaceEmbedder, create_session
from face_dedup.vision.pipeline import FaceEngine
from face_dedup.vision.png import encode_png

log = logging.getLogger(__name__)


def build_engine(settings: Settings, pack: ModelPack | None = None, threads: int = 1) -> FaceEngine:
    pack = pack or find_pack(settings.model_pack, settings.models_dir)
    detector = YuNetDetector(verified_path(settings.models_dir, pack, pack.detector))
    embedder = build_embedder(settings, pack, threads)
    return FaceEngine(pack, detector, embedder, settings.quality, settings.decode)


def embedder_runtime_choice(settings: Settings, pack: ModelPack) -> runtimes.RuntimeChoice:
    """Which runtime `build_engine` would run `pack`'s embedder on here, and why."""
    asked = settings.embedder_runtime
    # OpenVINO is loaded only where bf16 is a possibility: no cost for a pack that never runs it.
    possible = asked == runtimes.OPENVINO_BF16 or (asked == runtimes.AUTO and pack.bf16_measured)
    version, capabilities = runtimes.probe_openvino() if possible else (None, [])
    return runtimes.choose_runtime(asked, pack.id, pack.bf16_measured, version, capabilities)


def build_embedder(settings: Settings, pack: ModelPack, threads: int = 1) -> SFaceEmbedder:
    """onnxruntime fp32, or OpenVINO bf16 where `embedder_runtime_choice` says so and its output on
    a fixed crop agrees with onnxruntime's (else onnxruntime, with a warning; or an error where
    bf16 was asked for by name)."""
    path = verified_path(settings.models_dir, pack, pack.embedder)
    # From the path: onnxruntime keeps a model given as bytes for the session's life (+38 MB).
    reference = SFaceEmbedder(create_session(path, threads=threads), pack.contract)
    choice = embedder_runtime_choice(settings, pack)
    log.info("embedder of %s: %s", pack.id, choice.reason)
    if choice.runtime == runtimes.ONNXRUNTIME:
        return reference
    batch = 2 if pack.contract.flip_average else 1

    def model() -> bytes:
        # OpenVINO parses the bytes whose digest was checked, not the path opened again later
        # (a forked child compiling its own checks the file again).
        return verified_bytes(settings.models_dir, pack, pack.embedder)

    width, height = pack.contract.input_size
    try:
        candidate = SFaceEmbedder(runtimes.open_openvino_bf16(model, batch, threads), pack.contract)
        crop = runtimes.self_check_crop(width, height)
        cosine = runtimes.agrees_with(candidate.embed, reference.embed, crop)
    except runtimes.OpenVinoError as exc:  # OpenVINO itself failed (a bad model file is not this)
        message = str(exc)
    else:
        if cosine >= runtimes.SELF_CHECK_MIN_COSINE:
            return candidate
        message = f"OpenVINO bf16 disagrees with onnxruntime on the self-check crop (cosine {cosine:.4f})"
    if settings.embedder_runtime == runtimes.OPENVINO_BF16:
        raise ModelError(message)
    log.warning("%s: using onnxruntime fp32", message)
    return reference


def analysis_workers(settings: Settings, engine: FaceAnalyzer) -> int:
    """Analysis threads for an import: `workers` where set, else enough to keep every usable core
    busy with this engine (one per core on onnxruntime, two on OpenVINO: its threads compute
    while the caller waits)."""
    if settings.workers > 0:
        return settings.workers
    return runtimes.usable_cores() * max(1, engine.threads_per_core())


def one_thread_per_analysis_worker(workers: int) -> None:
    """Where photos are analysed by `workers` threads at once (an import), OpenCV works in the
    calling thread, as onnxruntime does (build_engine's `threads`), instead of handing each call
    to a pool of its own across the same cores: issue 12 measured about 0.7 ms less CPU per LFW
    photo. Process-wide, so only for a command that runs several analysis threads."""
    if workers > 1:
        import cv2

        cv2.setNumThreads(1)


def calibration_path(settings: Settings, pack_id: str) -> Path:
    """Where `calibrate --save` puts a registry's own calibration (preferred when present)."""
    return settings.data_dir / "calibration" / f"{pack_id}.json"


def drift_path(settings: Settings) -> Path:
    """Where a local registry keeps its drift counts (`face-dedup report drift` reads them)."""
    return settings.data_dir / "drift.sqlite3"


def open_drift_store(settings: Settings) -> SqliteDriftStore | None:
    """A local registry's drift counts, for `face-dedup report drift`; None before any import."""
    path = drift_path(settings)
    return SqliteDriftStore(path) if path.is_file() else None


def load_tail(settings: Settings, pack: ModelPack) -> ImpostorTail:
    own = calibration_path(settings, pack.id)
    if own.is_file():
        tail = ImpostorTail.load(own)
    elif not pack.calibration:  # an added pack: no decision before it is measured on labelled photos
        raise ModelError(
            f"model pack {pack.id} has no calibration yet, so it cannot serve decisions: run "
            "`face-dedup calibrate --root PHOTOS --labels LABELS.csv --save` with "
            f"FACE_DEDUP_MODEL_PACK={pack.id}"
        )
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
    drift: DriftStore | None = None  # build_service's drift counts (a held writer connection)

    def queries(self) -> RegistryQueries:
        """The reads (CLI, review API) over the same store and blob store as the service."""
        return RegistryQueries(self.store, self.blobs)

    def close(self) -> None:
        self.index.close()
        self.store.close()
        if self.drift is not None:
            self.drift.close()


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

    from face_dedup.capacity import INDEX_CLIENT_TIMEOUT_S  # the stack bounds concurrency by it

    _require(settings, "opensearch_url")
    if settings.opensearch_auth == "none":
        return OpenSearch(hosts=[settings.opensearch_url], timeout=INDEX_CLIENT_TIMEOUT_S)
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
        timeout=INDEX_CLIENT_TIMEOUT_S,
    )


def read_secret(settings: Settings, secret_id: str) -> str:
    """A Secrets Manager secret's string (the ABIS function's broker credentials)."""
    return str(client_for(settings, "secretsmanager").get_secret_value(SecretId=secret_id)["SecretString"])


def build_search_index(settings: Settings) -> Any:
    """The OpenSearch index as the settings name it, method and encoding included (the
    functions, and the deploy-time index setup that creates it)."""
    from face_dedup.adapters.opensearch_index import OpenSearchVectorIndex
    from face_dedup.cloud_migration import pack_index_name  # each pack has its own index

    dim = get_pack(settings.model_pack).contract.embedding_dim
    try:
        return OpenSearchVectorIndex(
            _opensearch_client(settings),
            pack_index_name(settings.opensearch_index, settings.model_pack),
            dim,
            engine=settings.opensearch_engine,
            method=settings.opensearch_method,
            encoding=settings.opensearch_encoding,
            shards=settings.opensearch_shards,
        )
    except ValueError as exc:  # an unsupported method or encoding in the settings
        raise ConfigError(str(exc)) from None


_opensearch_index = build_search_index  # the name older callers and tests use


def build_adapters(settings: Settings) -> Adapters:
    """Each port's adapter, as the settings name it. Clients are created here, once."""
    data = settings.data_dir
    if (
        "embedded" in settings.index_backend
        or settings.store_backend == "sqlite"
        or settings.blob_backend == "local"
    ):
        prepare_data_dir(data, allow_open=settings.allow_open_data_dir)  # 0700, or refused if open
    index: VectorIndex
    if settings.index_backend == "embedded":
        index = open_index(data / "index.sqlite")  # a damaged one is replaced, and refilled below
    elif settings.index_backend == "opensearch":
        search_index = _opensearch_index(settings)
        search_index.ensure_index()  # local setups; in the cloud a deployment step creates it
        index = search_index
    else:
        raise ConfigError(f"unknown index backend {settings.index_backend!r} (embedded or opensearch)")
    store: RecordStore
    if settings.store_backend == "sqlite":
        store = SqliteRecordStore(data / "registry.sqlite")
    elif settings.store_backend == "dynamodb":
        store = _dynamodb_store(settings)
    else:
        raise ConfigError(f"unknown store backend {settings.store_backend!r} (sqlite or dynamodb)")
    if isinstance(index, ExactVectorIndex) and index.needs_rebuild:
        rebuild_from(index, store)
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


class UndeclaredCall(ConfigError):
    """A cloud function called a port (or a port method) that `face_dedup.wiring` does not
    declare for it: its role would not allow the call, so it fails here, loudly, in tests."""


class _Declared:
    """A port as one function declared it: declared methods pass through to the adapter, any
    other call raises UndeclaredCall. A port the function does not use has no adapter at all:
    nothing is built and nothing connects for it."""

    def __init__(self, function: str, port: str, adapter: Any, methods: tuple[str, ...]) -> None:
        self._function, self._port, self._adapter, self._methods = function, port, adapter, methods

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name == "close":
            return getattr(self._adapter, "close", lambda: None)
        if self._adapter is None or (self._methods != wiring.ALL and name not in self._methods):
            raise UndeclaredCall(
                f"the {self._function} function calls {self._port}.{name}, "
                "which face_dedup.wiring does not declare for it"
            )
        return getattr(self._adapter, name)


@dataclass
class FunctionParts:
    """What one cloud function works with, built once per cold start from its declaration."""

    service: DedupService
    uploads: BlobStore
    workflow: WorkflowStarter
    officers: Notifier
    archive: BlobStore
    queries: RegistryQueries  # reads through the declared store and blob store (the API)


def build_function(settings: Settings, name: str) -> FunctionParts:
    """One cloud function's service and clients: only the ports `face_dedup.wiring` declares
    for it are built, and nothing connects at cold start (clients connect on first call; the
    index is created by the deployment, not here)."""
    spec = wiring.function_spec(name)
    builders: dict[str, Any] = {
        wiring.INDEX: lambda: _opensearch_index(settings),
        wiring.STORE: lambda: _dynamodb_store(settings),
        wiring.BLOBS: lambda: _s3_store(settings, settings.s3_bucket, settings.s3_prefix, kms=True),
        # uploads: the bucket's default encryption (uploaders' presigned PUTs carry no KMS headers)
        wiring.UPLOADS: lambda: _s3_store(settings, settings.uploads_bucket, "", kms=False),
        wiring.NOTIFIER: lambda: _sqs_notifier(settings),
        wiring.OFFICERS: lambda: _sns_notifier(settings),
        wiring.WORKFLOW: lambda: _starter(settings),
        wiring.ARCHIVE: lambda: _s3_store(settings, settings.audit_archive_bucket, "audit/", kms=True),
        wiring.DRIFT: _emf_drift,
    }
    ports = {
        port: _Declared(name, port, build() if port in spec.uses else None, spec.methods(port))
        for port, build in builders.items()
    }
    pack = get_pack(settings.model_pack)
    service = DedupService(
        # The core's small config. A function serves the tenant an event names (for_tenant) and
        # does not ask the store for that tenant's packs: see ServiceConfig.tenant_packs_from_store.
        replace(
            ServiceConfig.from_settings(settings, load_tail(settings, pack)), tenant_packs_from_store=False
        ),
        build_engine(settings, pack) if spec.engine else None,
        cast(VectorIndex, ports[wiring.INDEX]),
        cast(RecordStore, ports[wiring.STORE]),
        cast(BlobStore, ports[wiring.BLOBS]),
        cast(Notifier, ports[wiring.NOTIFIER]),
        settings=settings,
    )
    if wiring.DRIFT in spec.uses:  # the drift aggregates as CloudWatch metrics (EMF)
        service.drift = DriftRecorder(cast(DriftStore, ports[wiring.DRIFT]))
    return FunctionParts(
        service,
        cast(BlobStore, ports[wiring.UPLOADS]),
        cast(WorkflowStarter, ports[wiring.WORKFLOW]),
        cast(Notifier, ports[wiring.OFFICERS]),
        cast(BlobStore, ports[wiring.ARCHIVE]),
        RegistryQueries(cast(RecordStore, ports[wiring.STORE]), cast(BlobStore, ports[wiring.BLOBS])),
    )


def _emf_drift() -> DriftStore:
    from face_dedup.adapters.emf_drift import EmfDriftStore

    return EmfDriftStore()


def build_cloud_store(settings: Settings) -> RecordStore:
    """The cloud's record store alone: the deploy-time index step reads it (pack_guard)."""
    return _dynamodb_store(settings)


def _dynamodb_store(settings: Settings) -> RecordStore:
    from face_dedup.adapters.dynamodb_store import DynamoRecordStore
    from face_dedup.table_schema import ROLES, TableNames

    # CloudFormation's names where the stack passes them (table_<role>), else prefix + role
    default = TableNames.with_prefix(settings.dynamodb_table_prefix)
    names = TableNames(*(getattr(settings, f"table_{role}") or getattr(default, role) for role in ROLES))
    return DynamoRecordStore(client_for(settings, "dynamodb"), names)


def _s3_store(settings: Settings, bucket: str, prefix: str, *, kms: bool) -> BlobStore:
    from face_dedup.adapters.s3_blobs import S3BlobStore

    if not bucket:
        raise ConfigError("missing settings: the bucket (FACE_DEDUP_S3_BUCKET / FACE_DEDUP_UPLOADS_BUCKET)")
    key = settings.kms_key_id if kms else ""
    return S3BlobStore(client_for(settings, "s3"), bucket, prefix=prefix, kms_key_id=key or None)


def _sqs_notifier(settings: Settings) -> Notifier:
    from face_dedup.adapters.sqs_notifier import SqsNotifier

    _require(settings, "notification_queue_url")
    return SqsNotifier(client_for(settings, "sqs"), settings.notification_queue_url)


def _sns_notifier(settings: Settings) -> Notifier:
    from face_dedup.adapters.sns_notifier import SnsNotifier

    _require(settings, "sns_topic_arn")
    return SnsNotifier(client_for(settings, "sns"), settings.sns_topic_arn)


def _starter(settings: Settings) -> WorkflowStarter:
    from face_dedup.adapters.step_functions import StepFunctionsStarter

    _require(settings, "state_machine_arn")
    return StepFunctionsStarter(client_for(settings, "stepfunctions"), settings.state_machine_arn)


def build_ingestor(settings: Settings) -> Ingestor:
    """The ingest function's core: the service with its engine, the uploads bucket, and the
    workflow it starts. Built once per cold start (models load here, never per request)."""
    parts = build_function(settings, "ingest")
    return Ingestor(parts.service, parts.uploads, parts.workflow)


def _photo_rgb(data: bytes) -> NDArray[np.uint8]:
    """A stored photo as RGB for the review sheet (default decode limits, as it always had)."""
    return decode_image(data).rgb


def build_service(
    settings: Settings,
    *,
    threads: int = 1,
    with_engine: bool = True,
    reconcile: bool = True,
    analyzer: FaceAnalyzer | None = None,
) -> tuple[DedupService, Adapters]:
    """`reconcile=False` where a separate job keeps the index in step (the cloud functions).
    `analyzer`: another engine than the pack's ONNX models (tests of business rules pass a fake
    for the settings' pack; the adapters are the real ones the settings name)."""
    adapters = build_adapters(settings)
    try:
        # Before anything searches: the pack the registry's templates are in (pack_guard.py).
        configured, settings = settings, registry_pack(settings, adapters.store)
        if settings.model_pack != configured.model_pack and settings.index_backend != "embedded":
            adapters.close()  # an OpenSearch index is per pack: open the adopted pack's
            adapters = build_adapters(settings)
        pack = find_pack(settings.model_pack, settings.models_dir)
        engine: FaceAnalyzer | None
        if analyzer is not None:
            engine = analyzer
        else:
            engine = build_engine(settings, pack, threads=threads) if with_engine else None
        tail = load_tail(settings, pack)
    except BaseException:
        adapters.close()
        raise
    service = DedupService(
        ServiceConfig.from_settings(settings, tail),  # the core's small config, tenant explicit
        engine,
        adapters.index,
        adapters.store,
        adapters.blobs,
        adapters.notifier,
        settings=settings,
        crop_png=encode_png,  # an engine-less service (with_engine=False) still keeps crops
        photo_rgb=_photo_rgb,  # the review sheet decodes stored photos the safe way
        **_local_registry(settings),
    )
    if settings.store_backend == "sqlite":  # one machine: drift counts next to the registry
        adapters.drift = SqliteDriftStore(drift_path(settings))
        service.drift = DriftRecorder(adapters.drift)
    if settings.shadow_pack:  # a migration between packs is under way (migration.py)
        _shadow(settings, service, adapters, threads=threads, with_engine=with_engine, reconcile=reconcile)
    if reconcile:
        service.reconcile()
    return service, adapters


def _shadow(
    settings: Settings,
    service: DedupService,
    adapters: Adapters,
    *,
    threads: int,
    with_engine: bool,
    reconcile: bool,
) -> None:
    from face_dedup import migration

    if reconcile and migration.interrupted(adapters.store, settings):
        adapters.close()  # reconciling now would empty the index of the records' real pack
        raise ConfigError(
            f"this registry's templates are in {settings.shadow_pack}, not {settings.model_pack}: a "
            "cut-over or rollback was interrupted; run `face-dedup migrate cutover` (or `rollback`) again"
        )
    if with_engine:
        pack = find_pack(settings.shadow_pack, settings.models_dir)
        engine = build_engine(settings, pack, threads=threads)
        service.shadow = migration.ShadowPack(
            engine, load_tail(settings, pack), adapters.store, settings, ExactVectorIndex(None)
        )


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

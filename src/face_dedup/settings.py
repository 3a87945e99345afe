"""Settings: the one place configuration is read (environment, then explicit overrides).

Every variable is `FACE_DEDUP_<NAME>`; quality thresholds are `FACE_DEDUP_QUALITY_<NAME>` and
decode limits `FACE_DEDUP_DECODE_<NAME>` (names as in `QualityThresholds` / `DecodeLimits`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

from face_dedup import identifiers
from face_dedup.deployment import DECODE_PREFIX, FACES_PREFIX, QUALITY_PREFIX, env_name, local_models_dir
from face_dedup.deployment import PACKS_FILE as PACKS_FILE
from face_dedup.deployment import PREFIX as PREFIX
from face_dedup.errors import ConfigError
from face_dedup.models.registry import DEFAULT_PACK_ID
from face_dedup.vision.decode import DecodeLimits
from face_dedup.vision.quality import QualityThresholds

_T = TypeVar("_T", QualityThresholds, DecodeLimits)

# The most analysis threads an import may be given (`workers`).
MAX_WORKERS = 1024


def _default_data_dir(environ: Mapping[str, str]) -> Path:
    base = environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "face-dedup"


def _default_models_dir(environ: Mapping[str, str]) -> Path:
    # deployment.local_models_dir without FACE_DEDUP_MODELS_DIR: the loop in `load` reads that
    return local_models_dir({k: v for k, v in environ.items() if k != env_name("models_dir")})


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    models_dir: Path
    model_pack: str = DEFAULT_PACK_ID
    # Migration between packs (face_dedup.migration): every new input is also embedded and
    # searched in this pack, decisions still come from `model_pack`. Empty: none. Both come
    # from the data dir's packs.json (written by `face-dedup migrate`) unless set here.
    shadow_pack: str = ""
    # True only when Settings.load took `model_pack` from the default (no variable, override or
    # packs.json named it): the composition root then runs the pack the registry's templates
    # are in (pack_guard.py), so a release that changes the default never strands a registry.
    # Not read from the environment; a Settings built directly counts as explicit (refused).
    model_pack_defaulted: bool = False
    tenant: str = "default"
    # 1:N: target share of new people who get a false alarm (a case) against the current
    # gallery; the review threshold follows it as the registry grows.
    target_fpir: float = 0.01
    # Above the threshold for this FPIR a match is linked as a likely duplicate (still reviewed).
    duplicate_fpir: float = 1e-4
    # Never review below the threshold of this per-comparison FMR, however small the gallery.
    review_floor_fmr: float = 1e-3
    # Never auto-link below the threshold of this per-comparison FMR, however small the gallery.
    duplicate_floor_fmr: float = 1e-6
    # 1:1 verification: per-comparison false-match rate.
    verify_fmr: float = 1e-4
    max_candidates: int = 10
    # Several templates per record (record_templates.py): at most this many photos per record
    # (measured up to 5), and a later photo is kept only at this detector confidence or more.
    max_templates: int = 3
    template_min_detection_score: float = 0.85
    workers: int = 0  # 0 = one per CPU core
    # Where the embedder runs (vision/runtimes.py): auto = OpenVINO bf16 where the pack was
    # measured in bf16 and the CPU has BF16, else onnxruntime fp32 | onnxruntime | openvino-bf16.
    embedder_runtime: str = "auto"
    keep_photos: bool = True  # store photos and aligned crops for case officers
    # Use an existing data dir that group or others can read (refused otherwise: it holds
    # biometric data; see adapters/private_files.py).
    allow_open_data_dir: bool = False
    review_link_base: str = "face-dedup://cases/"
    index_backend: str = "embedded"  # embedded | opensearch
    store_backend: str = "sqlite"  # sqlite | dynamodb
    blob_backend: str = "local"  # local | s3
    notifier_backend: str = "outbox"  # outbox | sns | sqs (queued for the digest function)
    notification_queue_url: str = ""
    # AWS adapters (used only by the backends above that name them)
    aws_region: str = ""
    aws_endpoint_url: str = ""  # emulators only (moto server); empty for AWS itself
    s3_bucket: str = ""
    s3_prefix: str = FACES_PREFIX
    kms_key_id: str = ""
    dynamodb_table_prefix: str = "face-dedup-"
    # Explicit table names (the CDK app passes CloudFormation's); empty: prefix + role.
    table_records: str = ""
    table_cases: str = ""
    table_imports: str = ""
    table_audit: str = ""
    table_staged: str = ""
    sns_topic_arn: str = ""
    opensearch_url: str = ""
    opensearch_index: str = "faces"
    opensearch_engine: str = "faiss"  # faiss (inner product) | lucene (cosine)
    # The index method (capacity.py; the CDK app picks the default for its registry-size):
    # hnsw (approximate, fp32 or fp16 graph) | exact (script_score knn_score, no graph).
    opensearch_method: str = "hnsw"
    opensearch_encoding: str = "fp32"
    opensearch_shards: int = 1  # primary shards; exact search scans them in parallel
    opensearch_auth: str = "sigv4"  # sigv4 (managed domain) | sigv4-serverless | none (local)
    uploads_bucket: str = ""  # where selfies and registry batches arrive
    state_machine_arn: str = ""  # the de-duplication workflow the ingest function starts
    audit_archive_bucket: str = ""  # the cloud's write-once (Object Lock) copy of the audit trail
    # Backups that keep an erased record until they age out, as `name=days,...` (the CDK app
    # passes the stack's own: point-in-time recovery, index snapshots, kept uploads); the erase
    # receipt names each with its date. Empty: face-dedup itself keeps no backup (one machine).
    backup_retention: str = ""
    quality: QualityThresholds = field(default_factory=QualityThresholds)
    decode: DecodeLimits = field(default_factory=DecodeLimits)

    @property
    def worker_count(self) -> int:
        return self.workers if self.workers > 0 else max(1, os.cpu_count() or 1)

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = dict(os.environ if environ is None else environ)
        values: dict[str, Any] = {
            "data_dir": _default_data_dir(env),
            "models_dir": _default_models_dir(env),
        }
        for spec in fields(cls):
            if spec.name in ("quality", "decode"):
                continue
            raw = env.get(env_name(spec.name))
            if raw is not None:
                values[spec.name] = _coerce(spec.name, raw, values.get(spec.name, spec.default))
        values["quality"] = _nested(QualityThresholds(), env, QUALITY_PREFIX)
        values["decode"] = _nested(DecodeLimits(), env, DECODE_PREFIX)
        values.update({k: v for k, v in overrides.items() if v is not None})
        values["data_dir"] = Path(values["data_dir"]).expanduser()
        _registry_packs(values)
        values["model_pack_defaulted"] = "model_pack" not in values
        values["models_dir"] = Path(values["models_dir"]).expanduser()
        settings = cls(**values)
        settings.validate()
        return settings

    def with_overrides(self, **overrides: Any) -> Settings:
        given = {k: v for k, v in overrides.items() if v is not None}
        if "model_pack" in given:  # named now: no longer the default
            given.setdefault("model_pack_defaulted", False)
        updated = replace(self, **given)
        updated.validate()
        return updated

    def backups(self) -> dict[str, int]:
        """`backup_retention` parsed: backup name -> days it keeps erased data."""
        found: dict[str, int] = {}
        for item in filter(None, (p.strip() for p in self.backup_retention.split(","))):
            name, _, days = item.partition("=")
            if not name.strip() or not days.strip().isdigit():
                raise ConfigError(f"backup_retention: {item!r} is not name=days")
            found[name.strip()] = int(days)
        return found

    def validate(self) -> None:
        self.backups()
        for name in (
            "target_fpir",
            "duplicate_fpir",
            "review_floor_fmr",
            "duplicate_floor_fmr",
            "verify_fmr",
        ):
            value = getattr(self, name)
            if not 0 < value < 1:
                raise ConfigError(f"{name} must be between 0 and 1, got {value}")
        if self.duplicate_fpir > self.target_fpir:
            raise ConfigError("duplicate_fpir must not exceed target_fpir (auto-links are rarer than cases)")
        try:
            identifiers.tenant(self.tenant)  # the one rule: never `..`, `a\\b` or a path
        except identifiers.InvalidIdentifier as exc:
            raise ConfigError(str(exc)) from None
        if self.max_candidates < 1:
            raise ConfigError("max_candidates must be at least 1")
        # Each analysis thread keeps about 1.5 MB and 4 photos in flight (importer.run_import's
        # window): 99999999999 read a whole import into memory at once (review R12k).
        if not 0 <= self.workers <= MAX_WORKERS:
            raise ConfigError(f"workers must be between 0 (enough for every core) and {MAX_WORKERS}")
        if self.embedder_runtime not in ("auto", "onnxruntime", "openvino-bf16"):
            raise ConfigError(
                f"embedder_runtime must be auto, onnxruntime or openvino-bf16, not {self.embedder_runtime!r}"
            )
        # A radial search asks for max_candidates + 2 (the probe itself, and one to see the cap);
        # OpenSearch returns at most 10,000 hits, so more would fail every cloud search.
        if self.max_candidates > 9_998:
            raise ConfigError("max_candidates must be at most 9,998 (OpenSearch returns at most 10,000 hits)")
        if not 1 <= self.max_templates <= 5:
            raise ConfigError("max_templates must be between 1 and 5 (calibration offsets measured to 5)")
        if self.shadow_pack == self.model_pack:
            raise ConfigError(f"the shadow pack must differ from the active pack ({self.model_pack})")


def _registry_packs(values: dict[str, Any]) -> None:
    """The packs a registry's templates are in, as `face-dedup migrate` recorded them. A pack
    set explicitly must agree: a service searching another pack's (empty) partition would
    enroll everyone as new."""
    path = values["data_dir"] / PACKS_FILE
    tenant = values.get("tenant", "default")
    try:
        recorded = json.loads(path.read_text(encoding="utf-8")).get("tenants", {}).get(tenant)
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return  # no migration recorded, or a data dir the adapters will name with its fix
    except (OSError, ValueError, AttributeError) as exc:
        raise ConfigError(f"{path} is unreadable ({exc}): restore it from your backup") from None
    if not isinstance(recorded, dict):
        return
    active, shadow = recorded.get("active"), recorded.get("shadow") or ""
    if "model_pack" not in values:
        values["model_pack"] = active
    elif values["model_pack"] != active:
        raise ConfigError(
            f"this registry's templates are in model pack {active} (see {path}), not "
            f"{values['model_pack']}: unset FACE_DEDUP_MODEL_PACK, or migrate with `face-dedup migrate`"
        )
    values.setdefault("shadow_pack", shadow)


def _coerce(name: str, raw: str, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(raw)
            return raw.lower() in ("1", "true", "yes")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, Path):
            return Path(raw)
        return raw
    except ValueError:
        raise ConfigError(f"{PREFIX}{name.upper()}={raw!r} is not a valid {type(default).__name__}") from None


def _nested(instance: _T, env: Mapping[str, str], prefix: str) -> _T:
    changes = {}
    for spec in fields(instance):
        raw = env.get(prefix + spec.name.upper())
        if raw is not None:
            changes[spec.name] = _coerce(spec.name, raw, getattr(instance, spec.name))
    return replace(instance, **changes)

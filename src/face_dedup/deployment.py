"""Environment variable names and the cloud deployment's fixed settings, declared once.

Used by `settings.py` (which reads the variables), the CDK app (which writes them into each
function's environment) and the tests that run the functions on emulated AWS. Standard library
only: the CDK app imports it at synth without loading the runtime (numpy, OpenCV, boto3).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Final

PREFIX: Final = "FACE_DEDUP_"  # every setting is FACE_DEDUP_<NAME> (Settings' field, upper case)
QUALITY_PREFIX: Final = PREFIX + "QUALITY_"  # FACE_DEDUP_QUALITY_<QualityThresholds field>
DECODE_PREFIX: Final = PREFIX + "DECODE_"  # FACE_DEDUP_DECODE_<DecodeLimits field>
ABIS_PREFIX: Final = PREFIX + "ABIS_"  # the MOSIP ABIS front end's own (mosip/config.py)
FUNCTION_ENV: Final = PREFIX + "FUNCTION"  # which wiring declaration a cloud function runs under
# The ABIS function reads its broker credentials from this secret (never from the environment).
ABIS_BROKER_SECRET_ENV: Final = ABIS_PREFIX + "BROKER_SECRET_ARN"
CAPTURE_ORT_DIR_ENV: Final = PREFIX + "CAPTURE_ORT_DIR"  # where `make capture` put onnxruntime-web


def env_name(setting: str) -> str:
    """The environment variable of a `Settings` field: `s3_bucket` -> FACE_DEDUP_S3_BUCKET."""
    return PREFIX + setting.upper()


def local_models_dir(environ: Mapping[str, str]) -> Path:
    """Where this machine keeps the model files (`face-dedup models install`) when
    FACE_DEDUP_MODELS_DIR does not say: Settings' default, and what the CDK app stages the
    capture page's detector from without loading Settings (and with it the runtime)."""
    if explicit := environ.get(env_name("models_dir")):
        return Path(explicit).expanduser()
    base = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "face-dedup" / "models"


def abis_env_name(setting: str) -> str:
    """The environment variable of an `AbisConfig` field: `tenant` -> FACE_DEDUP_ABIS_TENANT."""
    return ABIS_PREFIX + setting.upper()


FACES_PREFIX: Final = "faces/"  # where the faces bucket keeps records' photos (Settings.s3_prefix)

# What every cloud function runs with, whatever the stack's size or options: the AWS adapters,
# models from the models layer, scratch space in /tmp. The stack adds its resources' names.
LAMBDA_MODELS_DIR: Final = "/opt/models"  # the models layer's mount point
LAMBDA_SCRATCH_DIR: Final = "/tmp/face-dedup"  # noqa: S108 - scratch only; nothing persistent lives there
# The model pack a registry runs unless told otherwise (models/registry.py defines it; named here
# too so that a use case such as cloud_migration's index naming needs no model code).
DEFAULT_PACK_ID: Final = "yunet-sface-flip-v1"
# The data dir's record of each tenant's active and shadow pack (settings.py reads it,
# migration.py writes it).
PACKS_FILE: Final = "packs.json"
CLOUD_SETTINGS: Final[dict[str, str]] = {
    "models_dir": LAMBDA_MODELS_DIR,
    "data_dir": LAMBDA_SCRATCH_DIR,
    "index_backend": "opensearch",
    "opensearch_auth": "sigv4",
    "opensearch_index": "faces",
    "store_backend": "dynamodb",
    "blob_backend": "s3",
    "notifier_backend": "sqs",  # queued; the digest function tells officers (SNS)
}


def environment(settings: dict[str, str]) -> dict[str, str]:
    """Settings (field -> value) as the environment variables that carry them."""
    return {env_name(name): value for name, value in settings.items()}

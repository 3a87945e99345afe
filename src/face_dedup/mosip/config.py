"""Settings of the MOSIP ABIS front end: `FACE_DEDUP_ABIS_<NAME>` in the environment (names as
the fields below), beside the core's settings. Secrets (broker password, datashare client
secret) come from the environment or a secret store, never from the command line."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from face_dedup.deployment import ABIS_PREFIX
from face_dedup.errors import ConfigError
from face_dedup.identifiers import InvalidIdentifier, tenant
from face_dedup.mosip.datashare import DatashareConfig

PREFIX = ABIS_PREFIX  # FACE_DEDUP_ABIS_<field> (deployment.py)


@dataclass(frozen=True)
class AbisConfig:
    # The broker: stomp://host:61613, or stomp+ssl://host:61614 (Amazon MQ's STOMP endpoint).
    broker_url: str = "stomp://127.0.0.1:61613"
    broker_user: str = ""
    broker_password: str = ""
    request_queue: str = "mosip-to-abis"
    response_queue: str = "abis-to-mosip"
    prefetch: int = 20  # requests taken from the broker ahead of processing (pendingJobs counts them)
    heartbeat_ms: int = 10_000
    # Registry partition of MOSIP's references: its referenceIds live only here.
    tenant: str = "mosip"
    # Identify defaults when MOSIP sends no flags (MOSIP's own defaults are 30 and 30).
    max_results: int = 30
    target_fpir: int = 0  # 0: the registry's FACE_DEDUP_TARGET_FPIR; else MOSIP's encoding (30 = 1e-3)
    # An Identify (by referenceId) with candidates opens a case for our officers (two-person rule);
    # their decision can be returned in MOSIP's manual-adjudication reply format.
    open_cases: bool = False
    # The datashare
    datashare_timeout_s: float = 10.0
    datashare_max_bytes: int = 10 << 20
    datashare_allow_http: bool = False
    datashare_hosts: str = ""  # comma-separated hosts a referenceURL may name (empty: any)
    datashare_token: str = ""
    authmanager_url: str = ""
    client_id: str = ""
    secret_key: str = ""
    app_id: str = "regproc"
    # MOSIP 1.2 encrypted payloads: our partner private key (PEM) and optionally its certificate.
    decrypt_key_file: str = ""
    decrypt_cert_file: str = ""

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> AbisConfig:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for spec in fields(cls):
            raw = env.get(PREFIX + spec.name.upper())
            if raw is not None:
                values[spec.name] = _coerce(spec.name, raw, spec.default)
        values.update({k: v for k, v in overrides.items() if v is not None})
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        try:
            tenant(self.tenant)
        except InvalidIdentifier as exc:
            raise ConfigError(str(exc)) from None
        if not self.broker_url.startswith(("stomp://", "stomp+ssl://")):
            raise ConfigError("FACE_DEDUP_ABIS_BROKER_URL must be stomp://host:port or stomp+ssl://host:port")
        if self.prefetch < 1 or self.max_results < 1 or not 0 <= self.target_fpir <= 200:
            raise ConfigError("prefetch and max_results must be at least 1, target_fpir 0-200")
        if (self.datashare_token or self.authmanager_url) and not self.datashare.allowed_hosts:
            # The token (MOSIP's regproc client's) goes as a cookie to the host a referenceURL
            # names, and the URL comes from the message: anyone who can queue one would get it.
            raise ConfigError(
                "FACE_DEDUP_ABIS_DATASHARE_HOSTS must name the datashare host(s) when a datashare "
                "token or auth manager is set: the token is sent to the host a referenceURL names"
            )
        if self.decrypt_key_file and not Path(self.decrypt_key_file).is_file():
            raise ConfigError(f"FACE_DEDUP_ABIS_DECRYPT_KEY_FILE: no file {self.decrypt_key_file}")

    @property
    def datashare(self) -> DatashareConfig:
        return DatashareConfig(
            timeout_s=self.datashare_timeout_s,
            max_bytes=self.datashare_max_bytes,
            allow_http=self.datashare_allow_http,
            allowed_hosts=tuple(h.strip() for h in self.datashare_hosts.split(",") if h.strip()),
            token=self.datashare_token,
            authmanager_url=self.authmanager_url,
            client_id=self.client_id,
            secret_key=self.secret_key,
            app_id=self.app_id,
        )


def _coerce(name: str, raw: str, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            return raw.strip().lower() in ("1", "true", "yes")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        return raw
    except ValueError:
        raise ConfigError(f"{PREFIX}{name.upper()}={raw!r} is not a valid {type(default).__name__}") from None

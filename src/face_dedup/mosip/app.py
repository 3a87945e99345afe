"""Build and run the ABIS: the core service (same store, index and audit as every other
entry point, in the ABIS tenant), the datashare client and the broker consumer."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from face_dedup.bootstrap import Adapters, build_service
from face_dedup.mosip.broker import AbisConsumer
from face_dedup.mosip.config import AbisConfig
from face_dedup.mosip.datashare import DatashareClient
from face_dedup.mosip.handlers import AbisHandler
from face_dedup.mosip.iso_face import face_reader
from face_dedup.settings import Settings


@dataclass
class Abis:
    handler: AbisHandler
    datashare: DatashareClient
    adapters: Adapters

    def close(self) -> None:
        self.datashare.close()
        self.adapters.close()


def build_abis(
    settings: Settings, config: AbisConfig, *, transport: httpx.BaseTransport | None = None
) -> Abis:
    service, adapters = build_service(settings.with_overrides(tenant=config.tenant))
    decrypt = None
    if config.decrypt_key_file:
        from face_dedup.mosip.crypto import PayloadKey

        key = PayloadKey.from_files(
            Path(config.decrypt_key_file),
            Path(config.decrypt_cert_file) if config.decrypt_cert_file else None,
        )
        decrypt = key.decrypt
    datashare = DatashareClient(config.datashare, transport=transport, decrypt=decrypt)
    handler = AbisHandler(
        service,
        datashare.fetch,
        max_results=config.max_results,
        target_fpir=config.target_fpir,
        open_cases=config.open_cases,
        read_face=face_reader(settings.decode),
    )
    return Abis(handler, datashare, adapters)


@contextmanager
def opened(settings: Settings, config: AbisConfig) -> Iterator[Abis]:
    abis = build_abis(settings, config)
    try:
        yield abis
    finally:
        abis.close()


def serve(settings: Settings, config: AbisConfig, stop: threading.Event | None = None) -> int:
    """Serve until SIGTERM/SIGINT (or `stop`); returns how many requests were answered."""
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    with opened(settings, config) as abis:
        consumer = AbisConsumer(config, abis.handler, inflight=settings.data_dir / "abis-inflight.json")
        consumer.serve(stop)
        return consumer.handled

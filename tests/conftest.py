"""Shared fixtures. Real models come from the installed cache (`face-dedup models install`,
which the README's test command runs); the labelled photos come from ../shared and tests that
need them skip, saying why, when it is absent."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray
from osmem_server import OsmemServer
from PIL import Image

from face_dedup.bootstrap import build_engine, build_service
from face_dedup.models.install import verify_pack
from face_dedup.models.registry import get_pack
from face_dedup.service import DedupService
from face_dedup.settings import Settings
from face_dedup.vision.pipeline import FaceEngine

ROOT = Path(__file__).resolve().parents[1]
SHARED_FACES = Path(
    os.environ.get("FACE_DEDUP_SHARED_FACES", ROOT / ".." / "shared" / "data" / "faces")
).resolve()


def shared_faces() -> Path:
    if not (SHARED_FACES / "lfw").is_dir():
        pytest.skip(f"labelled photos not found at {SHARED_FACES} (../shared is absent on this machine)")
    return SHARED_FACES


@pytest.fixture(scope="session")
def osmem_server() -> Iterator[OsmemServer]:
    """osmem's own fixture, but closing the server's stdout pipe, which the plugin leaves open."""
    server = OsmemServer.start()
    yield server
    server.close()
    if server.process.stdout is not None:
        server.process.stdout.close()


@pytest.fixture(scope="session")
def faces_root() -> Path:
    return shared_faces()


@pytest.fixture(scope="session")
def base_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings = Settings.load(data_dir=tmp_path_factory.mktemp("registry"), workers=2)
    pack = get_pack(settings.model_pack)
    bad = [s for s in verify_pack(settings.models_dir, pack) if s.state != "ok"]
    if bad:
        pytest.fail(
            f"model files missing or corrupt in {settings.models_dir}: run `face-dedup models install` "
            "(the README's test command does)"
        )
    return settings


@pytest.fixture(scope="session")
def engine(base_settings: Settings) -> FaceEngine:
    return build_engine(base_settings)


@pytest.fixture
def service(base_settings: Settings, tmp_path: Path) -> Iterator[DedupService]:
    svc, adapters = build_service(base_settings.with_overrides(data_dir=tmp_path / "registry"))
    yield svc
    adapters.close()


def encode(image: Image.Image | NDArray[np.uint8], fmt: str = "PNG", **params: object) -> bytes:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()

from __future__ import annotations

from pathlib import Path

import pytest

from face_dedup.errors import ConfigError
from face_dedup.settings import Settings


def test_defaults_live_under_home(tmp_path: Path) -> None:
    settings = Settings.load({"HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data")})
    assert settings.data_dir == tmp_path / "data" / "face-dedup"
    assert settings.target_fpir == 0.01


def test_environment_then_overrides(tmp_path: Path) -> None:
    env = {
        "FACE_DEDUP_DATA_DIR": str(tmp_path / "a"),
        "FACE_DEDUP_TARGET_FPIR": "0.02",
        "FACE_DEDUP_KEEP_PHOTOS": "false",
        "FACE_DEDUP_QUALITY_MIN_SHARPNESS": "30",
        "FACE_DEDUP_DECODE_MAX_PIXELS": "1000000",
    }
    settings = Settings.load(env, data_dir=tmp_path / "b")
    assert settings.data_dir == tmp_path / "b"
    assert settings.target_fpir == 0.02
    assert settings.keep_photos is False
    assert settings.quality.min_sharpness == 30.0
    assert settings.decode.max_pixels == 1_000_000


@pytest.mark.parametrize(
    "env",
    [
        {"FACE_DEDUP_TARGET_FPIR": "1.5"},
        {"FACE_DEDUP_TARGET_FPIR": "lots"},
        {"FACE_DEDUP_KEEP_PHOTOS": "maybe"},
        {"FACE_DEDUP_DUPLICATE_FPIR": "0.5"},
        {"FACE_DEDUP_TENANT": "a/b"},
    ],
)
def test_invalid_settings_are_config_errors(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        Settings.load(env)

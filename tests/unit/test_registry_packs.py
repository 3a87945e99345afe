"""packs.json: the packs a registry's templates are in, as `face-dedup migrate` recorded them."""

from __future__ import annotations

from pathlib import Path

import pytest

from face_dedup.errors import ConfigError
from face_dedup.migration import write_packs
from face_dedup.service import DedupService
from face_dedup.settings import PACKS_FILE, Settings


def test_recorded_packs_are_the_defaults_and_an_explicit_other_pack_is_refused(tmp_path: Path) -> None:
    write_packs(tmp_path, "default", "yunet-sface-v1", "yunet-sface-flip-v1")
    loaded = Settings.load(environ={}, data_dir=tmp_path)
    assert (loaded.model_pack, loaded.shadow_pack) == ("yunet-sface-v1", "yunet-sface-flip-v1")
    assert Settings.load(environ={"FACE_DEDUP_MODEL_PACK": "yunet-sface-v1"}, data_dir=tmp_path)
    with pytest.raises(ConfigError, match="templates are in model pack yunet-sface-v1"):
        Settings.load(environ={"FACE_DEDUP_MODEL_PACK": "yunet-sface-flip-v1"}, data_dir=tmp_path)
    # another tenant has recorded nothing: the defaults hold
    assert Settings.load(environ={}, data_dir=tmp_path, tenant="other").shadow_pack == ""
    assert (tmp_path / PACKS_FILE).stat().st_mode & 0o077 == 0


def test_a_damaged_packs_file_is_a_config_error_and_shadow_must_differ(tmp_path: Path) -> None:
    (tmp_path / PACKS_FILE).write_text("{not json")
    with pytest.raises(ConfigError, match="unreadable"):
        Settings.load(environ={}, data_dir=tmp_path)
    with pytest.raises(ConfigError, match="must differ"):
        Settings.load(environ={}, data_dir=tmp_path / "new", shadow_pack="yunet-sface-flip-v1")


def test_a_process_does_not_serve_a_tenant_migrated_to_another_pack(service: DedupService) -> None:
    assert service.model_pack == "yunet-sface-flip-v1"
    write_packs(service.settings.data_dir, "moved", "yunet-sface-v1", "")
    with pytest.raises(ConfigError, match="tenant moved's templates are in model pack yunet-sface-v1"):
        service.for_tenant("moved")
    assert service.for_tenant("untouched").tenant == "untouched"
    write_packs(service.settings.data_dir, "same", "yunet-sface-flip-v1", "yunet-sface-v1")
    assert service.for_tenant("same").model_pack == "yunet-sface-flip-v1"

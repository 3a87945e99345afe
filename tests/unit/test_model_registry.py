from __future__ import annotations

from pathlib import Path

import pytest

from face_dedup.errors import ModelError
from face_dedup.models.install import verify_pack
from face_dedup.models.registry import PACKS, get_pack, verified_path


def test_every_pack_pins_every_file() -> None:
    for pack in PACKS.values():
        assert pack.package.sha256 and len(pack.package.sha256) == 64
        for model_file in pack.files:
            assert len(model_file.sha256) == 64 and len(model_file.member_sha256) == 64
        assert pack.contract.embedding_dim == 128
        assert len(pack.contract.template) == 5


def test_unknown_pack_is_a_clear_error() -> None:
    with pytest.raises(ModelError, match="known packs"):
        get_pack("nope")


def test_missing_model_names_the_fix(tmp_path: Path) -> None:
    pack = get_pack("yunet-sface-v1")
    with pytest.raises(ModelError, match="face-dedup models install"):
        verified_path(tmp_path, pack, pack.embedder)
    assert {s.state for s in verify_pack(tmp_path, pack)} == {"missing"}


def test_corrupt_model_is_refused(tmp_path: Path) -> None:
    pack = get_pack("yunet-sface-v1")
    target = tmp_path / pack.files_dir / pack.detector.filename
    target.parent.mkdir(parents=True)
    target.write_bytes(b"not the model")
    with pytest.raises(ModelError, match="corrupt"):
        verified_path(tmp_path, pack, pack.detector)
    assert next(s.state for s in verify_pack(tmp_path, pack)) == "corrupt"

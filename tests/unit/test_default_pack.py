"""The default model pack is named twice: by models/registry.py, which defines the packs, and by
deployment.py (standard library only), which the use cases read so that they load no model code."""

from __future__ import annotations

from face_dedup import deployment
from face_dedup.models import registry


def test_deployment_names_the_registrys_default_pack() -> None:
    assert deployment.DEFAULT_PACK_ID == registry.DEFAULT_PACK_ID
    assert registry.get_pack(deployment.DEFAULT_PACK_ID).id == deployment.DEFAULT_PACK_ID

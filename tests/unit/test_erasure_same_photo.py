"""An erasure names another record holding the same photo even when that record's template was
made by the other embedder runtime (onnxruntime fp32 vs OpenVINO bf16: one photo's templates
score down to 0.9984 between them, bench/bf16_partition.py), not only at 0.9999."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from face_dedup.bootstrap import build_service
from face_dedup.service import InputRef
from face_dedup.settings import Settings
from tests.unit.registry_worker import template


def _lean(vector: NDArray[np.float64], score: float) -> NDArray[np.float32]:
    """A unit vector at cosine `score` to the unit `vector`."""
    other = np.random.default_rng(1).standard_normal(vector.shape)
    other -= (other @ vector) * vector
    other /= np.linalg.norm(other)
    return np.asarray(score * vector + np.sqrt(1 - score**2) * other, dtype=np.float32)


@pytest.mark.parametrize(("photo_b", "copies"), [(b"the same photo" * 40, 1), (b"another photo" * 40, 0)])
def test_the_receipt_counts_the_same_photo_under_another_application(
    tmp_path: Path, photo_b: bytes, copies: int
) -> None:
    settings = Settings.load(data_dir=tmp_path / "registry")
    service, adapters = build_service(settings, with_engine=False)
    try:
        on_fp32 = template(settings, person=5, variant=0, noise=0.0)
        on_bf16 = replace(on_fp32, embedding=_lean(on_fp32.embedding.astype(np.float64), 0.9984))
        photo_a = b"the same photo" * 40
        first = service.register(InputRef("a.jpg", "APP-1"), "1" * 64, on_fp32, photo_a)
        digest_b = "1" * 64 if photo_b == photo_a else "2" * 64
        second = service.register(InputRef("b.jpg", "APP-2"), digest_b, on_bf16, photo_b)
        assert first.record_id and second.record_id
        receipt = service.erase(first.record_id, "dpo", "erasure request 7")
        assert receipt.get("identical_copies_in_other_records", 0) == copies
        if copies == 0:
            assert {"photo", "crop", "template"} <= set(receipt["verified"])
    finally:
        adapters.close()

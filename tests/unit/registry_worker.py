"""One process of the multi-process registry tests (run as `python -m tests.unit.registry_worker`):
it opens the registry like any command does, waits for the start signal, and registers one
synthetic template (no model files, no photos needed), printing the import item as JSON.

`hold` mode instead opens the registry, searches once, and keeps it open until killed (as a
`serve` would)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from face_dedup.bootstrap import build_service
from face_dedup.models.registry import get_pack
from face_dedup.service import InputRef
from face_dedup.settings import Settings
from face_dedup.vision.pipeline import FaceTemplate


def template(settings: Settings, person: int, variant: int, noise: float) -> FaceTemplate:
    pack = get_pack(settings.model_pack)
    dim = pack.contract.embedding_dim
    base = np.random.default_rng(person).standard_normal(dim)
    jitter = np.random.default_rng(10_000 + variant).standard_normal(dim) if noise else np.zeros(dim)
    vector = base / np.linalg.norm(base) + noise * jitter / np.linalg.norm(jitter if noise else base)
    crop = np.random.default_rng(person * 1000 + variant).integers(0, 255, (112, 112, 3), dtype=np.uint8)
    return FaceTemplate(
        embedding=(vector / np.linalg.norm(vector)).astype(np.float32),
        model_pack=pack.id,
        aligned_crop=crop,
        box=(0.0, 0.0, 112.0, 112.0),
        measures={"face_px": 112.0},
        notes=(),
        image_format="png",
        faces_found=1,
    )


def main() -> None:
    mode, data_dir, go = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    settings = Settings.load(data_dir=data_dir)
    service, adapters = build_service(settings, with_engine=False)
    try:
        if mode == "hold":
            service.gallery_size()
            go.write_text("open")
            while True:
                time.sleep(0.1)
        application, person, variant, noise = (
            sys.argv[4],
            int(sys.argv[5]),
            int(sys.argv[6]),
            float(sys.argv[7]),
        )
        face = template(settings, person, variant, noise)
        photo = f"photo of person {person}, variant {variant}".encode() * 50
        while not go.exists():
            time.sleep(0.005)
        item = service.register(
            InputRef(f"{application}.jpg", application), f"{person:08d}{variant:056d}", face, photo
        )
        sys.stdout.write(
            json.dumps(
                {
                    "application_id": application,
                    "outcome": item.outcome.value,
                    "record_id": item.record_id,
                    "candidates": [c.record_id for c in item.candidates],
                }
            )
            + "\n"
        )
    finally:
        adapters.close()


if __name__ == "__main__":
    main()

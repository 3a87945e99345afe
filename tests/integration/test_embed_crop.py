"""FaceAnalyzer.embed_crop: how a migration re-embeds a record from its stored aligned crop
without detecting again (template_migration.template_for). The real engine embeds the crop
it stored; anything else is refused with None, so the caller falls back to the photo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from face_dedup.analysis import FaceTemplate
from face_dedup.template_migration import template_for
from face_dedup.vision.pipeline import FaceEngine
from tests.support.fake_face_analyzer import FakeFaceAnalyzer

pytestmark = pytest.mark.shared_data

PERSON = "lfw/Abel_Pacheco/Abel_Pacheco_0001.jpg"


def test_the_engine_embeds_its_own_stored_crop_as_the_photo_did(engine: FaceEngine, faces_root: Path) -> None:
    photo = (faces_root / PERSON).read_bytes()
    result = engine.process(photo)
    assert isinstance(result, FaceTemplate)
    vector = engine.embed_crop(engine.crop_png(result.aligned_crop))
    assert vector is not None
    # PNG is lossless: the same aligned pixels, the same template
    assert float(np.dot(vector, result.embedding)) > 0.999
    assert template_for(engine, engine.pack, engine.crop_png(result.aligned_crop), None) is not None


def test_a_crop_of_another_size_or_not_an_image_is_refused(engine: FaceEngine, faces_root: Path) -> None:
    photo = (faces_root / PERSON).read_bytes()
    result = engine.process(photo)
    assert isinstance(result, FaceTemplate)
    assert engine.embed_crop(engine.crop_png(result.aligned_crop[:100, :100])) is None
    assert engine.embed_crop(b"not a png") is None
    # no crop to embed and no photo kept: the reason code, not an exception
    assert template_for(engine, engine.pack, b"not a png", None) == "NO_PHOTO_KEPT"


def test_an_analyzer_that_cannot_embed_a_crop_answers_none(engine: FaceEngine) -> None:
    fake = FakeFaceAnalyzer(engine.pack)
    crop = engine.crop_png(np.zeros((112, 112, 3), np.uint8))
    assert fake.embed_crop(crop) is None
    assert template_for(fake, engine.pack, crop, None) == "NO_PHOTO_KEPT"

"""The face engine with the real models on real photos from ../shared (skipped when absent)."""

from __future__ import annotations

import io
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageFilter

from face_dedup.errors import Reason
from face_dedup.vision.pipeline import FaceEngine, FaceTemplate, Rejection
from tests.conftest import encode
from tests.unit.test_decode import png_header_only

pytestmark = pytest.mark.shared_data

PERSON = "lfw/Abel_Pacheco/Abel_Pacheco_0001.jpg"
SAME_PERSON = "lfw/Abel_Pacheco/Abel_Pacheco_0004.jpg"
OTHER_PERSON = "lfw/Akhmed_Zakayev/Akhmed_Zakayev_0001.jpg"


def template(engine: FaceEngine, data: bytes) -> FaceTemplate:
    result = engine.process(data)
    assert isinstance(result, FaceTemplate), f"rejected: {getattr(result, 'reason', None)} {result}"
    return result


def rejection(engine: FaceEngine, data: bytes) -> Rejection:
    result = engine.process(data)
    assert isinstance(result, Rejection), "expected a rejection"
    return result


def test_template_is_normalised_and_tagged_with_its_pack(engine: FaceEngine, faces_root: Path) -> None:
    result = template(engine, (faces_root / PERSON).read_bytes())
    assert result.embedding.shape == (engine.pack.contract.embedding_dim,)
    assert abs(float(np.linalg.norm(result.embedding)) - 1) < 1e-5
    assert result.model_pack == engine.pack.id
    assert result.aligned_crop.shape == (112, 112, 3)
    assert {"inter_eye_px", "sharpness", "brightness", "yaw_ratio", "detector_score"} <= set(result.measures)


def test_same_person_scores_higher_than_another(engine: FaceEngine, faces_root: Path) -> None:
    a = template(engine, (faces_root / PERSON).read_bytes()).embedding
    b = template(engine, (faces_root / SAME_PERSON).read_bytes()).embedding
    c = template(engine, (faces_root / OTHER_PERSON).read_bytes()).embedding
    assert float(a @ b) > 0.45
    assert float(a @ c) < 0.3


@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_rotated_photos_are_turned_upright_not_embedded_wrong(
    engine: FaceEngine, faces_root: Path, degrees: int
) -> None:
    image = Image.open(faces_root / PERSON)
    upright = template(engine, encode(image)).embedding
    rotated = template(engine, encode(image.rotate(-degrees, expand=True)))  # PIL turns counter-clockwise
    assert rotated.rotation_degrees == (360 - degrees) % 360 or rotated.rotation_degrees == degrees
    assert float(rotated.embedding @ upright) > 0.9
    assert any("rotated" in note for note in rotated.notes)


def test_exif_rotated_photo_is_decoded_upright(engine: FaceEngine, faces_root: Path) -> None:
    image = Image.open(faces_root / PERSON)
    upright = template(engine, encode(image, "JPEG", quality=95)).embedding
    exif = Image.Exif()
    exif[0x0112] = 8  # stored turned; display rotates 90 degrees counter-clockwise
    stored = image.rotate(-90, expand=True)
    result = template(engine, encode(stored, "JPEG", quality=95, exif=exif.tobytes()))
    assert result.rotation_degrees == 0  # EXIF already made it upright; no search needed
    assert float(result.embedding @ upright) > 0.95


def test_yale_gifs_without_extension_are_detected(engine: FaceEngine, faces_root: Path) -> None:
    files = sorted(p for p in (faces_root / "photos" / "yale").glob("*/*") if p.is_file())
    assert files and all(p.suffix not in (".gif", ".GIF") for p in files)
    results = [engine.process(p.read_bytes()) for p in files]
    templates = [r for r in results if isinstance(r, FaceTemplate)]
    assert all(t.image_format == "GIF" for t in templates)
    assert len(templates) >= 0.9 * len(files)
    assert all(r.reason in Reason for r in results if isinstance(r, Rejection))


def test_subject_of_multi_face_photos_is_the_labelled_person(engine: FaceEngine, faces_root: Path) -> None:
    """In the deepface photos with bystanders, the face chosen must be the labelled person's:
    it matches that person's other photos better than any other identity's."""
    folder = faces_root / "photos" / "deepface"
    by_person = {d.name: sorted(d.iterdir()) for d in folder.iterdir() if d.is_dir()}
    embeddings = {}
    multi = []
    for person, files in by_person.items():
        for path in files:
            result = engine.process(path.read_bytes())
            if isinstance(result, FaceTemplate):
                embeddings[path] = (person, result.embedding)
                if result.faces_found > 1:
                    multi.append(path)
    assert len(multi) >= 3, "the shared set has photos with several faces"
    for path in multi:
        person, vector = embeddings[path]
        own = [float(v @ vector) for p, (who, v) in embeddings.items() if who == person and p != path]
        others = [float(v @ vector) for who, v in embeddings.values() if who != person]
        if own:
            assert max(own) > max(others), f"{path.name}: the chosen face is not {person}"


def test_washed_out_photo_is_not_embedded(engine: FaceEngine, faces_root: Path) -> None:
    image = Image.open(faces_root / PERSON).convert("RGB")
    result = engine.process(encode(ImageEnhance.Brightness(image).enhance(3.2)))
    assert isinstance(result, Rejection)
    assert result.reason in (Reason.TOO_BRIGHT, Reason.LOW_CONFIDENCE)


def test_two_people_side_by_side_is_multiple_faces(engine: FaceEngine, faces_root: Path) -> None:
    left = Image.open(faces_root / PERSON).convert("RGB")
    right = Image.open(faces_root / OTHER_PERSON).convert("RGB")
    collage = Image.new("RGB", (300, 150))
    collage.paste(left, (0, 0))
    collage.paste(right, (150, 0))
    assert rejection(engine, encode(collage)).reason is Reason.MULTIPLE_FACES


def degraded(faces_root: Path, kind: str) -> bytes:
    image = Image.open(faces_root / PERSON).convert("RGB")
    if kind == "blur":
        return encode(image.filter(ImageFilter.GaussianBlur(3)))
    if kind == "dark":
        return encode(ImageEnhance.Brightness(image).enhance(0.15))
    if kind == "bright":
        return encode(ImageEnhance.Brightness(image).enhance(2.5))
    if kind == "small":
        canvas = Image.new("RGB", (600, 600), (128, 128, 128))
        canvas.paste(image.resize((45, 45)), (300, 300))
        return encode(canvas)
    if kind == "no_face":
        return encode(Image.new("RGB", (300, 200), (30, 120, 60)))
    raise AssertionError(kind)


@pytest.mark.parametrize(
    ("kind", "reasons"),
    [
        ("blur", {Reason.BLURRY}),
        ("dark", {Reason.TOO_DARK}),
        ("bright", {Reason.TOO_BRIGHT}),
        ("small", {Reason.FACE_TOO_SMALL, Reason.NO_FACE}),
        ("no_face", {Reason.NO_FACE}),
    ],
)
def test_quality_failures_have_reasons_and_measures(
    engine: FaceEngine, faces_root: Path, kind: str, reasons: set[Reason]
) -> None:
    result = rejection(engine, degraded(faces_root, kind))
    assert result.reason in reasons
    assert result.message
    if result.issues:
        assert result.issues[0].reason is result.reason
        assert result.issues[0].measured is not None


def bad_corpus(faces_root: Path) -> dict[str, bytes]:
    good = (faces_root / PERSON).read_bytes()
    flipped = bytearray(good)
    rng = np.random.default_rng(3)
    for position in rng.integers(200, len(flipped), size=40):
        flipped[position] ^= 0xFF
    return {
        "truncated": good[: len(good) // 2],
        "bit_flipped": bytes(flipped),
        "empty": b"",
        "text": b"name,photo\nalice,alice.jpg\n",
        "huge": png_header_only(20000, 20000),
        "zero_size": png_header_only(0, 0),
        "wrong_extension_png_bytes": encode(Image.open(faces_root / PERSON)),
        "gzip": zlib.compress(good),
        "html": b"<html><body>not an image</body></html>",
    }


def test_bad_input_corpus_gets_typed_outcomes_never_crashes(engine: FaceEngine, faces_root: Path) -> None:
    outcomes = {}
    for name, data in bad_corpus(faces_root).items():
        result = engine.process(data)
        outcomes[name] = "template" if isinstance(result, FaceTemplate) else result.reason
    assert outcomes["truncated"] is Reason.UNDECODABLE
    assert outcomes["empty"] is Reason.EMPTY_FILE
    assert outcomes["text"] is Reason.UNSUPPORTED_FORMAT
    assert outcomes["huge"] is Reason.TOO_LARGE
    assert outcomes["zero_size"] in (Reason.UNDECODABLE, Reason.TOO_SMALL)
    assert outcomes["wrong_extension_png_bytes"] == "template"  # bytes decide, not names
    assert outcomes["gzip"] is Reason.UNSUPPORTED_FORMAT
    assert outcomes["html"] is Reason.UNSUPPORTED_FORMAT
    assert outcomes["bit_flipped"] == "template" or isinstance(outcomes["bit_flipped"], Reason)


def test_big_multi_megapixel_photo_reports_eye_distance_in_original_pixels(
    engine: FaceEngine, faces_root: Path
) -> None:
    def width(path: Path) -> int:
        with Image.open(path) as image:
            return int(image.width)

    big = max((faces_root / "photos" / "deepface").glob("*/*.jpg"), key=width)
    assert width(big) > 1600
    result = engine.process(big.read_bytes())
    assert isinstance(result, FaceTemplate)
    # detection ran on a reduced copy; the eye distance is reported in the submitted photo's pixels
    small = Image.open(io.BytesIO(big.read_bytes()))
    small.thumbnail((800, 800))
    reduced = engine.process(encode(small, "JPEG", quality=95))
    assert isinstance(reduced, FaceTemplate)
    ratio = result.measures["inter_eye_px"] / reduced.measures["inter_eye_px"]
    assert ratio == pytest.approx(width(big) / small.width, rel=0.1)

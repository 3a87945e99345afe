"""Several templates per record (issue 11): the policy and fusion (pure), the stores' template
writes (SQLite and DynamoDB on moto, as the RecordStore contract), and the use case on the real
embedded adapters with the engine faked (FakeFaceAnalyzer): adding, refusing, replacing the
oldest, scoring with the calibrated centroid, and erasing every template."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import boto3
import numpy as np
import pytest
from moto import mock_aws
from numpy.typing import NDArray

from face_dedup.adapters.dynamodb_store import DynamoRecordStore, TableNames, create_tables
from face_dedup.adapters.sqlite_store import SqliteRecordStore
from face_dedup.add_template import add_photo
from face_dedup.blob_keys import template_prefix
from face_dedup.bootstrap import Adapters, build_service
from face_dedup.domain import Actor, AuditEvent, ImportItem, Outcome, Record, RecordStatus, Role, utc_now
from face_dedup.errors import PermissionDenied
from face_dedup.models.custom import find_pack
from face_dedup.ports import EnrollmentCommit, IndexEntry, RecordStore
from face_dedup.record_templates import (
    CENTROID_SCORE_OFFSET,
    Template,
    TemplatePolicy,
    TemplateRefused,
    TemplateSource,
    calibrated_score,
    centroid,
    plan_addition,
    score_offset,
)
from face_dedup.service import DedupService, InputRef
from face_dedup.settings import Settings
from face_dedup.vision.pipeline import FaceTemplate, Rejection
from tests.support.fake_face_analyzer import FakeFaceAnalyzer, at_score, unit

OFFICER = Actor("olga", Role.OFFICER)


def vec(*values: float) -> NDArray[np.float32]:
    v = np.asarray(values, dtype=np.float32)
    return np.asarray(v / np.linalg.norm(v), dtype=np.float32)


def template(
    number: int, source: TemplateSource, embedding: NDArray[np.float32], **quality: float
) -> Template:
    at = f"2026-01-{number:02d}T00:00:00.000+00:00"
    return Template("r1", number, "p1", source, at, at, {"detector_score": 0.9, **quality}, embedding)


# -- the pure rules -----------------------------------------------------------------------------


def test_centroid_is_the_normalised_mean() -> None:
    c = centroid([vec(1, 0, 0), vec(0, 1, 0)])
    assert np.allclose(c, vec(1, 1, 0)) and abs(float(np.linalg.norm(c)) - 1) < 1e-6
    with pytest.raises(ValueError, match="cancel"):
        centroid([vec(1, 0), vec(-1, 0)])


def test_calibrated_score_lowers_only_several_template_records() -> None:
    assert calibrated_score(0.5, 1) == 0.5
    assert calibrated_score(0.5, 2) == pytest.approx(0.5 - CENTROID_SCORE_OFFSET[2])
    assert score_offset(3) == score_offset(5) > score_offset(2) > 0
    with pytest.raises(ValueError):
        score_offset(6)  # beyond what was measured: no guess


def _plan(existing: list[Template], new: Template, **overrides: object) -> object:
    args: dict[str, object] = {
        "record_status": "enrolled",
        "existing": existing,
        "new": new,
        "verify_score": 0.6,
        "verify_threshold": 0.5,
        "rival_record_ids": [],
    }
    args.update(overrides)
    return plan_addition(TemplatePolicy(max_templates=3, min_detection_score=0.85), **args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"record_status": "pending_review"}, "record_not_enrolled"),
        ({"record_status": "linked_duplicate"}, "record_not_enrolled"),
        ({"verify_score": 0.49}, "no_verified_match"),
        ({"rival_record_ids": ["rec_other"]}, "matches_another_record"),
    ],
)
def test_the_policy_refuses(overrides: dict[str, object], reason: str) -> None:
    enrolled = template(1, TemplateSource.ENROLLMENT, vec(1, 0, 0))
    with pytest.raises(TemplateRefused) as refused:
        _plan([enrolled], template(2, TemplateSource.VERIFIED, vec(1, 0.3, 0)), **overrides)
    assert refused.value.reason == reason


def test_the_policy_refuses_below_the_quality_floor() -> None:
    enrolled = template(1, TemplateSource.ENROLLMENT, vec(1, 0, 0))
    poor = template(2, TemplateSource.VERIFIED, vec(1, 0.3, 0), detector_score=0.8)
    with pytest.raises(TemplateRefused) as refused:
        _plan([enrolled], poor)
    assert refused.value.reason == "below_quality_floor"
    unmeasured = replace(poor, quality={})
    with pytest.raises(TemplateRefused, match="not measured"):
        _plan([enrolled], unmeasured)


def test_a_capture_date_after_today_is_refused() -> None:
    enrolled = template(1, TemplateSource.ENROLLMENT, vec(1, 0, 0))
    later = template(2, TemplateSource.VERIFIED, vec(1, 0.3, 0))  # added 2026-01-02 (UTC)
    for wrong in ("9999-12-31", "2026-01-04", "2026-01-03T12:00:00+00:00"):
        with pytest.raises(TemplateRefused) as refused:
            _plan([enrolled], replace(later, captured_at=wrong))
        assert refused.value.reason == "captured_in_future", wrong
    with pytest.raises(TemplateRefused) as refused:
        _plan([enrolled], replace(later, captured_at="yesterday"))
    assert refused.value.reason == "bad_capture_date"
    # Earlier dates, and a local date a timezone ahead of UTC, are fine.
    for fine in ("2019-05-01", "2026-01-02", "2026-01-02T23:30:00+14:00"):
        _plan([enrolled], replace(later, captured_at=fine))


def test_a_photo_must_match_the_enrollment_photo_not_only_the_centroid() -> None:
    """A lookalike's photo that once passed pulls the centroid towards its owner; their next
    photo matches that centroid but not the enrolled person: refused (no drift)."""
    enrolled = template(1, TemplateSource.ENROLLMENT, vec(1, 0, 0))
    lookalike = template(2, TemplateSource.VERIFIED, vec(0.6, 0.8, 0))  # 0.6: passed at 0.5
    theirs = template(3, TemplateSource.VERIFIED, vec(0.2, 1, 0))
    against_centroid = float(np.dot(centroid([enrolled.embedding, lookalike.embedding]), theirs.embedding))
    assert against_centroid > 0.6  # the centroid alone would take it
    with pytest.raises(TemplateRefused) as refused:
        _plan([enrolled, lookalike], theirs, verify_score=against_centroid)
    assert refused.value.reason == "no_match_with_enrollment_photo"
    # The same person's photo, close to the enrollment photo, is still taken.
    plan = _plan([enrolled, lookalike], template(3, TemplateSource.VERIFIED, vec(1, 0.3, 0)))
    assert [t.number for t in plan.templates] == [1, 2, 3]  # type: ignore[attr-defined]


def test_a_full_record_replaces_its_oldest_later_photo_never_the_enrollment_photo() -> None:
    t1 = template(1, TemplateSource.ENROLLMENT, vec(1, 0, 0))
    t2 = template(2, TemplateSource.VERIFIED, vec(1, 0.2, 0))
    t3 = template(3, TemplateSource.RENEWAL, vec(1, 0, 0.2))
    t4 = template(4, TemplateSource.VERIFIED, vec(1, 0.1, 0.1))
    plan = _plan([t1, t2, t3], t4)
    assert plan.replaced == t2  # type: ignore[attr-defined]
    assert [t.number for t in plan.templates] == [1, 3, 4]  # type: ignore[attr-defined]
    assert np.allclose(plan.centroid, centroid([t1.embedding, t3.embedding, t4.embedding]))  # type: ignore[attr-defined]
    with pytest.raises(TemplateRefused) as refused:
        _plan([t1], replace(t4, source=TemplateSource.ENROLLMENT))
    assert refused.value.reason == "bad_source"


# -- the stores ---------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "dynamodb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RecordStore]:
    if request.param == "sqlite":
        sqlite = SqliteRecordStore(tmp_path / "registry.sqlite")
        yield sqlite
        sqlite.close()
        return
    with mock_aws():
        client = boto3.client("dynamodb", region_name="eu-west-1")
        names = TableNames.with_prefix("test-")
        create_tables(client, names)
        yield DynamoRecordStore(client, names)


def _enrolled(store: RecordStore) -> Record:
    record = Record(
        "r1", "t1", "p1", "APP-1", "/in/r1.jpg", "0" * 64, RecordStatus.ENROLLED, utc_now(), vec(1, 0, 0)
    )
    item = ImportItem("k1", "t1", "/in/r1.jpg", "APP-1", "0" * 64, Outcome.ENROLLED, utc_now(), "r1")
    store.commit(EnrollmentCommit(item, record))
    stored = store.get_record("r1")
    assert stored is not None
    return stored


def _event() -> AuditEvent:
    return AuditEvent("record.template_added", "olga", "t1", utc_now(), {"record_id": "r1", "template": 2})


def test_store_keeps_templates_and_centroid_atomically(store: RecordStore) -> None:
    record = _enrolled(store)
    assert record.template_count == 1 and store.record_templates("r1") == []
    t1 = template(1, TemplateSource.ENROLLMENT, vec(1, 0, 0))
    t2 = template(2, TemplateSource.VERIFIED, vec(0.8, 0.6, 0), detector_score=0.93)
    c = centroid([t1.embedding, t2.embedding])
    assert store.replace_templates(record, [t1, t2], c, _event())
    stored = store.get_record("r1")
    assert stored is not None and stored.template_count == 2
    assert np.array_equal(stored.embedding, c)
    got = store.record_templates("r1")
    assert [(t.number, t.source, t.quality["detector_score"]) for t in got] == [
        (1, TemplateSource.ENROLLMENT, 0.9),
        (2, TemplateSource.VERIFIED, 0.93),
    ]
    assert np.array_equal(got[1].embedding, t2.embedding) and got[1].captured_at == t2.captured_at
    assert [e.action for e in store.audit_events(tenant="t1")] == ["record.template_added"]
    # Written against what was read: the record read before this change is stale now.
    t3 = template(3, TemplateSource.RENEWAL, vec(0.8, 0, 0.6))
    assert not store.replace_templates(record, [t1, t3], centroid([t1.embedding, t3.embedding]), _event())
    assert [t.number for t in store.record_templates("r1")] == [1, 2]
    assert len(store.audit_events(tenant="t1")) == 1


def test_erasing_the_record_erases_every_template(store: RecordStore) -> None:
    record = _enrolled(store)
    t1 = template(1, TemplateSource.ENROLLMENT, vec(1, 0, 0))
    t2 = template(2, TemplateSource.VERIFIED, vec(0.8, 0.6, 0))
    assert store.replace_templates(record, [t1, t2], centroid([t1.embedding, t2.embedding]), _event())
    store.erase_record("r1", AuditEvent("record.erased", "dpo", "t1", utc_now(), {"record_id": "r1"}))
    assert store.get_record("r1") is None and store.record_templates("r1") == []


def test_sqlite_registry_from_before_several_templates_opens_with_one_each(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.sqlite"
    SqliteRecordStore(path).close()
    db = sqlite3.connect(path)  # as an older version left it: no template_count column
    db.execute("ALTER TABLE records DROP COLUMN template_count")
    db.execute(
        "INSERT INTO records(record_id, tenant, model_pack, source, content_sha256, status, created_at, "
        "quality, embedding) VALUES ('r0', 't1', 'p1', 's', 'x', 'enrolled', 'now', '{}', ?)",
        (vec(1, 0).tobytes(),),
    )
    db.commit()
    db.close()
    store = SqliteRecordStore(path)
    record = store.get_record("r0")
    store.close()
    assert record is not None and record.template_count == 1


def test_processes_opening_an_older_registry_at_once_all_open_it(tmp_path: Path) -> None:
    """Found by the clean-clone CI: processes racing to open a registry each saw the column
    missing, and the second ALTER failed ("duplicate column name"), so that process could not
    open the registry at all."""
    import sqlite3
    import subprocess
    import sys

    path = tmp_path / "old.sqlite"
    SqliteRecordStore(path).close()
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE records DROP COLUMN template_count")
    db.commit()
    db.close()
    go = tmp_path / "go"
    opener = (
        "import sys, time, pathlib\n"
        "from face_dedup.adapters.sqlite_store import SqliteRecordStore\n"
        "go = pathlib.Path(sys.argv[2])\n"
        "while not go.exists(): time.sleep(0.001)\n"
        "SqliteRecordStore(pathlib.Path(sys.argv[1])).close()\n"
    )
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", opener, str(path), str(go)], stderr=subprocess.PIPE, text=True
        )
        for _ in range(6)
    ]
    go.write_text("go")
    errors = [w.communicate(timeout=120)[1] for w in workers]
    assert [w.returncode for w in workers] == [0] * 6, errors
    columns = {row[1] for row in sqlite3.connect(path).execute("PRAGMA table_info(records)")}
    assert "template_count" in columns


# -- the use case, on the embedded adapters with the engine faked --------------------------------


class ScoredFake(FakeFaceAnalyzer):
    """The fake engine, also reporting a detector confidence (the quality floor reads it)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.confidence: dict[bytes, float] = {}

    def process(self, data: bytes) -> FaceTemplate | Rejection:
        result = super().process(data)
        if isinstance(result, FaceTemplate):
            return replace(
                result, measures={**result.measures, "detector_score": self.confidence.get(data, 0.9)}
            )
        return result


def _settings(data_dir: Path) -> Settings:
    return Settings.load({}, data_dir=data_dir, models_dir=data_dir.parent / "no-models")


@pytest.fixture
def fake(tmp_path: Path) -> ScoredFake:
    settings = _settings(tmp_path / "registry")
    return ScoredFake(find_pack(settings.model_pack, settings.models_dir))


@pytest.fixture
def built(tmp_path: Path, fake: ScoredFake) -> Iterator[tuple[DedupService, Adapters]]:
    service, adapters = build_service(_settings(tmp_path / "registry"), analyzer=fake)
    yield service, adapters
    adapters.close()


def _person(service: DedupService, fake: ScoredFake) -> str:
    photo = fake.face(b"jpeg-bytes-of-the-enrollment-photo", unit(fake.dim, 0))
    record_id = service.enroll(photo, InputRef("p.jpg", "APP-1")).record_id
    assert record_id is not None
    return record_id


def test_a_verified_photo_joins_the_record_and_its_centroid_is_indexed(
    built: tuple[DedupService, Adapters], fake: ScoredFake
) -> None:
    service, _ = built
    record_id = _person(service, fake)
    later = fake.face(b"later", at_score(unit(fake.dim, 0), 0.9, 1))
    added = add_photo(service, record_id, later, OFFICER)
    assert (added.number, added.template_count, added.replaced) == (2, 2, None)
    record = service.store.get_record(record_id)
    assert record is not None and record.template_count == 2
    expected = centroid(
        [unit(fake.dim, 0).astype(np.float32), at_score(unit(fake.dim, 0), 0.9, 1).astype(np.float32)]
    )
    assert np.allclose(record.embedding, expected, atol=1e-6)
    hit = service.index.search(expected, tenant=service.tenant, model_pack=service.model_pack, k=1)[0]
    assert hit.record_id == record_id and hit.score == pytest.approx(1.0, abs=1e-5)
    assert len(service.blobs.keys(template_prefix(service.tenant, record_id, 2))) == 2
    (event,) = [e for e in service.store.audit_events() if e.action == "record.template_added"]
    assert event.actor == "olga" and event.details["template"] == 2 and event.details["source"] == "verified"
    assert "p.jpg" not in repr(event.details) and "embedding" not in repr(event.details)
    # A search scores the record by its centroid, lowered by the measured offset for 2 templates.
    probe = fake.face(b"probe", at_score(unit(fake.dim, 0), 0.95, 2))
    (candidate,) = service.search(probe, top_k=1).candidates
    raw = float(np.dot(record.embedding, at_score(unit(fake.dim, 0), 0.95, 2)))
    assert candidate.score == pytest.approx(raw - CENTROID_SCORE_OFFSET[2], abs=1e-5)


def test_refusals_keep_nothing(built: tuple[DedupService, Adapters], fake: ScoredFake) -> None:
    service, _ = built
    record_id = _person(service, fake)
    stranger = fake.face(b"stranger", unit(fake.dim, 3))
    with pytest.raises(TemplateRefused) as refused:
        add_photo(service, record_id, stranger, OFFICER)
    assert refused.value.reason == "no_verified_match"
    blurry_but_same = fake.face(b"poor", at_score(unit(fake.dim, 0), 0.9, 1))
    fake.confidence[blurry_but_same] = 0.8
    with pytest.raises(TemplateRefused) as refused:
        add_photo(service, record_id, blurry_but_same, OFFICER)
    assert refused.value.reason == "below_quality_floor"
    with pytest.raises(PermissionDenied):
        add_photo(service, record_id, fake.face(b"x", unit(fake.dim, 0)), Actor("al", Role.AUDITOR))
    # Someone else enrolled who also looks like the photo: never added without a review.
    other = fake.face(b"twin", at_score(unit(fake.dim, 0), 0.97, 4))
    service.enroll(other, InputRef("t.jpg", "APP-2"))
    ambiguous = fake.face(b"ambiguous", at_score(unit(fake.dim, 0), 0.98, 5))
    with pytest.raises(TemplateRefused):
        add_photo(service, record_id, ambiguous, OFFICER)
    record = service.store.get_record(record_id)
    assert record is not None and record.template_count == 1
    assert service.blobs.keys(f"{service.tenant}/{record_id}/templates/") == []
    assert not [e for e in service.store.audit_events() if e.action == "record.template_added"]


def test_the_same_photo_is_not_added_twice(built: tuple[DedupService, Adapters], fake: ScoredFake) -> None:
    service, _ = built
    record_id = _person(service, fake)
    later = fake.face(b"the-same-later-photo", at_score(unit(fake.dim, 0), 0.9, 1))
    add_photo(service, record_id, later, OFFICER)
    with pytest.raises(TemplateRefused) as refused:
        add_photo(service, record_id, later, OFFICER)
    assert refused.value.reason == "already_held"
    assert len(service.store.record_templates(record_id)) == 2


def test_the_same_photo_from_the_other_embedder_runtime_is_not_added_twice(
    built: tuple[DedupService, Adapters], fake: ScoredFake
) -> None:
    """One photo's onnxruntime fp32 and OpenVINO bf16 templates score down to 0.9984
    (bench/bf16_partition.py); a registry may hold both, so 0.9999 would add it again."""
    service, _ = built
    record_id = _person(service, fake)
    on_fp32 = at_score(unit(fake.dim, 0), 0.9, 1)
    add_photo(service, record_id, fake.face(b"photo-embedded-in-fp32", on_fp32), OFFICER)
    with pytest.raises(TemplateRefused) as refused:
        add_photo(
            service, record_id, fake.face(b"photo-embedded-in-bf16", at_score(on_fp32, 0.9984, 6)), OFFICER
        )
    assert refused.value.reason == "already_held"
    assert len(service.store.record_templates(record_id)) == 2


def test_a_full_record_replaces_its_oldest_later_photo(
    built: tuple[DedupService, Adapters], fake: ScoredFake
) -> None:
    service, _ = built
    assert service.settings.max_templates == 3
    record_id = _person(service, fake)
    for n, axis in ((2, 1), (3, 2), (4, 3)):
        add_photo(
            service, record_id, fake.face(f"p{n}".encode(), at_score(unit(fake.dim, 0), 0.9, axis)), OFFICER
        )
    templates = service.store.record_templates(record_id)
    assert [(t.number, t.source) for t in templates] == [
        (1, TemplateSource.ENROLLMENT),
        (3, TemplateSource.VERIFIED),
        (4, TemplateSource.VERIFIED),
    ]
    assert service.blobs.keys(template_prefix(service.tenant, record_id, 2)) == []
    assert len(service.blobs.keys(template_prefix(service.tenant, record_id, 4))) == 2


def test_erasure_leaves_no_template_photo_or_crop_in_any_file(
    built: tuple[DedupService, Adapters], fake: ScoredFake, tmp_path: Path
) -> None:
    service, _ = built
    record_id = _person(service, fake)
    photos = [fake.face(f"later-{n}".encode() * 8, at_score(unit(fake.dim, 0), 0.9, n)) for n in (1, 2)]
    for photo in photos:
        add_photo(service, record_id, photo, OFFICER)
    templates = service.store.record_templates(record_id)
    record = service.store.get_record(record_id)
    assert record is not None and len(templates) == 3
    needles = {f"template {t.number}": np.asarray(t.embedding, np.float32).tobytes() for t in templates}
    needles["centroid"] = np.asarray(record.embedding, np.float32).tobytes()
    needles |= {f"photo {n}": p for n, p in enumerate(photos, start=2)}
    files = [p for p in (tmp_path / "registry").rglob("*") if p.is_file()]
    assert any(needles["template 2"] in f.read_bytes() for f in files)  # the scan can find them
    receipt = service.erase(record_id, "dpo", "request 7")
    # The service's own scan of the data dir checked every template, photo and crop too.
    assert {"template 1", "template 3", "photo of template 2", "crop of template 3"} <= set(
        receipt["verified"]
    )
    assert service.store.record_templates(record_id) == []
    assert service.blobs.keys(f"{service.tenant}/{record_id}/") == []
    left = {
        (name, str(f.relative_to(tmp_path)))
        for f in (tmp_path / "registry").rglob("*")
        if f.is_file()
        for name, needle in needles.items()
        if needle in f.read_bytes()
    }
    assert left == set()


# -- the API route --------------------------------------------------------------------------------


def test_api_route_adds_a_photo_for_officers_only(
    built: tuple[DedupService, Adapters], fake: ScoredFake
) -> None:
    import base64
    import json

    from face_dedup_api.app import Dependencies, app, configure
    from face_dedup_api.images import ImageSigner
    from face_dedup_api.local_server import LocalContext, to_event
    from tests.support.review_api import queries_of

    service, _ = built
    record_id = _person(service, fake)
    configure(Dependencies(service=service, queries=queries_of(service), signer=ImageSigner(b"k" * 16)))

    def post(
        role: str, body: object, path: str = f"/records/{record_id}/photos"
    ) -> tuple[int, dict[str, object]]:
        who = {"cognito:username": "olga", "cognito:groups": role, "custom:tenant": service.tenant}
        event = to_event("POST", path, {"Content-Type": "application/json"}, json.dumps(body).encode(), who)
        response = app.resolve(event, LocalContext())  # type: ignore[arg-type]
        return int(response["statusCode"]), json.loads(response["body"])

    later = fake.face(b"api-later-photo-bytes", at_score(unit(fake.dim, 0), 0.9, 1))
    body = {
        "image_base64": base64.b64encode(later).decode(),
        "source": "renewal",
        "captured_at": "2026-11-30",
    }
    assert post("auditor", body)[0] == 403
    status, refused = post("officer", {**body, "image_base64": base64.b64encode(b"unknown bytes").decode()})
    assert status == 422 and str(refused["reason"]).startswith("rejected:")
    assert post("officer", {**body, "captured_at": "yesterday"})[0] == 422  # validated, not stored
    assert post("officer", body, "/records/..%2Fx/photos")[0] in (404, 422)
    status, added = post("officer", body)
    assert status == 200 and added["template"] == 2 and added["source"] == "renewal"
    (template_2,) = [t for t in service.store.record_templates(record_id) if t.number == 2]
    assert template_2.captured_at == "2026-11-30" and template_2.source is TemplateSource.RENEWAL


# -- a migration racing an added photo --------------------------------------------------------------


def test_a_migration_copy_read_before_a_photo_was_added_is_not_kept(
    built: tuple[DedupService, Adapters], fake: ScoredFake
) -> None:
    """`migrate run` reads a record's templates, re-embeds them, then writes the new pack's copy;
    a photo added in between (another process, under the registry lock) must not be lost at the
    cut-over by that stale copy: the write is refused and the next run redoes the record."""
    service, _ = built
    store = service.store
    assert isinstance(store, SqliteRecordStore)
    base = unit(fake.dim, 0)
    single = _person(service, fake)
    read_single = store.get_record(single)  # the migration reads a one-template record...
    assert read_single is not None and read_single.template_count == 1
    add_photo(service, single, fake.face(b"later-1", at_score(base, 0.9, 1)), OFFICER)  # ...a photo lands
    assert not store.put_pack_template(
        record_id=single, tenant=service.tenant, model_pack="other-pack", embedding=read_single.embedding
    )
    assert single not in store.pack_templates(tenant=service.tenant, model_pack="other-pack")

    read = store.record_templates(single)  # now a two-template record, read by the next run
    remade = [replace(t, model_pack="other-pack") for t in read]
    add_photo(service, single, fake.face(b"later-2", at_score(base, 0.9, 2)), OFFICER)  # a third lands
    assert not store.put_pack_record_templates(
        record_id=single,
        tenant=service.tenant,
        templates=remade,
        centroid=centroid([t.embedding for t in remade]),
    )
    assert store.pack_record_templates(single, "other-pack") == []
    assert single not in store.pack_templates(tenant=service.tenant, model_pack="other-pack")
    # Read again after the addition, the copy is kept: all three templates.
    remade = [replace(t, model_pack="other-pack") for t in store.record_templates(single)]
    assert store.put_pack_record_templates(
        record_id=single,
        tenant=service.tenant,
        templates=remade,
        centroid=centroid([t.embedding for t in remade]),
    )
    assert [t.number for t in store.pack_record_templates(single, "other-pack")] == [1, 2, 3]


def test_an_add_that_loses_a_race_leaves_the_winners_photo(
    built: tuple[DedupService, Adapters], fake: ScoredFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where nothing serialises additions (the cloud has no registry lock), two photos added to
    one record at once both become its template N. The one whose store write loses must not
    delete N's files: they are the winner's template's photo and crop now."""
    from contextlib import nullcontext

    from face_dedup.blob_keys import template_crop_key, template_photo_key
    from face_dedup.errors import InvalidState

    service, _ = built
    record_id = _person(service, fake)
    base = unit(fake.dim, 0)
    winner = fake.face(b"the winner's photo", at_score(base, 0.9, 1))
    loser = fake.face(b"the loser's photo", at_score(base, 0.9, 2))
    monkeypatch.setattr(service._registry, "registry_lock", nullcontext)  # as in the cloud
    store = service.store
    real = store.replace_templates

    def racing(*args: object) -> bool:  # the other request lands between the read and the write
        monkeypatch.setattr(store, "replace_templates", real)
        assert add_photo(service, record_id, winner, OFFICER).number == 2
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "replace_templates", racing)
    with pytest.raises(InvalidState, match="try again"):
        add_photo(service, record_id, loser, OFFICER)
    assert [t.number for t in store.record_templates(record_id)] == [1, 2]
    assert service.blobs.get(template_photo_key(service.tenant, record_id, 2)) == winner
    assert service.blobs.get(template_crop_key(service.tenant, record_id, 2))


def test_a_record_with_a_linked_duplicate_still_takes_a_photo(
    built: tuple[DedupService, Adapters], fake: ScoredFake
) -> None:
    """A person who applied twice has a second record, confirmed (two-person review) to be the
    first one's duplicate. Their later photo matches both: the confirmed duplicate is not
    another person, so it is no rival. Before the confirmation it is (test_refusals_keep_
    nothing), and a photo that also matches an unlinked record is still refused."""
    from face_dedup.domain import CaseDecision

    service, _ = built
    record_id = _person(service, fake)
    base = unit(fake.dim, 0)
    again = service.enroll(fake.face(b"applied again", at_score(base, 0.97, 3)), InputRef("q.jpg", "APP-2"))
    assert again.outcome is Outcome.DUPLICATE and again.case_id is not None
    renewal = fake.face(b"renewal", at_score(base, 0.95, 1))
    with pytest.raises(TemplateRefused, match="other record"):  # linked on its score alone
        add_photo(service, record_id, renewal, OFFICER)
    service.decide_case(again.case_id, CaseDecision.SAME_PERSON, OFFICER, "same", matched_record_id=record_id)
    service.confirm_case(again.case_id, Actor("sam", Role.SUPERVISOR), True, "agreed")
    linked = service.store.get_record(str(again.record_id))
    assert linked is not None and linked.linked_to == record_id
    assert linked.status is RecordStatus.CONFIRMED_DUPLICATE
    added = add_photo(service, record_id, renewal, OFFICER)
    assert added.template_count == 2
    stranger = service.enroll(fake.face(b"someone else", at_score(base, 0.45, 5)), InputRef("s.jpg", "APP-3"))
    assert stranger.record_id is not None and stranger.outcome is Outcome.REVIEW
    # A photo between the person and the stranger: matches the stranger at the review threshold.
    between = centroid([base.astype(np.float32), at_score(base, 0.45, 5).astype(np.float32)])
    with pytest.raises(TemplateRefused) as refused:
        add_photo(service, record_id, fake.face(b"between", between), OFFICER)
    assert refused.value.reason == "matches_another_record"


def test_the_erasure_scan_reads_the_record_and_skips_other_records_added_photos(tmp_path: Path) -> None:
    """Its own added photos' folders are read; other records' (most files of a registry whose
    records hold several photos) are skipped like their enrollment photo and crop."""
    from face_dedup.adapters.erasure_scan import DataDirScan

    needle = b"bytes of the erased person's photo " * 4
    for relative in (
        "blobs/default/rec_other/photo",
        "blobs/default/rec_other/templates/2/photo",
        "blobs/default/rec_gone/templates/3/aligned.png",
        "blobs/default/stray.bin",
        "registry.sqlite-wal",
    ):
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"header" + needle + b"trailer")
    found = DataDirScan(tmp_path)("rec_gone", {"photo": needle})
    assert found == [
        "its photo is still in blobs/default/rec_gone/templates/3/aligned.png",
        "its photo is still in blobs/default/stray.bin",
        "its photo is still in registry.sqlite-wal",
    ]


def test_an_index_error_after_the_store_write_is_healed_by_the_next_attempt(
    built: tuple[DedupService, Adapters], fake: ScoredFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store took the new template but the index write failed (an outage): the replaced
    photo is deleted anyway, and the next attempt on the record, even the retry of the same
    photo (refused: already held), writes the record's centroid to the index."""
    service, _ = built
    record_id = _person(service, fake)
    base = unit(fake.dim, 0)
    for n in (1, 2):
        add_photo(service, record_id, fake.face(f"later-{n}".encode(), at_score(base, 0.9, n)), OFFICER)
    index = service.index
    real_add = index.add

    before = service.store.get_record(record_id)
    assert before is not None

    def outage(entries: list[IndexEntry]) -> None:  # the new centroid's write fails
        if any(not np.array_equal(e.vector, before.embedding) for e in entries):
            raise OSError("index unavailable")
        real_add(entries)

    monkeypatch.setattr(index, "add", outage)
    third = fake.face(b"later-3", at_score(base, 0.9, 3))
    with pytest.raises(OSError):
        add_photo(service, record_id, third, OFFICER)
    record = service.store.get_record(record_id)
    assert record is not None and [t.number for t in service.store.record_templates(record_id)] == [1, 3, 4]
    assert service.blobs.keys(template_prefix(service.tenant, record_id, 2)) == []  # replaced: gone
    hit = index.search(record.embedding, tenant=service.tenant, model_pack=service.model_pack, k=1)[0]
    assert hit.score < 0.9999  # the index still holds the previous centroid
    monkeypatch.setattr(index, "add", real_add)
    with pytest.raises(TemplateRefused, match="already holds"):
        add_photo(service, record_id, third, OFFICER)
    hit = index.search(record.embedding, tenant=service.tenant, model_pack=service.model_pack, k=1)[0]
    assert hit.record_id == record_id and hit.score == pytest.approx(1.0, abs=1e-5)


def test_an_erasure_racing_an_addition_leaves_no_vector_in_the_index(
    built: tuple[DedupService, Adapters], fake: ScoredFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where nothing serialises them (the cloud has no registry lock), an erasure may land
    between an addition's store write and its index write: the record's new centroid must not
    be left in the index of an erased record."""
    from contextlib import nullcontext

    service, _ = built
    record_id = _person(service, fake)
    monkeypatch.setattr(service._registry, "registry_lock", nullcontext)  # as in the cloud
    store = service.store
    real = store.replace_templates

    def then_erased(*args: object) -> bool:
        done = real(*args)  # type: ignore[arg-type]
        service.erase(record_id, "dpo", "request")
        return done

    monkeypatch.setattr(store, "replace_templates", then_erased)
    add_photo(service, record_id, fake.face(b"later", at_score(unit(fake.dim, 0), 0.9, 1)), OFFICER)
    assert store.get_record(record_id) is None
    assert record_id not in service.index.record_ids(tenant=service.tenant, model_pack=service.model_pack)


def test_an_erasure_that_deleted_the_files_before_the_addition_wrote_them_leaves_none(
    built: tuple[DedupService, Adapters], fake: ScoredFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The erasure deletes the record's files first and its row last; an addition can write its
    photo in between and still win its store write. Its files must not outlive the record."""
    from contextlib import nullcontext

    service, _ = built
    record_id = _person(service, fake)
    monkeypatch.setattr(service._registry, "registry_lock", nullcontext)  # as in the cloud
    store = service.store
    real = store.replace_templates

    def row_erased_after(*args: object) -> bool:  # the erasure's last step lands now
        done = real(*args)  # type: ignore[arg-type]
        store.erase_record(record_id, AuditEvent("record.erased", "dpo", service.tenant, utc_now(), {}))
        return done

    monkeypatch.setattr(store, "replace_templates", row_erased_after)
    add_photo(service, record_id, fake.face(b"later", at_score(unit(fake.dim, 0), 0.9, 1)), OFFICER)
    assert service.blobs.keys(f"{service.tenant}/{record_id}/") == []
    assert record_id not in service.index.record_ids(tenant=service.tenant, model_pack=service.model_pack)

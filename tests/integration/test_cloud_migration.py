"""Migration between model packs in the cloud, on moto (S3 + DynamoDB): the DynamoDB store
holding a second pack's templates, the migration job's item processor (functions/migrate) and
its cut-over step. moto cannot run a Distributed Map: the state machine's shape is checked on
the synthesized template (tests/infra/test_migration_job.py); its item processor and cut-over
handlers are run here, in-process, on items shaped as the map hands them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

import boto3
import numpy as np
import pytest
from moto import mock_aws

from face_dedup.adapters.dynamodb_store import DynamoRecordStore, TableNames, create_tables, pack_attribute
from face_dedup.adapters.s3_blobs import S3BlobStore
from face_dedup.blob_keys import crop_key, photo_key, template_crop_key, template_photo_key
from face_dedup.cloud_migration import (
    BadItem,
    migrate_batch,
    pack_index_name,
    record_ids_from_keys,
)
from face_dedup.domain import AuditEvent, ImportItem, Outcome, Record, RecordStatus
from face_dedup.errors import ConfigError, InvalidState, Reason
from face_dedup.models.registry import DEFAULT_PACK_ID, get_pack
from face_dedup.ports import EnrollmentCommit
from face_dedup.record_templates import Template, TemplateSource, centroid, score_offset
from face_dedup.settings import Settings
from face_dedup.vision.png import encode_png
from tests.support.fake_face_analyzer import FakeFaceAnalyzer, unit

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

REGION = "eu-west-1"
OLD, NEW = "yunet-sface-v1", "yunet-sface-flip-v1"
DIM = 128


def _record(store: DynamoRecordStore, tenant: str, n: int, *, pack: str = OLD) -> Record:
    record = Record(
        record_id=f"rec_{tenant}_{n:04d}",
        tenant=tenant,
        model_pack=pack,
        application_id=f"app-{n}",
        source="test",
        content_sha256=f"{n:064x}",
        status=RecordStatus.ENROLLED,
        created_at="2026-12-01T00:00:00Z",
        embedding=unit(DIM, n % DIM).astype(np.float32),
    )
    item = ImportItem(
        key=f"k-{tenant}-{n}",
        tenant=tenant,
        source="test",
        application_id=record.application_id,
        content_sha256=record.content_sha256,
        outcome=Outcome.ENROLLED,
        created_at=record.created_at,
        record_id=record.record_id,
    )
    store.commit(EnrollmentCommit(item=item, record=record))
    return record


def _audit(tenant: str) -> AuditEvent:
    return AuditEvent(
        action="migration.switch", actor="test", tenant=tenant, at="2026-12-01T00:00:00Z", details={}
    )


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        create_tables(dynamodb, TableNames.with_prefix("fd-"))
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket="faces", CreateBucketConfiguration={"LocationConstraint": REGION})
        store = DynamoRecordStore(dynamodb, TableNames.with_prefix("fd-"))
        yield {"store": store, "blobs": S3BlobStore(s3, "faces"), "s3": s3, "dynamodb": dynamodb}


# -- the DynamoDB store holds a second pack's templates beside the records' own -----------------


def test_dynamodb_store_keeps_switches_and_drops_a_second_packs_templates(aws: dict[str, Any]) -> None:
    store: DynamoRecordStore = aws["store"]
    mine = [_record(store, "t1", n) for n in range(3)]
    other = _record(store, "t2", 7)
    v = unit(DIM, 50).astype(np.float32)

    assert store.put_pack_template(record_id=mine[0].record_id, tenant="t1", model_pack=NEW, embedding=v)
    # another tenant's record, the record's own pack, an erased record: nothing kept
    assert not store.put_pack_template(record_id=other.record_id, tenant="t1", model_pack=NEW, embedding=v)
    assert not store.put_pack_template(record_id=mine[1].record_id, tenant="t1", model_pack=OLD, embedding=v)
    assert not store.put_pack_template(record_id="rec_never", tenant="t1", model_pack=NEW, embedding=v)

    kept = store.pack_templates(tenant="t1", model_pack=NEW)
    assert list(kept) == [mine[0].record_id] and np.array_equal(kept[mine[0].record_id], v)
    assert store.pack_templates(tenant="t1", model_pack=OLD) == {}  # the records' own are not "kept"
    assert store.pack_templates(tenant="t2", model_pack=NEW) == {}
    ids = [r.record_id for r in mine] + [other.record_id, "rec_never"]
    assert store.missing_pack_templates(tenant="t1", model_pack=NEW, record_ids=ids) == {
        mine[1].record_id: 1,
        mine[2].record_id: 1,
    }

    # cut-over is refused, changing nothing, while a record has no template in the target pack
    with pytest.raises(InvalidState, match="2 record"):
        store.switch_pack(tenant="t1", source=OLD, target=NEW, audit=_audit("t1"))
    assert {r.model_pack for r in store.iter_templates(tenant="t1")} == {OLD}

    for n, record in enumerate(mine[1:], start=1):
        store.put_pack_template(
            record_id=record.record_id,
            tenant="t1",
            model_pack=NEW,
            embedding=unit(DIM, 50 + n).astype(np.float32),
        )
    assert store.switch_pack(tenant="t1", source=OLD, target=NEW, audit=_audit("t1")) == 3
    after = {r.record_id: r for r in store.iter_templates(tenant="t1")}
    assert {r.model_pack for r in after.values()} == {NEW}
    assert np.array_equal(after[mine[0].record_id].embedding, v)
    # the old templates are kept beside them (rollback), the new ones are no longer "kept"
    old = store.pack_templates(tenant="t1", model_pack=OLD)
    assert {k: list(x) for k, x in old.items()} == {r.record_id: list(r.embedding) for r in mine}
    assert store.pack_templates(tenant="t1", model_pack=NEW) == {}
    assert store.switch_pack(tenant="t1", source=OLD, target=NEW, audit=_audit("t1")) == 0  # again: no-op
    assert store.get_record(other.record_id).model_pack == OLD  # type: ignore[union-attr]  # other tenant

    # rollback is the same switch back; the audit log has both
    assert store.switch_pack(tenant="t1", source=NEW, target=OLD, audit=_audit("t1")) == 3
    assert {r.model_pack for r in store.iter_templates(tenant="t1")} == {OLD}
    assert [e.action for e in store.audit_events(tenant="t1")].count("migration.switch") == 3

    # finish: the other pack's templates are erased; an erased record takes its own with it
    store.erase_record(mine[2].record_id, _audit("t1"))
    assert store.drop_pack_templates(tenant="t1", model_pack=NEW) == 2
    items = aws["dynamodb"].scan(TableName="fd-records")["Items"]
    assert not any(pack_attribute(NEW) in item for item in items)


# -- the item processor ---------------------------------------------------------------------------


def _keep(blobs: S3BlobStore, tenant: str, record_id: str, *, photo: bytes | None, crop: bool = True) -> None:
    if photo is not None:
        blobs.put(photo_key(tenant, record_id), photo, "application/octet-stream")
    if crop:
        rng = np.random.default_rng(abs(hash(record_id)) % 2**32)
        blobs.put(
            crop_key(tenant, record_id),
            encode_png(rng.integers(0, 255, (112, 112, 3), np.uint8)),
            "image/png",
        )


def _listing(s3: Any, prefix: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket="faces", Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def test_migrate_batch_reembeds_from_photos_idempotently_and_reports_failures(aws: dict[str, Any]) -> None:
    store, blobs = aws["store"], aws["blobs"]
    analyzer = FakeFaceAnalyzer(get_pack(NEW))
    records = [_record(store, "t1", n) for n in range(4)]
    for n, record in enumerate(records[:3]):
        _keep(blobs, "t1", record.record_id, photo=analyzer.face(f"photo{n}".encode(), unit(DIM, 100 + n)))
    # the new pack finds no face in the fourth record's photo
    _keep(blobs, "t1", records[3].record_id, photo=analyzer.reject(b"photo3", Reason.NO_FACE, "no face"))
    keys = _listing(aws["s3"], "faces/t1/")
    ids = record_ids_from_keys(keys, s3_prefix="faces/", tenant="t1")
    assert ids == [r.record_id for r in records]  # photo and crop name the same record once

    def run() -> Any:
        return migrate_batch(
            store=store,
            blobs=blobs,
            analyzer=analyzer,
            active_pack=get_pack(OLD),
            target_pack=get_pack(NEW),
            tenant="t1",
            record_ids=ids,
        )

    first = run()
    assert (first.migrated, first.already, first.failed) == (3, 0, {records[3].record_id: "NO_FACE"})
    kept = store.pack_templates(tenant="t1", model_pack=NEW)
    for n, record in enumerate(records[:3]):
        assert np.allclose(kept[record.record_id], unit(DIM, 100 + n))
    # again: done records are skipped without being looked at, the failure is reported again
    calls = analyzer.calls
    second = run()
    assert (second.migrated, second.already, second.failed) == (0, 3, first.failed)
    assert analyzer.calls == calls + 1
    # an erasure between the listing and the processing wins: nothing is kept for it
    store.erase_record(records[3].record_id, _audit("t1"))
    assert run().failed == {}


def _two_templates(store: DynamoRecordStore, record: Record, first: Any, second: Any) -> Record:
    """The record as `records add-photo` leaves it: its enrollment photo's template and a
    verified photo's, their centroid its own template (replace_templates)."""
    templates = [
        Template(record.record_id, n, record.model_pack, source, "2026-12-01", "2026-12-01", {"n": n}, v)
        for n, source, v in (
            (1, TemplateSource.ENROLLMENT, np.asarray(first, np.float32)),
            (2, TemplateSource.VERIFIED, np.asarray(second, np.float32)),
        )
    ]
    both = centroid([t.embedding for t in templates])
    event = AuditEvent(action="record.template_added", actor="t", tenant=record.tenant, at="x", details={})
    assert store.replace_templates(record, templates, both, event)
    stored = store.get_record(record.record_id)
    assert stored is not None and stored.template_count == 2
    return stored


def _scored(settings: Settings, probe: Any) -> dict[str, float]:
    """What the deployment's functions score `probe` at against each record of t1, after the
    reconcile filled the pack's own index from the records (README's cut-over steps)."""
    from face_dedup.bootstrap import build_function, build_search_index

    build_search_index(settings).ensure_index()  # the deploy step, for this pack
    build_function(settings, "reconcile").service.for_tenant("t1").reconcile()
    registry = cast(Any, build_function(settings, "search").service.for_tenant("t1"))._registry
    hits = registry.index.search(probe, tenant="t1", model_pack=settings.model_pack, k=5)
    return {c.record_id: c.score for c in registry.describe(hits, probe)}


def test_a_record_of_several_templates_migrates_cuts_over_and_rolls_back(
    aws: dict[str, Any], base_settings: Settings, osmem_clone: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from face_dedup import bootstrap
    from tests.support.fake_knn_opensearch import FakeKnnOpenSearch

    monkeypatch.setattr(
        bootstrap, "_opensearch_client", lambda s: FakeKnnOpenSearch(hosts=[s.opensearch_url])
    )
    cloud = base_settings.with_overrides(
        index_backend="opensearch",
        opensearch_url=osmem_clone.url,
        opensearch_auth="none",
        store_backend="dynamodb",
        blob_backend="s3",
        aws_region=REGION,
        s3_bucket="faces",
        dynamodb_table_prefix="fd-",
    )
    store, blobs = aws["store"], aws["blobs"]
    analyzer = FakeFaceAnalyzer(get_pack(NEW))
    record = _two_templates(store, _record(store, "t1", 1), unit(DIM, 3), unit(DIM, 4))
    old_own = {t.number: t.embedding.copy() for t in store.record_templates(record.record_id)}
    single = _record(store, "t1", 2)
    # each photo shows the new pack a face of its own; the fake re-detects from the photo
    new1, new2 = unit(DIM, 10) + 0.5 * unit(DIM, 11), unit(DIM, 12)
    _keep(blobs, "t1", record.record_id, photo=analyzer.face(b"first", new1))
    blobs.put(template_photo_key("t1", record.record_id, 2), analyzer.face(b"second", new2), "x")
    _keep(blobs, "t1", single.record_id, photo=analyzer.face(b"single", unit(DIM, 20)))
    ids = record_ids_from_keys(_listing(aws["s3"], "faces/t1/"), s3_prefix="faces/", tenant="t1")
    assert ids == [record.record_id, single.record_id]  # an added template's keys name its record

    def run() -> Any:
        return migrate_batch(
            store=store,
            blobs=blobs,
            analyzer=analyzer,
            active_pack=get_pack(OLD),
            target_pack=get_pack(NEW),
            tenant="t1",
            record_ids=ids,
        )

    first = run()
    assert (first.migrated, first.failed) == (2, {})
    expected = centroid([(new1 / np.linalg.norm(new1)).astype(np.float32), new2.astype(np.float32)])
    kept = store.pack_templates(tenant="t1", model_pack=NEW)
    assert np.allclose(kept[record.record_id], expected, atol=1e-6)  # the NEW pack's centroid
    assert not np.allclose(kept[record.record_id], record.embedding, atol=1e-3)  # not the old one
    # the record still answers in its own pack until the cut-over
    assert [t.model_pack for t in store.record_templates(record.record_id)] == [OLD, OLD]
    calls = analyzer.calls
    again = run()  # idempotent: nothing re-embedded
    assert (again.migrated, again.already, analyzer.calls) == (0, 2, calls)

    assert store.switch_pack(tenant="t1", source=OLD, target=NEW, audit=_audit("t1")) == 2
    after = store.get_record(record.record_id)
    assert after is not None and after.model_pack == NEW and after.template_count == 2
    assert np.allclose(after.embedding, expected, atol=1e-6)
    now = store.record_templates(record.record_id)  # the record's own are the new pack's now
    assert [(t.number, t.model_pack, t.source) for t in now] == [
        (1, NEW, TemplateSource.ENROLLMENT),
        (2, NEW, TemplateSource.VERIFIED),
    ]
    assert np.allclose(now[1].embedding, new2) and now[0].quality == {"n": 1}
    alone = store.get_record(single.record_id)
    assert alone is not None and alone.template_count == 1
    # scored in the new pack: its new centroid, lowered by the 2-template calibration offset
    probe = centroid([expected, unit(DIM, 30).astype(np.float32)])
    scores = _scored(cloud.with_overrides(model_pack=NEW), probe)
    assert scores[record.record_id] == pytest.approx(float(expected @ probe) - score_offset(2), abs=1e-5)
    assert scores[single.record_id] == pytest.approx(0.0, abs=1e-5)  # one template: no offset

    # rollback: the old centroid, its two templates, its count
    assert store.switch_pack(tenant="t1", source=NEW, target=OLD, audit=_audit("t1")) == 2
    back = store.get_record(record.record_id)
    assert back is not None and back.model_pack == OLD and back.template_count == 2
    assert np.array_equal(back.embedding, record.embedding)
    assert {t.number: list(t.embedding) for t in store.record_templates(record.record_id)} == {
        n: list(v) for n, v in old_own.items()
    }
    old_probe = centroid([record.embedding, unit(DIM, 31).astype(np.float32)])
    scores = _scored(cloud.with_overrides(model_pack=OLD), old_probe)
    assert scores[record.record_id] == pytest.approx(
        float(record.embedding @ old_probe) - score_offset(2), abs=1e-5
    )

    # finish: the new pack's copies leave the record's list too
    assert store.drop_pack_templates(tenant="t1", model_pack=NEW) == 2
    item = aws["dynamodb"].get_item(TableName="fd-records", Key={"record_id": {"S": record.record_id}})[
        "Item"
    ]
    assert pack_attribute(NEW) not in item
    assert {t["M"]["model_pack"]["S"] for t in item["templates"]["L"]} == {OLD}


def test_a_several_template_record_is_not_cut_over_on_a_stale_or_partial_template(
    aws: dict[str, Any],
) -> None:
    store, blobs = aws["store"], aws["blobs"]
    analyzer = FakeFaceAnalyzer(get_pack(NEW))
    record = _two_templates(store, _record(store, "t1", 1), unit(DIM, 3), unit(DIM, 4))
    # the second photo is gone: the record is reported with the template that failed
    _keep(blobs, "t1", record.record_id, photo=analyzer.face(b"first", unit(DIM, 10)), crop=False)
    result = migrate_batch(
        store=store,
        blobs=blobs,
        analyzer=analyzer,
        active_pack=get_pack(OLD),
        target_pack=get_pack(NEW),
        tenant="t1",
        record_ids=[record.record_id],
    )
    assert result.failed == {record.record_id: "TEMPLATE_2_NO_PHOTO_KEPT"} and result.migrated == 0
    assert store.pack_templates(tenant="t1", model_pack=NEW) == {}
    with pytest.raises(InvalidState):  # so the cut-over refuses
        store.switch_pack(tenant="t1", source=OLD, target=NEW, audit=_audit("t1"))
    # one template kept as if the record had one photo (stale: not every photo re-made)
    store.put_pack_template(record_id=record.record_id, tenant="t1", model_pack=NEW, embedding=unit(DIM, 5))
    with pytest.raises(InvalidState, match="several templates"):
        store.switch_pack(tenant="t1", source=OLD, target=NEW, audit=_audit("t1"))
    stale = store.get_record(record.record_id)
    assert stale is not None and stale.model_pack == OLD
    # the second photo is back: the next run re-makes the stale copy from both, and it cuts over
    blobs.put(template_photo_key("t1", record.record_id, 2), analyzer.face(b"second", unit(DIM, 12)), "x")
    again = migrate_batch(
        store=store,
        blobs=blobs,
        analyzer=analyzer,
        active_pack=get_pack(OLD),
        target_pack=get_pack(NEW),
        tenant="t1",
        record_ids=[record.record_id],
    )
    assert (again.migrated, again.already, again.failed) == (1, 0, {})
    assert store.switch_pack(tenant="t1", source=OLD, target=NEW, audit=_audit("t1")) == 1
    after = store.get_record(record.record_id)
    assert after is not None and after.template_count == 2
    both = centroid([unit(DIM, 10).astype(np.float32), unit(DIM, 12).astype(np.float32)])
    assert np.allclose(after.embedding, both, atol=1e-6)


@pytest.mark.parametrize(
    "key",
    [
        "faces/t2/rec_1/photo",  # another tenant
        "faces/t1/../t2/rec_1/photo",
        "faces/t1/rec_1/other.bin",
        "faces/t1/rec_1",
        "faces/t1/rec_1/templates/x/photo",
        "faces/t1/rec_1/templates/2/other",
        "faces/t1/rec_1/extra/2/photo",
        "elsewhere/t1/rec_1/photo",
        None,
    ],
)
def test_item_keys_outside_the_tenants_records_are_refused(key: object) -> None:
    with pytest.raises(BadItem):
        record_ids_from_keys(["faces/t1/rec_ok/photo", key], s3_prefix="faces/", tenant="t1")


def test_each_pack_has_its_own_index(base_settings: Settings) -> None:
    assert pack_index_name("faces", DEFAULT_PACK_ID) == "faces"  # existing deployments keep theirs
    assert pack_index_name("faces", OLD) == "faces-yunet-sface-v1"
    assert pack_index_name("faces", "My.Pack") == "faces-my-pack"
    # the functions' index (and the one the deploy step creates) is the active pack's
    from face_dedup.bootstrap import build_search_index

    for pack in (OLD, NEW):
        settings = base_settings.with_overrides(
            index_backend="opensearch",
            opensearch_url="http://127.0.0.1:9",
            opensearch_auth="none",
            model_pack=pack,
        )
        assert build_search_index(settings)._index == pack_index_name("faces", pack)


# -- the Lambda handlers, built from their wiring declarations, with the real engine --------------


class FakeContext:
    function_name = "face-dedup-migrate"
    function_version = "$LATEST"
    invoked_function_arn = f"arn:aws:lambda:{REGION}:123456789012:function:face-dedup-migrate"
    memory_limit_in_mb = 3008
    aws_request_id = "00000000-0000-0000-0000-000000000000"
    log_group_name = "/aws/lambda/face-dedup-migrate"
    log_stream_name = "test"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 600_000


def test_migrate_handler_and_switch_on_moto(
    aws: dict[str, Any], base_settings: Settings, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from functions.migrate import handler as migrate

    for name, value in {
        "FACE_DEDUP_MODEL_PACK": OLD,
        "FACE_DEDUP_MODELS_DIR": str(base_settings.models_dir),
        "FACE_DEDUP_DATA_DIR": str(tmp_path / "scratch"),
        "FACE_DEDUP_STORE_BACKEND": "dynamodb",
        "FACE_DEDUP_BLOB_BACKEND": "s3",
        "FACE_DEDUP_AWS_REGION": REGION,
        "FACE_DEDUP_S3_BUCKET": "faces",
        "FACE_DEDUP_DYNAMODB_TABLE_PREFIX": "fd-",
        "POWERTOOLS_TRACE_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    migrate._parts.cache_clear()
    migrate._engine.cache_clear()
    store, blobs = aws["store"], aws["blobs"]
    records = [_record(store, "t1", n) for n in range(3)]
    for record in records[:2]:  # crops only: both packs align alike, the crop is embedded as it is
        _keep(blobs, "t1", record.record_id, photo=None)
    _keep(blobs, "t1", records[2].record_id, photo=b"not a photo", crop=False)
    batch = {"tenant": "t1", "target_pack": NEW}
    # the map's items: the S3 listing's objects, batched (ItemSelector keeps the key only)
    items = [{"key": k} for k in _listing(aws["s3"], "faces/t1/")]
    try:
        with pytest.raises(migrate.RecordsFailed) as failed:
            migrate.handler({"Items": items, "BatchInput": batch}, FakeContext())
        assert json.loads(str(failed.value)) == {records[2].record_id: "UNSUPPORTED_FORMAT"}
        kept = store.pack_templates(tenant="t1", model_pack=NEW)
        assert sorted(kept) == [r.record_id for r in records[:2]]
        assert all(abs(float(np.linalg.norm(v)) - 1.0) < 1e-3 for v in kept.values())
        ok = [i for i in items if records[2].record_id not in i["key"]]
        again = migrate.handler({"Items": ok, "BatchInput": batch}, FakeContext())
        assert again["migrated"] == 0 and again["already_migrated"] == 2
        assert {k: list(v) for k, v in store.pack_templates(tenant="t1", model_pack=NEW).items()} == {
            k: list(v) for k, v in kept.items()
        }
        with pytest.raises(BadItem):
            migrate.handler({"Items": [{"key": "faces/t2/rec_x/photo"}], "BatchInput": batch}, FakeContext())
        with pytest.raises(BadItem):
            migrate.handler({"Items": ok, "BatchInput": "t1"}, FakeContext())

        # cut-over: refused while the third record has no template; then done once it has one
        step = {"tenant": "t1", "source_pack": OLD, "target_pack": NEW}
        with pytest.raises(InvalidState):
            migrate.switch(step, FakeContext())
        store.put_pack_template(
            record_id=records[2].record_id,
            tenant="t1",
            model_pack=NEW,
            embedding=unit(DIM, 9).astype(np.float32),
        )
        assert migrate.switch(step, FakeContext())["records"] == 3
        assert {r.model_pack for r in store.iter_templates(tenant="t1")} == {NEW}
        back = {"tenant": "t1", "source_pack": NEW, "target_pack": OLD}
        assert migrate.switch(back, FakeContext())["records"] == 3
        assert {r.record_id: list(r.embedding) for r in store.iter_templates(tenant="t1")} == {
            r.record_id: list(r.embedding) for r in records
        }

        # finish: refused for the deployment's active pack and while records are in the pack;
        # then the other pack's kept templates are erased, the records' own untouched
        with pytest.raises(ConfigError):
            migrate.finish({"tenant": "t1", "pack": OLD}, FakeContext())
        assert migrate.finish({"tenant": "t1", "pack": NEW}, FakeContext())["templates_erased"] == 3
        assert store.pack_templates(tenant="t1", model_pack=NEW) == {}
        assert len(list(store.iter_templates(tenant="t1"))) == 3
        assert "migration.finished" in [e.action for e in store.audit_events(tenant="t1")]
        monkeypatch.setenv("FACE_DEDUP_MODEL_PACK", NEW)  # a deployment already on the other pack
        migrate._parts.cache_clear()
        with pytest.raises(InvalidState, match="still in"):
            migrate.finish({"tenant": "t1", "pack": OLD}, FakeContext())
    finally:
        migrate._parts.cache_clear()
        migrate._engine.cache_clear()


def test_an_aws_outage_is_retried_by_the_state_machine_other_errors_fail_the_item() -> None:
    from botocore.exceptions import EndpointConnectionError
    from functions.migrate.handler import retried_when_transient

    from face_dedup.errors import TransientError

    def unreachable(event: dict[str, Any], context: Any) -> dict[str, Any]:
        raise EndpointConnectionError(endpoint_url="https://dynamodb.eu-west-1.amazonaws.com")

    def bad(event: dict[str, Any], context: Any) -> dict[str, Any]:
        raise BadItem("key 'x' is not under the tenant's prefix")

    no_context = cast("LambdaContext", None)  # neither task reads its context
    with pytest.raises(TransientError):  # in the workflow's TRANSIENT list: retried with backoff
        retried_when_transient(unreachable)({}, no_context)
    with pytest.raises(BadItem):
        retried_when_transient(bad)({}, no_context)


def test_the_local_migrate_command_refuses_a_cloud_registry(tmp_path: Any) -> None:
    """packs.json means nothing to the cloud's functions (their pack is the deployment's): the
    local command must not half-migrate a DynamoDB registry now that the store could."""
    from typer.testing import CliRunner

    from face_dedup.cli import app

    env = {"FACE_DEDUP_STORE_BACKEND": "dynamodb", "FACE_DEDUP_DATA_DIR": str(tmp_path)}
    for command in (["status"], ["cutover"], ["start", "--to", OLD]):
        result = CliRunner().invoke(app, ["migrate", *command], env=env)
        assert result.exit_code == 1 and "migration job" in result.output, result.output


def test_after_the_cut_over_the_new_pack_is_searched_in_its_own_index_only(
    aws: dict[str, Any], base_settings: Settings, osmem_clone: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cut-over's last steps as README describes them, on moto + osmem: the records switch,
    the stack runs the new pack, its reconcile fills the new pack's own index from the records;
    the old pack's index is left whole (a rollback needs it), and the new pack's probe is
    searched only there. The k-NN query is answered by FakeKnnOpenSearch (osmem has no k-NN)."""
    from face_dedup import bootstrap
    from face_dedup.bootstrap import build_function, build_search_index
    from face_dedup.ports import IndexEntry
    from tests.support.fake_knn_opensearch import FakeKnnOpenSearch

    monkeypatch.setattr(
        bootstrap, "_opensearch_client", lambda s: FakeKnnOpenSearch(hosts=[s.opensearch_url])
    )
    cloud = base_settings.with_overrides(
        index_backend="opensearch",
        opensearch_url=osmem_clone.url,
        opensearch_auth="none",
        store_backend="dynamodb",
        blob_backend="s3",
        aws_region=REGION,
        s3_bucket="faces",
        dynamodb_table_prefix="fd-",
    )
    old, new = cloud.with_overrides(model_pack=OLD), cloud.with_overrides(model_pack=NEW)
    store: DynamoRecordStore = aws["store"]
    records = [_record(store, "t1", n) for n in range(3)]
    old_index = build_search_index(old)
    old_index.ensure_index()  # the deploy step, for the old pack
    old_index.add([IndexEntry(r.record_id, "t1", OLD, r.embedding) for r in records])
    for n, record in enumerate(records):
        store.put_pack_template(
            record_id=record.record_id,
            tenant="t1",
            model_pack=NEW,
            embedding=unit(DIM, 60 + n).astype(np.float32),
        )
    assert store.switch_pack(tenant="t1", source=OLD, target=NEW, audit=_audit("t1")) == 3

    new_index = build_search_index(new)
    assert new_index._index != old_index._index
    new_index.ensure_index()  # the deploy step, for the new pack
    service = build_function(new, "reconcile").service.for_tenant("t1")
    declared = cast(Any, service.index)  # bootstrap's _Declared wrapper around the adapter
    assert declared._adapter._index == new_index._index  # the functions' index is the new pack's
    assert service.reconcile() == {"added": 3, "removed": 0}
    assert new_index.record_ids(tenant="t1", model_pack=NEW) == {r.record_id for r in records}
    assert old_index.record_ids(tenant="t1", model_pack=OLD) == {r.record_id for r in records}  # whole
    assert new_index.count(tenant="t1", model_pack=OLD) == 0  # no old-pack vector in the new index
    hits = new_index.search(unit(DIM, 61).astype(np.float32), tenant="t1", model_pack=NEW, k=3)
    assert hits[0].record_id == records[1].record_id and hits[0].score == pytest.approx(1.0, abs=1e-4)


@pytest.mark.shared_data
def test_the_item_processor_on_real_photos_gives_the_new_packs_own_templates(
    aws: dict[str, Any],
    base_settings: Settings,
    faces_root: Any,
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Records enrolled from real LFW photos by the old pack (photo and aligned crop kept as the
    service keeps them) are re-embedded by the handler from their crops; each new template is
    what the new pack makes of the photo itself, and the same person still matches."""
    from functions.migrate import handler as migrate

    from face_dedup.bootstrap import build_engine
    from face_dedup.vision.pipeline import FaceTemplate

    old_engine, new_engine = (
        build_engine(base_settings, get_pack(OLD)),
        build_engine(base_settings, get_pack(NEW)),
    )
    photos = {
        "a1": "lfw/Abel_Pacheco/Abel_Pacheco_0001.jpg",
        "a2": "lfw/Abel_Pacheco/Abel_Pacheco_0004.jpg",
        "b1": "lfw/Akhmed_Zakayev/Akhmed_Zakayev_0001.jpg",
    }
    store, blobs = aws["store"], aws["blobs"]
    ids: dict[str, str] = {}
    for n, (name, path) in enumerate(photos.items()):
        data = (faces_root / path).read_bytes()
        analysis = old_engine.process(data)
        assert isinstance(analysis, FaceTemplate)
        record = _record(store, "t1", n)
        store._client.update_item(  # the old pack's real template on the record
            TableName="fd-records",
            Key={"record_id": {"S": record.record_id}},
            UpdateExpression="SET embedding = :e",
            ExpressionAttributeValues={":e": {"B": analysis.embedding.astype(np.float32).tobytes()}},
        )
        blobs.put(photo_key("t1", record.record_id), data, "application/octet-stream")
        blobs.put(crop_key("t1", record.record_id), encode_png(analysis.aligned_crop), "image/png")
        ids[name] = record.record_id
    # a record of two photos of one person (enrollment + a verified one), each crop kept
    several = ("lfw/Akhmed_Zakayev/Akhmed_Zakayev_0002.jpg", "lfw/Akhmed_Zakayev/Akhmed_Zakayev_0003.jpg")
    old_templates = [old_engine.process((faces_root / p).read_bytes()) for p in several]
    assert all(isinstance(a, FaceTemplate) for a in old_templates)
    two = _two_templates(
        store,
        _record(store, "t1", 9),
        *(cast(FaceTemplate, a).embedding for a in old_templates),
    )
    for number, (path, analysis) in enumerate(zip(several, old_templates, strict=True), start=1):
        crop = encode_png(cast(FaceTemplate, analysis).aligned_crop)
        if number == 1:
            blobs.put(photo_key("t1", two.record_id), (faces_root / path).read_bytes(), "x")
            blobs.put(crop_key("t1", two.record_id), crop, "image/png")
        else:
            blobs.put(template_photo_key("t1", two.record_id, number), (faces_root / path).read_bytes(), "x")
            blobs.put(template_crop_key("t1", two.record_id, number), crop, "image/png")
    for name, value in {
        "FACE_DEDUP_MODEL_PACK": OLD,
        "FACE_DEDUP_MODELS_DIR": str(base_settings.models_dir),
        "FACE_DEDUP_DATA_DIR": str(tmp_path / "scratch"),
        "FACE_DEDUP_STORE_BACKEND": "dynamodb",
        "FACE_DEDUP_BLOB_BACKEND": "s3",
        "FACE_DEDUP_AWS_REGION": REGION,
        "FACE_DEDUP_S3_BUCKET": "faces",
        "FACE_DEDUP_DYNAMODB_TABLE_PREFIX": "fd-",
        "POWERTOOLS_TRACE_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    migrate._parts.cache_clear()
    migrate._engine.cache_clear()
    try:
        items = [{"key": k} for k in _listing(aws["s3"], "faces/t1/")]
        done = migrate.handler(
            {"Items": items, "BatchInput": {"tenant": "t1", "target_pack": NEW}}, FakeContext()
        )
        step = {"tenant": "t1", "source_pack": OLD, "target_pack": NEW}
        kept = store.pack_templates(tenant="t1", model_pack=NEW)
        assert migrate.switch(step, FakeContext())["records"] == 4
    finally:
        migrate._parts.cache_clear()
        migrate._engine.cache_clear()
    assert done["migrated"] == 4 and done["failed"] == 0
    fresh_two = [new_engine.process((faces_root / p).read_bytes()) for p in several]
    made = centroid([cast(FaceTemplate, a).embedding for a in fresh_two])
    after = store.get_record(two.record_id)
    assert after is not None and after.model_pack == NEW and after.template_count == 2
    assert float(after.embedding @ made) > 0.999  # the new pack's centroid of both photos
    # not the old pack's carried over (the shipped packs are close: SFace, and SFace with flip)
    assert float(after.embedding @ made) > float(two.embedding @ made) + 1e-3
    both = store.record_templates(two.record_id)
    assert [t.model_pack for t in both] == [NEW, NEW]
    for template, fresh in zip(both, fresh_two, strict=True):
        assert float(template.embedding @ cast(FaceTemplate, fresh).embedding) > 0.999
    for name, path in photos.items():
        fresh = new_engine.process((faces_root / path).read_bytes())
        assert isinstance(fresh, FaceTemplate)
        assert float(kept[ids[name]] @ fresh.embedding) > 0.999  # from the crop = from the photo
    same = float(kept[ids["a1"]] @ kept[ids["a2"]])
    other = max(float(kept[ids["a1"]] @ kept[ids["b1"]]), float(kept[ids["a2"]] @ kept[ids["b1"]]))
    assert same > other


# -- shadow mode in the cloud (cloud_shadow.py; functions/migrate shadow and report) -----------


def test_shadow_mode_in_the_cloud_audits_agreement_by_record_ids_and_reports_it(
    aws: dict[str, Any],
    base_settings: Settings,
    osmem_clone: Any,
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The shadow step, built from its wiring declaration for the shadow pack (its engine is a
    FakeFaceAnalyzer: it re-detects from the staged photo), searches the shadow pack's own
    index (filled by the shadow_fill step from the templates the job kept) and audits whether
    it agrees with the active pack's decision; the report step reads the comparisons back."""
    from functions.migrate import handler as migrate

    from face_dedup import bootstrap
    from face_dedup.bootstrap import build_search_index
    from face_dedup.domain import StagedInput
    from face_dedup.ports import IndexEntry
    from tests.support.fake_knn_opensearch import FakeKnnOpenSearch

    fake = FakeFaceAnalyzer(get_pack(NEW))
    monkeypatch.setattr(
        bootstrap, "_opensearch_client", lambda s: FakeKnnOpenSearch(hosts=[s.opensearch_url])
    )
    monkeypatch.setattr(bootstrap, "build_engine", lambda settings, pack, **kw: fake)
    env = {
        "FACE_DEDUP_MODEL_PACK": OLD,
        "FACE_DEDUP_SHADOW_PACK": NEW,
        "FACE_DEDUP_MODELS_DIR": str(base_settings.models_dir),
        "FACE_DEDUP_DATA_DIR": str(tmp_path / "scratch"),
        "FACE_DEDUP_STORE_BACKEND": "dynamodb",
        "FACE_DEDUP_BLOB_BACKEND": "s3",
        "FACE_DEDUP_INDEX_BACKEND": "opensearch",
        "FACE_DEDUP_OPENSEARCH_URL": osmem_clone.url,
        "FACE_DEDUP_OPENSEARCH_AUTH": "none",
        "FACE_DEDUP_AWS_REGION": REGION,
        "FACE_DEDUP_S3_BUCKET": "faces",
        "FACE_DEDUP_DYNAMODB_TABLE_PREFIX": "fd-",
        "POWERTOOLS_TRACE_DISABLED": "true",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    store, blobs = aws["store"], aws["blobs"]
    a, b = _record(store, "t1", 1), _record(store, "t1", 2)
    shadow_settings = Settings.load().with_overrides(model_pack=NEW, shadow_pack="")
    shadow_index = build_search_index(shadow_settings)
    assert shadow_index._index == pack_index_name("faces", NEW)
    shadow_index.ensure_index()
    for record, axis in ((a, 40), (b, 50)):  # their templates in the shadow pack, as the job keeps them
        vector = unit(DIM, axis).astype(np.float32)
        assert store.put_pack_template(
            record_id=record.record_id, tenant="t1", model_pack=NEW, embedding=vector
        )
    stray = unit(DIM, 90).astype(np.float32)
    shadow_index.add([IndexEntry("rec_erased_meanwhile", "t1", NEW, stray)])

    def staged(n: int, photo: bytes) -> str:
        rid = f"rec_new_{n}"
        store.stage(
            StagedInput(
                key=f"t1:k{n}",
                record_id=rid,
                tenant="t1",
                model_pack=OLD,
                source="test",
                application_id=None,
                content_sha256=f"{n:064x}",
                embedding=unit(DIM, 70 + n).astype(np.float32),  # the active pack's: never read here
                created_at="2026-12-02T00:00:00Z",
            )
        )
        blobs.put(photo_key("t1", rid), photo, "application/octet-stream")
        return f"t1:k{n}"

    first = staged(1, fake.face(b"looks like a", unit(DIM, 40)))  # the shadow pack finds a
    second = staged(2, fake.face(b"nobody", unit(DIM, 41)))
    enrolled = {"outcome": "enrolled", "candidates": [], "thresholds": {}}
    migrate._shadow_parts.cache_clear()
    migrate._parts.cache_clear()
    try:
        # the shadow pack's index := the templates the job kept (after each run of the job)
        filled = migrate.shadow_fill({"tenant": "t1"}, FakeContext())
        assert (filled["added"], filled["removed"], filled["kept"]) == (2, 1, 2)
        assert shadow_index.record_ids(tenant="t1", model_pack=NEW) == {a.record_id, b.record_id}
        assert migrate.shadow_fill({"tenant": "t1"}, FakeContext())["added"] == 0  # again: nothing
        one = migrate.shadow({"tenant": "t1", "decision": {"key": first, **enrolled}}, FakeContext())
        assert one["compared"] and not one["agree"] and one["shadow_outcome"] != "enrolled"
        two = migrate.shadow({"tenant": "t1", "decision": {"key": second, **enrolled}}, FakeContext())
        assert two == {"compared": True, "agree": True, "shadow_outcome": "enrolled"}
        gone = migrate.shadow({"tenant": "t1", "decision": {"key": "t1:never", **enrolled}}, FakeContext())
        assert gone == {"compared": False, "reason": "NOT_STAGED"}
        verified = {"key": first, "outcome": "verified", "candidates": [], "thresholds": {}}
        assert migrate.shadow({"tenant": "t1", "decision": verified}, FakeContext())["compared"] is False
        with pytest.raises(BadItem):
            migrate.shadow({"tenant": "t1", "decision": "enrolled"}, FakeContext())

        compared = [e.details for e in store.audit_events(tenant="t1") if e.action == "shadow.compared"]
        assert len(compared) == 2
        assert compared[0]["record_id"] == "rec_new_1" and compared[0]["shadow_candidates"] == [a.record_id]
        for details in compared:  # record ids, outcomes and counts: no template, score or photo
            assert not any(isinstance(v, float | bytes) for v in details.values())
            assert set(details) == {
                "record_id",
                "model_pack",
                "agree",
                "active_outcome",
                "shadow_outcome",
                "active_candidates",
                "shadow_candidates",
                "shadow_gallery_size",
            }

        report = migrate.report({"tenant": "t1", "shadow_pack": NEW}, FakeContext())
        assert (report["records"], report["shadow_templates"], report["ready_to_cut_over"]) == (2, 2, True)
        assert (report["shadow_compared"], report["shadow_disagreements"]) == (2, 1)
        assert [d["record_id"] for d in report["disagreements"]] == ["rec_new_1"]
        with pytest.raises(ConfigError):
            migrate.report({"tenant": "t1", "shadow_pack": ""}, FakeContext())
        store.erase_record(b.record_id, _audit("t1"))  # its kept template goes with it
        assert migrate.shadow_fill({"tenant": "t1"}, FakeContext())["removed"] == 1
        assert shadow_index.record_ids(tenant="t1", model_pack=NEW) == {a.record_id}
    finally:
        migrate._shadow_parts.cache_clear()
        migrate._parts.cache_clear()

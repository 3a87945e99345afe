"""One call of the cloud migration job's item processor (face_dedup.cloud_migration), timed.

    python bench/cloud_migration_item.py --records 200 [--templates 2]

N records enrolled in `yunet-sface-v1` on moto (DynamoDB + S3, in this process), each with a
stored aligned crop (random pixels: the crop path embeds without detecting, so no face is
needed), are re-embedded into `yunet-sface-flip-v1` by the real engine in one `migrate_batch`
call, then the same call is made again (everything already done). With `--templates T` each
record holds T templates (record_templates.py; a crop kept for each), all re-embedded and their
centroid kept, as the job does for a record of several photos. Wall and CPU time
(process_time, moto's emulation included) and peak memory are printed.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import boto3
import numpy as np
from moto import mock_aws

from face_dedup.adapters.dynamodb_store import DynamoRecordStore, TableNames, create_tables
from face_dedup.adapters.s3_blobs import S3BlobStore
from face_dedup.blob_keys import crop_key, template_crop_key
from face_dedup.bootstrap import build_engine
from face_dedup.cloud_migration import migrate_batch
from face_dedup.domain import AuditEvent, ImportItem, Outcome, Record, RecordStatus
from face_dedup.models.registry import get_pack
from face_dedup.ports import EnrollmentCommit
from face_dedup.record_templates import Template, TemplateSource, centroid
from face_dedup.settings import Settings
from face_dedup.vision.png import encode_png

REGION = "eu-west-1"
SOURCE, TARGET = "yunet-sface-v1", "yunet-sface-flip-v1"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=200)
    parser.add_argument("--templates", type=int, default=1, help="templates per record (1..5)")
    args = parser.parse_args()
    n, per_record = args.records, args.templates
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(name, "testing")
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        create_tables(dynamodb, TableNames.with_prefix("fd-"))
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket="faces", CreateBucketConfiguration={"LocationConstraint": REGION})
        store, blobs = DynamoRecordStore(dynamodb, TableNames.with_prefix("fd-")), S3BlobStore(s3, "faces")
        rng = np.random.default_rng(0)
        ids = []
        for i in range(n):
            vector = rng.normal(size=128).astype(np.float32)
            rid = f"rec_{i:06d}"
            item = ImportItem(f"k{i}", "t", "bench", None, "0", Outcome.ENROLLED, "now", record_id=rid)
            record = Record(
                rid,
                "t",
                SOURCE,
                None,
                "bench",
                "0",
                RecordStatus.ENROLLED,
                "now",
                vector / np.linalg.norm(vector),
            )
            store.commit(EnrollmentCommit(item=item, record=record))
            crop = encode_png(rng.integers(0, 255, (112, 112, 3), np.uint8))
            blobs.put(crop_key("t", rid), crop, "image/png")
            if per_record > 1:
                _several(store, blobs, rng, record, per_record)
            ids.append(rid)
        engine = build_engine(Settings.load(), get_pack(TARGET))
        for label in ("first call", "again (all done)"):
            wall, cpu = time.perf_counter(), time.process_time()
            result = migrate_batch(
                store=store,
                blobs=blobs,
                analyzer=engine,
                active_pack=get_pack(SOURCE),
                target_pack=get_pack(TARGET),
                tenant="t",
                record_ids=ids,
            )
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            print(
                f"{label}: migrated {result.migrated}, already {result.already}, failed {len(result.failed)};"
                f" wall {wall:.2f} s, CPU {cpu:.2f} s ({cpu / n * 1000:.1f} ms CPU per record,"
                f" {per_record} template(s) each)"
            )
    print(f"peak memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


def _several(
    store: DynamoRecordStore, blobs: S3BlobStore, rng: np.random.Generator, record: Record, count: int
) -> None:
    """The record as `records add-photo` leaves it after count-1 additions (a crop for each)."""
    vectors = [record.embedding] + [
        (v / np.linalg.norm(v)).astype(np.float32) for v in rng.normal(size=(count - 1, 128))
    ]
    templates = [
        Template(
            record.record_id,
            k,
            SOURCE,
            TemplateSource.ENROLLMENT if k == 1 else TemplateSource.VERIFIED,
            "now",
            "now",
            {},
            v,
        )
        for k, v in enumerate(vectors, start=1)
    ]
    for k in range(2, count + 1):
        crop = encode_png(rng.integers(0, 255, (112, 112, 3), np.uint8))
        blobs.put(template_crop_key("t", record.record_id, k), crop, "image/png")
    event = AuditEvent("record.template_added", "bench", "t", "now", {})
    assert store.replace_templates(record, templates, centroid(vectors), event)


if __name__ == "__main__":
    main()

"""The cloud bulk job's join and ordered decide steps (cloud_bulk_decide.py) give the outcomes of
importing the manifest's rows one by one in order (run_import, the reference) and of the local
bulk import: synthetic templates (FakeFaceAnalyzer) with planted duplicates across chunks,
inside one chunk and against the registry's existing faces, rejected rows, a row rejected
before its photo was read, a decide call cut short and resumed, a decide attempt that died
mid-chunk and was retried (nothing enrolled twice), and a missing part (nothing decided).
The steps run on the embedded adapters (SQLite store, embedded index, local blob stores): the
same code the Lambda handlers run on DynamoDB, OpenSearch and S3."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from face_dedup import cloud_bulk_decide
from face_dedup.adapters import self_join
from face_dedup.adapters.local_blobs import LocalBlobStore
from face_dedup.adapters.private_files import private_report
from face_dedup.bootstrap import build_service
from face_dedup.bulk import run_bulk_import
from face_dedup.cloud_bulk import analyse_rows, part_key, vectors_key
from face_dedup.cloud_bulk_decide import BulkGap, decide, join_chunk, prepare
from face_dedup.importer import InputSpec, collect_inputs, run_import
from face_dedup.service import DedupService
from tests.support.fake_face_analyzer import FakeFaceAnalyzer
from tests.unit.test_bulk_import import _photos, _settings, fake  # noqa: F401 - the fixture

TENANT = "default"
BATCH = "batch1"
JOB = "job1"


def _names(inputs: list[InputSpec]) -> list[str]:
    return [Path(spec.source).name for spec in inputs]


def _report(path: Path) -> dict[str, dict[str, Any]]:
    """A run_import report, keyed by file name."""
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    before = path.with_name(path.stem + "0.jsonl")  # the registry's faces before the batch
    known = lines + (
        [json.loads(line) for line in before.read_text().splitlines()] if before.exists() else []
    )
    source_of = {line["record_id"]: Path(line["source"]).name for line in known if line["record_id"]}
    return {
        Path(line["source"]).name: {
            "outcome": line["outcome"],
            "reason": line["reason"],
            "candidates": [
                (source_of.get(c["record_id"], "?"), round(c["score"], 4)) for c in line["candidates"]
            ],
            "case": line["case_id"] is not None,
        }
        for line in lines
    }


def _registered(service: DedupService, names: list[str], base: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The import items the cloud steps wrote, keyed by file name, as _report shows them."""
    rows: dict[str, dict[str, Any]] = {}
    store = service.store
    records = {r.record_id: Path(r.source).name for r in store.iter_templates(tenant=TENANT)}
    records |= base
    for name in names:
        data = _data[name]
        from face_dedup.service import InputRef
        from face_dedup.usecases.inputs import content_digest

        key = service.idempotency_key(InputRef(f"bulk/{TENANT}/{BATCH}/{name}", None), content_digest(data))
        item = store.get_import_item(key)
        assert item is not None, name
        rows[name] = {
            "outcome": item.outcome.value,
            "reason": item.reason,
            "candidates": [(records.get(c.record_id, "?"), round(c.score, 4)) for c in item.candidates],
            "case": item.case_id is not None,
        }
    return rows


_data: dict[str, bytes] = {}


class _Job:
    """The three steps driven as the state machine drives them, on local blob stores."""

    def __init__(self, tmp: Path, service: DedupService, names: list[str], folder: Path) -> None:
        self.service = service
        self.uploads = LocalBlobStore(tmp / "uploads")
        self.parts = service.blobs
        manifest = ["file,application_id"] + [f"{name}," for name in names]
        self.uploads.put(f"bulk/{TENANT}/{BATCH}/manifest.csv", "\n".join(manifest).encode(), "text/csv")
        for name in names:
            if (folder / name).is_file():
                self.uploads.put(f"bulk/{TENANT}/{BATCH}/{name}", (folder / name).read_bytes(), "image/jpeg")
        self.names = names
        self.answered = self.fallbacks = 0  # searches the join's pairs answered / left to the index

    def analyse(self, batch: int = 7) -> None:
        items: list[object] = [
            {"row": n, "file": name, "application_id": ""} for n, name in enumerate(self.names)
        ]
        for first in range(0, len(items), batch):
            analyse_rows(
                service=self.service,
                uploads=self.uploads,
                parts=self.parts,
                tenant=TENANT,
                batch=BATCH,
                job=JOB,
                items=items[first : first + batch],
            )

    def prepare(self) -> dict[str, Any]:
        return prepare(
            service=self.service, uploads=self.uploads, parts=self.parts, tenant=TENANT, batch=BATCH, job=JOB
        )

    def join(self, plan: dict[str, Any]) -> None:
        for chunk in reversed(plan["chunks"]):  # the map runs chunks in any order
            join_chunk(parts=self.parts, tenant=TENANT, job=JOB, first=chunk["first"], last=chunk["last"])

    def decide(
        self, plan: dict[str, Any], remaining: Iterator[int] | None = None
    ) -> tuple[dict[str, Any], int]:
        calls = 0
        left = remaining or itertools.repeat(900_000)

        def remaining_ms() -> int:
            return next(left)

        while not plan.get("done"):
            plan = decide(
                service=self.service,
                uploads=self.uploads,
                parts=self.parts,
                plan=plan,
                remaining_ms=remaining_ms,
            )
            calls += 1
            self.answered += plan["last_call"]["answered"]
            self.fallbacks += plan["last_call"]["fallbacks"]
        return plan, calls


@pytest.fixture
def world(tmp_path: Path, fake: FakeFaceAnalyzer, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:  # noqa: F811
    """A batch with planted duplicates; the first 40 photos are already in the registry."""
    monkeypatch.setattr(cloud_bulk_decide, "CHUNK", 16)  # several chunks: pairs across them
    monkeypatch.setattr(cloud_bulk_decide, "BLOCK", 20)  # several earlier blocks streamed
    monkeypatch.setattr(cloud_bulk_decide, "SHARD", 15)  # several gallery shards
    folder = tmp_path / "photos"
    _photos(folder, fake, people=60, seed=11)
    inputs = collect_inputs(folder)
    for spec in inputs:
        assert spec.path is not None
        _data[Path(spec.source).name] = spec.path.read_bytes()
    # one photo twice under two names, next to each other: a duplicate inside one chunk
    twin = _names(inputs)[45]
    (folder / ("zz-" + twin)).write_bytes(_data[twin])
    _data["zz-" + twin] = _data[twin]
    inputs = collect_inputs(folder)
    names = _names(inputs)
    names.remove("zz-" + twin)
    names.insert(names.index(twin) + 1, "zz-" + twin)
    inputs = [next(s for s in inputs if Path(s.source).name == n) for n in names]
    existing, batch = inputs[:40], inputs[40:]
    sequential, adapters = build_service(_settings(tmp_path / "seq"), analyzer=fake)
    run_import(sequential, existing, report=private_report(tmp_path / "seq0.jsonl"))
    run_import(sequential, batch, report=private_report(tmp_path / "seq.jsonl"))
    adapters.close()
    return {"fake": fake, "folder": folder, "existing": existing, "batch": batch, "tmp": tmp_path}


def _cloud(world: dict[str, Any], name: str) -> tuple[_Job, DedupService, Any, dict[str, str]]:
    tmp = world["tmp"] / name
    tmp.mkdir()
    service, adapters = build_service(_settings(tmp / "registry"), analyzer=world["fake"])
    run_import(service, world["existing"], report=private_report(tmp / "first.jsonl"))
    base = {r.record_id: Path(r.source).name for r in service.store.iter_templates(tenant=TENANT)}
    job = _Job(tmp, service, _names(world["batch"]), world["folder"])
    return job, service, adapters, base


def test_the_cloud_steps_decide_as_the_sequential_and_local_bulk_imports(world: dict[str, Any]) -> None:
    job, service, adapters, base = _cloud(world, "cloud")
    job.analyse()
    plan = job.prepare()
    assert plan["total"] == len(world["batch"]) and plan["gallery"] > 0 and len(plan["chunks"]) >= 3
    held: list[int] = []
    real_join = self_join.join_across

    def recorded(earlier: Any, queries: Any, threshold: float) -> Any:
        held.append(len(earlier))
        return real_join(earlier, queries, threshold)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cloud_bulk_decide, "join_across", recorded)
        job.join(plan)
    # streamed: never more earlier templates at once than a block and one part (7 rows) past it
    assert held and max(held) < cloud_bulk_decide.BLOCK + 7 and len(held) > len(plan["chunks"])
    plan, calls = job.decide(plan)
    assert calls == len(plan["chunks"]) and plan["next"] == plan["total"]
    names = job.names
    cloud = _registered(service, names, base)
    assert plan["indexed"] == sum(
        1 for r in cloud.values() if r["outcome"] in ("enrolled", "review", "duplicate")
    )
    assert service.gallery_size() == plan["gallery"] + plan["indexed"]
    assert job.answered > 0 and job.fallbacks == 0  # the pairs answered every search
    adapters.close()

    expected = _report(world["tmp"] / "seq.jsonl")
    assert cloud == {name: expected[name] for name in names}
    outcomes = {row["outcome"] for row in cloud.values()}
    assert {"enrolled", "rejected", "review"} <= outcomes and len(outcomes) >= 4
    # planted pairs reached every way: against the existing faces, across chunks, inside one
    existing = {Path(s.source).name for s in world["existing"]}
    named = [c for row in cloud.values() for c, _ in row["candidates"]]
    assert any(c in existing for c in named) and any(c not in existing for c in named)
    twin = next(n for n in names if n.startswith("zz-"))
    assert cloud[twin]["candidates"][0] == (twin[3:], 1.0)

    # the local bulk import of the same rows decides the same
    local, adapters = build_service(_settings(world["tmp"] / "local"), analyzer=world["fake"])
    run_import(local, world["existing"], report=private_report(world["tmp"] / "local0.jsonl"))
    run_bulk_import(local, world["batch"], report=private_report(world["tmp"] / "local.jsonl"), chunk=16)
    adapters.close()
    assert _report(world["tmp"] / "local.jsonl") == {name: expected[name] for name in names}


def test_a_decide_cut_short_or_killed_resumes_without_enrolling_twice(world: dict[str, Any]) -> None:
    job, service, adapters, base = _cloud(world, "resumed")
    job.analyse()
    plan = job.prepare()
    job.join(plan)
    # 1. the Lambda's time runs short every 5 rows: the loop calls again from there
    short = iter(([900_000] * 4 + [1_000]) * 1000)
    # 2. a first attempt dies after 9 rows of chunk 0 (a Lambda timeout): nothing returned
    calls = {"n": 0}
    real = DedupService.register

    def dying(self: DedupService, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] > 9:
            raise TimeoutError("the Lambda was stopped")
        return real(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DedupService, "register", dying)
        with pytest.raises(TimeoutError):
            decide(
                service=service, uploads=job.uploads, parts=job.parts, plan=plan, remaining_ms=lambda: 900_000
            )
    enrolled_after_kill = service.gallery_size()
    assert enrolled_after_kill > plan["gallery"]  # some rows were decided before it died
    # the retry (same input: the checkpoint did not move) and the short calls after it
    plan, calls_made = job.decide(plan, short)
    assert calls_made > len(plan["chunks"])
    assert job.answered > 0 and job.fallbacks == 0  # the retry knew what the dead attempt wrote
    cloud = _registered(service, job.names, base)
    expected = _report(world["tmp"] / "seq.jsonl")
    assert cloud == {name: expected[name] for name in job.names}
    # nothing enrolled twice: one record per indexed row, the gallery exactly that size
    assert service.gallery_size() == plan["gallery"] + plan["indexed"]
    sources = [r.source for r in service.store.iter_templates(tenant=TENANT)]
    assert len(sources) == len(set(sources))
    adapters.close()


def test_a_missing_part_stops_the_job_before_anything_is_decided(world: dict[str, Any]) -> None:
    job, service, adapters, _ = _cloud(world, "gap")
    job.analyse()
    before = service.gallery_size()
    # the part holding row 21 is lost (its item failed past its retries)
    first, last = 21, 27  # the analysis items hold 7 rows each
    lost = vectors_key(TENANT, JOB, first, last)
    assert lost in job.parts.keys(f"_bulk/{TENANT}/{JOB}/")
    job.parts.delete_prefix(lost)
    job.parts.delete_prefix(part_key(TENANT, JOB, first))
    plan = job.prepare()
    for chunk in plan["chunks"]:
        if chunk["last"] <= first:
            join_chunk(parts=job.parts, tenant=TENANT, job=JOB, first=chunk["first"], last=chunk["last"])
        else:
            with pytest.raises(BulkGap, match=f"manifest row {first} was not analysed"):
                join_chunk(parts=job.parts, tenant=TENANT, job=JOB, first=chunk["first"], last=chunk["last"])
    # had the map stopped only later: decide refuses the chunk with no candidates
    with pytest.raises(Exception, match="were not joined"):
        decide(
            service=service,
            uploads=job.uploads,
            parts=job.parts,
            plan=plan | {"next": first},
            remaining_ms=lambda: 900_000,
        )
    assert service.gallery_size() == before
    adapters.close()


def test_rows_rejected_before_reading_are_reported_in_their_place(
    world: dict[str, Any], tmp_path: Path
) -> None:
    job, service, adapters, _ = _cloud(world, "bad")
    job.names = [*job.names[:3], "../etc/passwd", "missing.jpg", *job.names[3:6]]
    job.uploads.put(
        f"bulk/{TENANT}/{BATCH}/manifest.csv",
        "\n".join(["file,application_id"] + [f"{n}," for n in job.names]).encode(),
        "text/csv",
    )
    job.analyse(batch=3)
    plan = job.prepare()
    job.join(plan)
    plan = decide(
        service=service, uploads=job.uploads, parts=job.parts, plan=plan, remaining_ms=lambda: 900_000
    )
    assert plan["done"] and plan["next"] == 8
    assert plan["last_call"]["reasons"].get("NOT_A_FILE") == 1
    assert plan["last_call"]["reasons"].get("UNREADABLE") == 1
    adapters.close()


def test_rows_past_the_manifests_count_are_not_left_out(world: dict[str, Any]) -> None:
    """The map numbered more rows than prepare's count of the manifest (a line the count
    skipped): the plan covers every row a part holds, so none is silently left undecided."""
    job, service, adapters, _ = _cloud(world, "count")
    job.analyse()
    names = job.names
    job.uploads.put(  # the manifest as prepare reads it now: its last five rows gone
        f"bulk/{TENANT}/{BATCH}/manifest.csv",
        "\n".join(["file,application_id"] + [f"{n}," for n in names[:-5]]).encode(),
        "text/csv",
    )
    plan = job.prepare()
    assert plan["total"] == len(names)
    job.join(plan)
    plan, _ = job.decide(plan)
    assert plan["next"] == len(names) and service.gallery_size() == plan["gallery"] + plan["indexed"]
    assert _registered(service, names, {}).keys() == set(names)  # the last five too
    adapters.close()


def test_a_file_named_twice_is_one_record_counted_once(world: dict[str, Any]) -> None:
    """The manifest names one file twice (rows 3 and 30: two chunks apart, and 4 and 5: inside
    one): one idempotency key, so one record, and the second row resumes it as import would;
    the partition size the answers expect stays right, so every search is still answered."""
    job, service, adapters, _ = _cloud(world, "twice")
    names = job.names
    job.names = [*names[:30], names[3], *names[30:34], names[33], *names[34:]]
    job.uploads.put(
        f"bulk/{TENANT}/{BATCH}/manifest.csv",
        "\n".join(["file,application_id"] + [f"{n}," for n in job.names]).encode(),
        "text/csv",
    )
    job.analyse()
    plan = job.prepare()
    job.join(plan)
    plan, _ = job.decide(plan)
    assert plan["next"] == len(job.names)
    assert service.gallery_size() == plan["gallery"] + plan["indexed"]
    assert job.answered > 0 and job.fallbacks == 0
    sources = [r.source for r in service.store.iter_templates(tenant=TENANT)]
    assert len(sources) == len(set(sources))
    adapters.close()

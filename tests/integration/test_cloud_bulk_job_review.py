"""The cloud bulk job on moto, as a reviewer attacked it (issue 12): rows whose application is
already enrolled (the verify-first path), driven through each functions/bulk handler built from
its own declaration, as tests/integration/test_cloud_bulk_job_aws.py drives the job."""

from __future__ import annotations

from typing import Any

import pytest

from face_dedup.analysis import Rejection
from face_dedup.domain import stable_id
from face_dedup.service import InputRef
from face_dedup.usecases.inputs import content_digest
from tests.integration.test_cloud_bulk_job_aws import CONTEXT, TENANT, cloud
from tests.support.fake_face_analyzer import FakeFaceAnalyzer, at_score, unit

__all__ = ["cloud"]  # the fixture


def _run(cloud: dict[str, Any], batch: str, rows: list[tuple[str, str, bytes]]) -> dict[str, Any]:
    s3, handler = cloud["s3"], cloud["handler"]
    manifest = "file,application_id\n" + "".join(f"{name},{app}\n" for name, app, _ in rows)
    s3.put_object(Bucket="uploads", Key=f"bulk/{TENANT}/{batch}/manifest.csv", Body=manifest.encode())
    for name, _, data in rows:
        s3.put_object(Bucket="uploads", Key=f"bulk/{TENANT}/{batch}/{name}", Body=data)
    job = f"job-{batch}"
    items = [{"row": n, "file": name, "application_id": app} for n, (name, app, _) in enumerate(rows)]
    handler.handler({"Items": items, "BatchInput": {"tenant": TENANT, "batch": batch, "job": job}}, CONTEXT)
    plan: dict[str, Any] = handler.prepare({"tenant": TENANT, "batch": batch, "job": job}, CONTEXT)
    for chunk in plan["chunks"]:
        handler.join({"tenant": TENANT, "job": job, "first": chunk["first"], "last": chunk["last"]}, CONTEXT)
    while not plan.get("done"):
        plan = dict(handler.decide({"plan": plan}, CONTEXT))
    return plan


def _item(cloud: dict[str, Any], batch: str, name: str, app: str, data: bytes) -> Any:
    from face_dedup import wiring

    service = cloud["handler"]._step(wiring.BULK_DECIDE).service.for_tenant(TENANT)
    key = service.idempotency_key(InputRef(f"bulk/{TENANT}/{batch}/{name}", app), content_digest(data))
    return cloud["store"].get_import_item(key)


def test_a_row_of_an_enrolled_application_is_verified_and_its_photo_not_kept(cloud: dict[str, Any]) -> None:
    fake: FakeFaceAnalyzer = cloud["fake"]
    ann = fake.face(b"ann", unit(fake.dim, 1))
    _run(cloud, "b1", [("ann.jpg", "APP-1", ann)])
    again = fake.face(b"ann again", at_score(unit(fake.dim, 1), 0.97, 5))
    plan = _run(cloud, "b2", [("ann2.jpg", "APP-1", again)])
    assert plan["done"] and plan["last_call"]["outcomes"] == {"verified": 1}
    item = _item(cloud, "b2", "ann2.jpg", "APP-1", again)
    assert item.outcome.value == "verified"
    # as import: nothing new enrolled, and the verified photo is not kept
    assert len(list(cloud["store"].iter_templates(tenant=TENANT))) == 1
    kept = cloud["s3"].list_objects_v2(Bucket="faces", Prefix=f"faces/{TENANT}/").get("Contents", [])
    assert len(kept) == 2  # ann's photo and crop, from the first job


def test_a_decide_retried_after_its_index_write_failed_indexes_the_row(cloud: dict[str, Any]) -> None:
    """The row was committed to the store, then the index write failed (an OpenSearch throttle
    past the client's retries: TransientError, which the state machine retries from the same
    checkpoint). The retry must put the row in the index, or a later duplicate is not found."""
    from face_dedup import wiring
    from face_dedup.errors import TransientError

    fake: FakeFaceAnalyzer = cloud["fake"]
    ann = fake.face(b"ann", unit(fake.dim, 1))
    ann2 = fake.face(b"ann again", at_score(unit(fake.dim, 1), 0.97, 5))
    service = cloud["handler"]._step(wiring.BULK_DECIDE).service
    index = service.index
    real_add, failed = index.add, list[bool]()

    def add_once_failing(entries: Any) -> None:
        if not failed:
            failed.append(True)
            raise TransientError("AWS unavailable: the index write was throttled")
        real_add(entries)

    index.add = add_once_failing
    s3, handler = cloud["s3"], cloud["handler"]
    rows = [("ann.jpg", "", ann), ("ann2.jpg", "", ann2)]
    s3.put_object(Bucket="uploads", Key=f"bulk/{TENANT}/b1/manifest.csv", Body=b"file,application_id\n")
    for name, _, data in rows:
        s3.put_object(Bucket="uploads", Key=f"bulk/{TENANT}/b1/{name}", Body=data)
    items = [{"row": n, "file": name, "application_id": ""} for n, (name, _, _) in enumerate(rows)]
    job = {"tenant": TENANT, "batch": "b1", "job": "job-b1"}
    handler.handler({"Items": items, "BatchInput": job}, CONTEXT)
    plan = handler.prepare(job, CONTEXT)
    handler.join({"tenant": TENANT, "job": "job-b1", "first": 0, "last": 2}, CONTEXT)
    try:
        handler.decide({"plan": plan}, CONTEXT)
        raise AssertionError("the index write did not fail")
    except TransientError:
        pass
    done = handler.decide({"plan": plan}, CONTEXT)  # the state's retry: the same checkpoint
    assert done["done"]
    first = _item(cloud, "b1", "ann.jpg", "", ann)
    assert first.record_id in _indexed(service.model_pack)
    second = _item(cloud, "b1", "ann2.jpg", "", ann2)
    assert second.outcome.value in ("duplicate", "review")
    assert [c.record_id for c in second.candidates] == [first.record_id]


def _indexed(model_pack: str) -> set[str]:
    from face_dedup import bootstrap
    from face_dedup.settings import Settings

    index = bootstrap.build_search_index(Settings.load())
    return set(index.record_ids(tenant=TENANT, model_pack=model_pack))


def test_the_finished_job_leaves_no_copy_of_its_templates_or_crops(cloud: dict[str, Any]) -> None:
    """The parts (every row's template and aligned crop), the gallery snapshot and the pairs
    are copies erasure does not reach: the job's Finish step deletes them, and only once every
    row is decided."""
    from face_dedup.cloud_bulk import BadItem

    fake: FakeFaceAnalyzer = cloud["fake"]
    _run(cloud, "b1", [("ann.jpg", "", fake.face(b"ann", unit(fake.dim, 1)))])
    ann2 = fake.face(b"ann again", at_score(unit(fake.dim, 1), 0.97, 5))
    plan = _run(cloud, "b2", [("ann2.jpg", "", ann2), ("bob.jpg", "", fake.face(b"bob", unit(fake.dim, 2)))])
    s3, handler = cloud["s3"], cloud["handler"]

    def job_objects(job: str) -> list[str]:
        found = s3.list_object_versions(Bucket="faces", Prefix=f"faces/_bulk/{TENANT}/{job}/")
        return [v["Key"] for v in found.get("Versions", []) + found.get("DeleteMarkers", [])]

    assert job_objects("job-b2")  # parts, vectors, gallery, candidates
    try:
        handler.decide({"finish": plan | {"next": 1, "done": False}}, CONTEXT)
        raise AssertionError("a job not decided to its end was finished")
    except BadItem:
        assert job_objects("job-b2")
    assert handler.decide({"finish": plan}, CONTEXT)["removed"] > 0
    assert job_objects("job-b2") == []  # every version: the faces bucket is versioned
    assert job_objects("job-b1")  # another job's objects are its own
    handler.decide({"finish": plan}, CONTEXT)  # retried: nothing left, no error
    assert _item(cloud, "b2", "ann2.jpg", "", ann2).outcome.value in ("duplicate", "review")


def test_a_live_enrollment_of_the_same_face_during_the_decide_step_opens_a_case(
    cloud: dict[str, Any],
) -> None:
    """No registry lock in the cloud: a selfie of the same person is enrolled live between the
    bulk row's search and its index write (its own re-check ran before the row was indexed, so
    it saw nothing). The decide step re-checks as the workflow's complete does: one case."""
    from face_dedup import wiring

    fake: FakeFaceAnalyzer = cloud["fake"]
    ann = fake.face(b"ann", unit(fake.dim, 1))
    selfie = fake.face(b"ann selfie", at_score(unit(fake.dim, 1), 0.97, 5))
    service = cloud["handler"]._step(wiring.BULK_DECIDE).service.for_tenant(TENANT)
    live = fake.process(selfie)
    assert not isinstance(live, Rejection)
    index = service.index
    real_add, enrolled = index.add, list[str]()

    def add_after_a_live_enrollment(entries: Any) -> None:
        if not enrolled:  # the bulk row's index write: the live selfie is enrolled first
            enrolled.append("live")
            item = service.register(
                InputRef(f"{TENANT}/live/selfie.jpg", None), content_digest(selfie), live, None
            )
            assert item.outcome.value == "enrolled"  # it did not see the bulk row: not indexed yet
        real_add(entries)

    index.add = add_after_a_live_enrollment
    _run(cloud, "b1", [("ann.jpg", "", ann)])
    row = _item(cloud, "b1", "ann.jpg", "", ann)
    assert row.outcome.value == "enrolled"
    cases = list(cloud["store"].list_cases(tenant=TENANT))
    assert len(cases) == 1 and {cases[0].probe_record_id, cases[0].candidates[0].record_id} == {
        row.record_id,
        stable_id(
            "rec",
            service.idempotency_key(InputRef(f"{TENANT}/live/selfie.jpg", None), content_digest(selfie)),
        ),
    }


def test_a_decide_loop_run_again_after_other_enrollments_opens_no_new_case(cloud: dict[str, Any]) -> None:
    """Rows found done (a redriven loop) are not re-checked as new enrollments, even when the
    index has changed since (an unrelated selfie enrolled): the pair the job already put in a
    case is not raised a second time."""
    from face_dedup import wiring

    fake: FakeFaceAnalyzer = cloud["fake"]
    ann, ann2 = (
        fake.face(b"ann", unit(fake.dim, 1)),
        fake.face(b"ann 2", at_score(unit(fake.dim, 1), 0.97, 5)),
    )
    plan = _run(cloud, "b1", [("ann.jpg", "", ann), ("ann2.jpg", "", ann2)])
    assert len(cloud["store"].list_cases(tenant=TENANT)) == 1
    service = cloud["handler"]._step(wiring.BULK_DECIDE).service.for_tenant(TENANT)
    bob = fake.face(b"bob", unit(fake.dim, 2))
    live = fake.process(bob)
    assert not isinstance(live, Rejection)
    service.register(InputRef(f"{TENANT}/live/bob.jpg", None), content_digest(bob), live, None)
    again = cloud["handler"].decide({"plan": plan | {"next": 0, "indexed": 0, "done": False}}, CONTEXT)
    assert again["done"] and again["last_call"]["outcomes"] == {"enrolled": 1, plan_outcome(cloud, ann2): 1}
    assert len(cloud["store"].list_cases(tenant=TENANT)) == 1


def plan_outcome(cloud: dict[str, Any], data: bytes) -> str:
    return str(_item(cloud, "b1", "ann2.jpg", "", data).outcome.value)


def test_a_row_analysed_with_another_model_pack_is_not_registered(cloud: dict[str, Any]) -> None:
    """The deployment moved to another pack between the rows map and the decide step (a
    multi-day job): its templates are not registered into the new pack's partition (mixed
    embedding spaces, wrong scores); the job stops, nothing decided."""
    import json

    from face_dedup.cloud_bulk import BadItem, part_key

    fake: FakeFaceAnalyzer = cloud["fake"]
    s3, handler = cloud["s3"], cloud["handler"]
    ann = fake.face(b"ann", unit(fake.dim, 1))
    s3.put_object(
        Bucket="uploads", Key=f"bulk/{TENANT}/b1/manifest.csv", Body=b"file,application_id\nann.jpg,\n"
    )
    s3.put_object(Bucket="uploads", Key=f"bulk/{TENANT}/b1/ann.jpg", Body=ann)
    job = {"tenant": TENANT, "batch": "b1", "job": "job-b1"}
    handler.handler(
        {"Items": [{"row": 0, "file": "ann.jpg", "application_id": ""}], "BatchInput": job}, CONTEXT
    )
    key = "faces/" + part_key(TENANT, "job-b1", 0)
    body = json.loads(s3.get_object(Bucket="faces", Key=key)["Body"].read())
    body["rows"][0]["model_pack"] = "an-older-pack"  # what the analysis ran before the update
    s3.put_object(Bucket="faces", Key=key, Body=json.dumps(body).encode())
    plan = handler.prepare(job, CONTEXT)
    handler.join({"tenant": TENANT, "job": "job-b1", "first": 0, "last": 1}, CONTEXT)
    try:
        handler.decide({"plan": plan}, CONTEXT)
        raise AssertionError("a template of another pack was registered")
    except BadItem as exc:
        assert "analysed with model pack 'an-older-pack'" in str(exc)
    assert _item(cloud, "b1", "ann.jpg", "", ann) is None
    assert list(cloud["store"].iter_templates(tenant=TENANT)) == []


def test_hostile_manifest_values_never_reach_the_results_or_the_logs(
    cloud: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Path traversal, CSV injection, a 100 kB name, a name twice, a control character, an
    application id that is not one: rejected or decided in place, and nothing of them (nor any
    template) is in what the steps return to Step Functions or log."""
    import io
    import json

    fake: FakeFaceAnalyzer = cloud["fake"]
    s3, handler = cloud["s3"], cloud["handler"]
    log = io.StringIO()  # the Lambda's log (the handlers' powertools logger writes there)
    monkeypatch.setattr(handler.logger.registered_handler, "stream", log)
    ann = fake.face(b"ann", unit(fake.dim, 1))
    s3.put_object(Bucket="uploads", Key=f"bulk/{TENANT}/b1/ann.jpg", Body=ann)
    s3.put_object(Bucket="uploads", Key=f"bulk/{TENANT}/b1/manifest.csv", Body=b"file,application_id\n")
    hostile = [
        ("../../faces/t1/x.jpg", ""),
        ('=HYPERLINK("http://evil")', ""),
        ("W" * 100_000, ""),
        ("ann.jpg", "+SUM(A1)"),
        ("ann\x1b[31m.jpg", ""),
        ("ann.jpg", ""),
        ("ann.jpg", ""),
    ]
    items = [{"row": n, "file": f, "application_id": a} for n, (f, a) in enumerate(hostile)]
    job = {"tenant": TENANT, "batch": "b1", "job": "job-b1"}
    returned = [handler.handler({"Items": items, "BatchInput": job}, CONTEXT)]
    plan = handler.prepare(job, CONTEXT)
    returned.append(plan)
    returned.append(
        handler.join({"tenant": TENANT, "job": "job-b1", "first": 0, "last": len(items)}, CONTEXT)
    )
    while not plan.get("done"):
        plan = handler.decide({"plan": plan}, CONTEXT)
        returned.append(plan)
    # five rejected in place; the file named twice is one record, the second row resumes it
    assert plan["last_call"]["outcomes"] == {"rejected": 5, "enrolled": 2}
    assert len(list(cloud["store"].iter_templates(tenant=TENANT))) == 1
    logged = capsys.readouterr()  # the drift metrics (EMF lines)
    lines = log.getvalue()
    assert '"decided"' in lines and '"analysed"' in lines  # the handlers' own log lines
    text = json.dumps(returned) + logged.out + logged.err + lines
    for needle in ("..", "HYPERLINK", "WWWW", "SUM", "\x1b", "ann", "evil"):
        assert needle not in text, needle
    vector = unit(fake.dim, 1).astype("<f4").tobytes()
    assert __import__("base64").b64encode(vector).decode()[:16] not in text

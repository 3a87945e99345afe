"""One registry, many processes, real SQLite files, no model files: exactly-once enrollment
under concurrent imports, and erasure that leaves no copy while another process holds the
registry open. (tests/e2e/test_registry_cli.py does the same with `face-dedup` and photos.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from face_dedup.blob_keys import photo_key
from face_dedup.bootstrap import build_service
from face_dedup.domain import Actor, CaseDecision, CaseStatus, ImportItem, Role
from face_dedup.errors import ErasureIncomplete
from face_dedup.service import InputRef
from face_dedup.settings import Settings
from tests.support.review_api import queries_of
from tests.unit.registry_worker import template

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = 10


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.unit.registry_worker", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def _race(data_dir: Path, noise: float) -> list[dict[str, Any]]:
    """PROCESSES processes open the registry, then all register at the same signal."""
    go = data_dir.parent / "go"
    workers = [
        _start("register", str(data_dir), str(go), f"APP-{n:03d}", "7", str(n if noise else 0), str(noise))
        for n in range(PROCESSES)
    ]
    time.sleep(3)  # let every process open the registry and load its index before the signal
    go.write_text("go")
    lines = []
    for worker in workers:
        stdout, stderr = worker.communicate(timeout=120)
        assert worker.returncode == 0, stderr
        lines.append(json.loads(stdout.strip().splitlines()[-1]))
    return lines


@pytest.mark.parametrize("noise", [0.0, 0.35], ids=["copies", "different-photos"])
def test_concurrent_processes_enroll_a_new_person_exactly_once(tmp_path: Path, noise: float) -> None:
    data_dir = tmp_path / "registry"
    lines = _race(data_dir, noise)
    assert len(lines) == PROCESSES  # every input reported
    enrolled = [line for line in lines if line["outcome"] == "enrolled"]
    assert len(enrolled) == 1, lines
    first = enrolled[0]["record_id"]
    for line in lines:
        if line is not enrolled[0]:
            assert line["outcome"] in ("duplicate", "review"), line
            assert first in line["candidates"], line  # flagged against the one enrolled record

    service, adapters = build_service(Settings.load(data_dir=data_dir), with_engine=False)
    try:
        assert service.gallery_size() == PROCESSES
        assert service.store.outcome_counts(tenant="default").get("enrolled") == 1
        cases = service.store.list_cases(tenant="default", limit=100)
        assert len(cases) == PROCESSES - 1
    finally:
        adapters.close()


def test_a_reviewer_deciding_meanwhile_does_not_break_exactly_once(tmp_path: Path) -> None:
    """As with `serve` deciding cases while imports run: decisions write to the same store."""
    data_dir = tmp_path / "registry"
    settings = Settings.load(data_dir=data_dir)
    service, adapters = build_service(settings, with_engine=False)
    officer = Actor("officer-1", Role.OFFICER)
    try:
        go = data_dir.parent / "go"
        workers = [
            _start("register", str(data_dir), str(go), f"APP-{n:03d}", "7", "0", "0")
            for n in range(PROCESSES)
        ]
        time.sleep(3)
        go.write_text("go")
        decided: set[str] = set()
        while any(w.poll() is None for w in workers):
            for case in service.store.list_cases(tenant="default", status=CaseStatus.OPEN.value):
                if case.case_id not in decided:
                    service.decide_case(case.case_id, CaseDecision.SAME_PERSON, officer, "same face")
                    decided.add(case.case_id)
            time.sleep(0.02)
        lines = [json.loads(w.communicate(timeout=60)[0].strip().splitlines()[-1]) for w in workers]
        assert all(w.returncode == 0 for w in workers)
    finally:
        adapters.close()
    assert [line["outcome"] for line in lines].count("enrolled") == 1
    first = next(line["record_id"] for line in lines if line["outcome"] == "enrolled")
    assert all(first in line["candidates"] for line in lines if line["outcome"] != "enrolled")


@pytest.mark.parametrize("lock_file_removed", [False, True], ids=["plain", "lock-file-removed"])
def test_a_search_and_its_commit_have_no_other_enrollment_in_between(
    tmp_path: Path, lock_file_removed: bool
) -> None:
    """Deterministic interleaving: two registries opened on one data dir (as two processes would,
    each with its own index snapshot and lock handle); the first is slowed down between its
    search and its commit, and the second registers the same face meanwhile. Without the
    registry lock both would enroll. `lock-file-removed`: meanwhile an operator deletes a
    "stale" registry.lock (with a lock on that file, the second locked a new one and enrolled)."""
    import threading

    from face_dedup.ports import EnrollmentCommit

    data_dir = tmp_path / "registry"
    settings = Settings.load(data_dir=data_dir)
    first, first_adapters = build_service(settings, with_engine=False)
    second, second_adapters = build_service(settings, with_engine=False)
    face = template(settings, person=3, variant=0, noise=0.0)
    searched = threading.Event()
    original = first.store.commit

    def slow_commit(commit: EnrollmentCommit) -> None:
        if lock_file_removed:
            (data_dir / "registry.lock").unlink(missing_ok=True)
        searched.set()  # the first has decided "new person" and is about to commit
        time.sleep(0.5)
        original(commit)

    first.store.commit = slow_commit  # type: ignore[method-assign]
    results: dict[str, ImportItem] = {}
    try:
        runner = threading.Thread(
            target=lambda: results.update(a=first.register(InputRef("a.jpg", "APP-A"), "a" * 64, face, None))
        )
        runner.start()
        assert searched.wait(30)
        results["b"] = second.register(InputRef("b.jpg", "APP-B"), "a" * 64, face, None)
        runner.join(30)
    finally:
        first_adapters.close()
        second_adapters.close()
    assert results["a"].outcome.value == "enrolled"
    assert results["b"].outcome.value == "duplicate"
    assert [c.record_id for c in results["b"].candidates] == [results["a"].record_id]


def test_an_index_rebuilt_by_another_process_is_followed_by_those_already_open(tmp_path: Path) -> None:
    """doctor (or a process that found index.sqlite damaged) replaces the file with a rebuilt
    one while imports and `serve` have it open. They kept reading and writing the deleted file:
    a face another process enrolled afterwards was never seen, and enrolled a second time."""
    from face_dedup.adapters.embedded_index import ExactVectorIndex, rebuild_from, remove_database
    from face_dedup.adapters.registry_lock import RegistryLock
    from face_dedup.adapters.sqlite_store import SqliteRecordStore

    data_dir = tmp_path / "registry"
    settings = Settings.load(data_dir=data_dir)
    running, running_adapters = build_service(settings, with_engine=False)
    try:
        known = running.register(InputRef("k.jpg", "APP-K"), "k" * 64, template(settings, 5, 0, 0.0), None)
        assert known.outcome.value == "enrolled"
        with RegistryLock(data_dir / "registry.lock")():  # what doctor does with a damaged index
            remove_database(data_dir / "index.sqlite")
            rebuilt, store = (
                ExactVectorIndex(data_dir / "index.sqlite"),
                SqliteRecordStore(data_dir / "registry.sqlite"),
            )
            assert rebuild_from(rebuilt, store) == 1
            rebuilt.close()
            store.close()
        other, other_adapters = build_service(settings, with_engine=False)
        try:
            face = template(settings, 6, 0, 0.0)
            first = other.register(InputRef("a.jpg", "APP-A"), "a" * 64, face, None)
        finally:
            other_adapters.close()
        second = running.register(InputRef("b.jpg", "APP-B"), "b" * 64, face, None)
    finally:
        running_adapters.close()
    assert first.outcome.value == "enrolled"
    assert second.outcome.value == "duplicate"
    assert [c.record_id for c in second.candidates] == [first.record_id]


def test_an_index_still_being_refilled_by_another_process_is_not_searched(tmp_path: Path) -> None:
    """A process that finds index.sqlite damaged at open replaces it, then refills it from the
    store after releasing the lock. Meanwhile, the processes already running keep their own
    complete copy instead of switching to the half-filled file (which would miss faces)."""
    from face_dedup.adapters.embedded_index import ExactVectorIndex, rebuild_from, remove_database
    from face_dedup.adapters.registry_lock import RegistryLock
    from face_dedup.adapters.sqlite_store import SqliteRecordStore

    data_dir = tmp_path / "registry"
    settings = Settings.load(data_dir=data_dir)
    running, running_adapters = build_service(settings, with_engine=False)
    try:
        face = template(settings, 5, 0, 0.0)
        known = running.register(InputRef("k.jpg", "APP-K"), "k" * 64, face, None)
        with RegistryLock(data_dir / "registry.lock")():  # as open_index does with a damaged file
            remove_database(data_dir / "index.sqlite")
            fresh = ExactVectorIndex(data_dir / "index.sqlite")
            fresh.set_rebuilding(True)
        again = running.register(InputRef("a.jpg", "APP-A"), "a" * 64, face, None)
        store = SqliteRecordStore(data_dir / "registry.sqlite")
        assert rebuild_from(fresh, store) == 2  # refilled: now the running process switches to it
        fresh.close()
        store.close()
        third = running.register(InputRef("b.jpg", "APP-B"), "b" * 64, face, None)
    finally:
        running_adapters.close()
    assert again.outcome.value == "duplicate"
    assert [c.record_id for c in again.candidates] == [known.record_id]
    assert third.outcome.value == "duplicate"
    assert {c.record_id for c in third.candidates} == {known.record_id, again.record_id}


def _all_bytes(root: Path) -> list[tuple[Path, bytes]]:
    return [(p, p.read_bytes()) for p in sorted(root.rglob("*")) if p.is_file()]


def test_erase_leaves_no_copy_while_another_process_holds_the_registry(tmp_path: Path) -> None:
    data_dir = tmp_path / "registry"
    settings = Settings.load(data_dir=data_dir)
    service, adapters = build_service(settings, with_engine=False)
    try:
        faces = {n: template(settings, person=100 + n, variant=0, noise=0.0) for n in range(3)}
        photos = {n: f"the photo of applicant {n}".encode() * 40 for n in range(3)}
        items = {
            n: service.register(InputRef(f"p{n}.jpg", f"APP-{n}"), f"{n:064d}", faces[n], photos[n])
            for n in range(3)
        }
        assert all(i.outcome.value == "enrolled" for i in items.values())
        victim = items[1].record_id
        assert victim is not None
        crop = service.blobs.get(photo_key("default", victim).replace("photo", "aligned.png"))
        ready = tmp_path / "holder-ready"
        holder = _start("hold", str(data_dir), str(ready))
        try:
            deadline = time.monotonic() + 60
            while not ready.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert ready.exists(), "the holding process did not open the registry"
            receipt = service.erase(victim, "dpo", "erasure request 42")
            assert set(receipt["verified"]) == {"template", "photo", "crop"}
            template_bytes = faces[1].embedding.astype(np.float32).tobytes()
            for path, data in _all_bytes(data_dir):  # the holder still has everything open
                assert template_bytes not in data, f"template left in {path.name}"
                assert photos[1] not in data, f"photo left in {path.name}"
                assert crop not in data, f"crop left in {path.name}"
            # the others' templates are still there (the scan is not vacuous)
            everything = b"".join(d for _, d in _all_bytes(data_dir))
            assert faces[0].embedding.astype(np.float32).tobytes() in everything
            assert photos[2] in everything
        finally:
            holder.kill()
            holder.communicate(timeout=30)
    finally:
        adapters.close()


@pytest.fixture
def short_checkpoint_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    from face_dedup.adapters import sqlite_files

    monkeypatch.setattr(sqlite_files, "CHECKPOINT_WAIT_S", 0.5)


@pytest.mark.usefixtures("short_checkpoint_wait")
def test_erase_reports_a_copy_it_could_not_remove(tmp_path: Path) -> None:
    """A reader stuck inside an old snapshot blocks the checkpoint: the erase says so (with
    the file and the fix) instead of reporting success."""
    import sqlite3

    data_dir = tmp_path / "registry"
    settings = Settings.load(data_dir=data_dir)
    service, adapters = build_service(settings, with_engine=False)
    try:
        face = template(settings, person=5, variant=0, noise=0.0)
        item = service.register(InputRef("p.jpg", "APP-5"), "5" * 64, face, b"photo bytes " * 30)
        assert item.record_id is not None
        reader = sqlite3.connect(data_dir / "index.sqlite")
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM vectors").fetchone()  # holds a snapshot open
        try:
            with pytest.raises(ErasureIncomplete, match=r"template is still in index\.sqlite.*doctor"):
                service.erase(item.record_id, "dpo", "request")
        finally:
            reader.rollback()
            reader.close()
    finally:
        adapters.close()


def test_erase_finds_a_copy_left_anywhere_else_in_the_data_dir(tmp_path: Path) -> None:
    """The scan is not limited to the files erase itself wrote: a stray copy fails the erasure."""
    data_dir = tmp_path / "registry"
    settings = Settings.load(data_dir=data_dir)
    service, adapters = build_service(settings, with_engine=False)
    try:
        face = template(settings, person=9, variant=0, noise=0.0)
        photo = b"a photo nobody else has " * 30
        item = service.register(InputRef("p.jpg", "APP-9"), "9" * 64, face, photo)
        assert item.record_id is not None
        (data_dir / "blobs" / "default" / "leftover.bin").write_bytes(b"header" + photo + b"trailer")
        with pytest.raises(ErasureIncomplete, match=r"its photo is still in blobs/default/leftover\.bin"):
            service.erase(item.record_id, "dpo", "request")
    finally:
        adapters.close()


@pytest.mark.usefixtures("short_checkpoint_wait")
def test_the_api_erase_reports_a_remaining_copy_as_a_failure_never_as_success(tmp_path: Path) -> None:
    import sqlite3

    from face_dedup_api.app import Dependencies, app, configure
    from face_dedup_api.images import ImageSigner
    from face_dedup_api.local_server import LocalContext, to_event

    data_dir = tmp_path / "registry"
    settings = Settings.load(data_dir=data_dir)
    service, adapters = build_service(settings, with_engine=False)
    supervisor = {"cognito:username": "sue", "cognito:groups": "supervisor", "custom:tenant": "default"}
    try:
        ids = []
        for n in range(2):
            face = template(settings, person=20 + n, variant=0, noise=0.0)
            item = service.register(
                InputRef(f"{n}.jpg", f"APP-{n}"), f"{n}" * 64, face, f"photo {n}".encode() * 40
            )
            ids.append(str(item.record_id))
        configure(
            Dependencies(
                service=service, queries=queries_of(service), signer=ImageSigner(b"secret", ttl_seconds=60)
            )
        )

        def delete(record_id: str) -> tuple[int, dict[str, Any]]:
            event = to_event("DELETE", f"/records/{record_id}?reason=request-1", {}, b"", supervisor)
            response = app.resolve(event, LocalContext())  # type: ignore[arg-type]
            return int(response["statusCode"]), json.loads(response["body"])

        reader = sqlite3.connect(data_dir / "index.sqlite")
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM vectors").fetchone()  # an old snapshot held open
        try:
            status, body = delete(ids[0])
        finally:
            reader.rollback()
            reader.close()
        assert status == 503 and "template is still in index.sqlite" in body["error"]
        status, body = delete(ids[1])
        assert status == 200 and set(body["verified"]) == {"template", "photo", "crop"}
    finally:
        adapters.close()

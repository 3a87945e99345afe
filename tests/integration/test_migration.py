"""Migrating a registry between the two shipped packs (yunet-sface-v1 -> yunet-sface-flip-v1):
re-embedding killed with SIGKILL and resumed, shadow mode, cut-over, erasure during the
migration, an interrupted cut-over, and rollback. Built from the demo's sample photos (a pinned
package): no shared data needed."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from face_dedup.blob_keys import crop_key
from face_dedup.bootstrap import build_engine, build_service
from face_dedup.demo import build_demo_inputs
from face_dedup.domain import AuditEvent, Outcome, utc_now
from face_dedup.errors import ConfigError
from face_dedup.models.registry import YUNET_SFACE, YUNET_SFACE_FLIP
from face_dedup.service import InputRef
from face_dedup.settings import Settings

OLD, NEW = YUNET_SFACE.id, YUNET_SFACE_FLIP.id


def _cli(env: dict[str, str], *args: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", "face_dedup", "migrate", *args, "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


def _rows(folder: Path) -> list[tuple[str, str]]:
    with (folder.parent / "manifest.csv").open() as handle:
        return [(r["file"], r["application_id"]) for r in csv.DictReader(handle)]


@pytest.fixture
def registry(base_settings: Settings, tmp_path: Path) -> tuple[Settings, Path, dict[str, str]]:
    photos = tmp_path / "inputs" / "photos"
    build_demo_inputs(base_settings, photos)
    data_dir = tmp_path / "registry"
    settings = Settings.load(
        environ={}, data_dir=data_dir, models_dir=base_settings.models_dir, model_pack=OLD
    )
    service, adapters = build_service(settings)
    try:
        first = [(f, a) for f, a in _rows(photos) if not f.startswith("second-application")]
        for name, application in first:
            service.enroll((photos / name).read_bytes(), InputRef(name, application))
    finally:
        adapters.close()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FACE_DEDUP_")},
        "FACE_DEDUP_DATA_DIR": str(data_dir),
        "FACE_DEDUP_MODELS_DIR": str(base_settings.models_dir),
    }
    return settings, photos, env


def _load(settings: Settings) -> Settings:
    """A fresh process's settings: the packs come from the registry's packs.json."""
    return Settings.load(environ={}, data_dir=settings.data_dir, models_dir=settings.models_dir)


def test_migration_end_to_end(registry: tuple[Settings, Path, dict[str, str]]) -> None:
    settings, photos, env = registry
    service, adapters = build_service(settings, with_engine=False)
    originals = {r.record_id: r.embedding.tobytes() for r in service.store.iter_templates(tenant="default")}
    adapters.close()
    total = len(originals)
    assert total >= 6 and {r for r in originals}  # the demo's faces enrolled

    # -- start: the new pack becomes the shadow ------------------------------------------------
    _cli({**env, "FACE_DEDUP_MODEL_PACK": OLD}, "start", "--to", NEW)
    assert _load(settings).model_pack == OLD and _load(settings).shadow_pack == NEW
    with pytest.raises(ConfigError, match="templates are in model pack"):
        Settings.load(environ={}, data_dir=settings.data_dir, models_dir=settings.models_dir, model_pack=NEW)

    # -- run, killed with SIGKILL after two records, then resumed ------------------------------
    process = subprocess.Popen(
        [sys.executable, "-m", "face_dedup", "migrate", "run", "--rate", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    for line in process.stderr:
        if line.startswith("migrated 2/"):
            os.kill(process.pid, signal.SIGKILL)
            break
    process.wait(timeout=60)
    process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    service, adapters = build_service(_load(settings), with_engine=False)
    kept = len(service.store.pack_templates(tenant="default", model_pack=NEW))
    adapters.close()
    assert 2 <= kept < total  # the first records stayed done; the kill left the rest

    resumed = _cli(env, "run")
    assert resumed["already_migrated"] == kept
    assert resumed["migrated"] == total - kept and resumed["failed"] == {}
    again = _cli(env, "run")
    assert again["migrated"] == 0 and again["already_migrated"] == total  # idempotent

    # The new pack's templates are what the new pack makes of the stored crops, and differ from
    # the old pack's (flip-averaged): never the old vectors copied over.
    live = _load(settings)
    new_engine = build_engine(live, YUNET_SFACE_FLIP)
    service, adapters = build_service(live)
    try:
        assert service.model_pack == OLD and service.shadow is not None
        migrated = service.store.pack_templates(tenant="default", model_pack=NEW)
        assert set(migrated) == set(originals)
        for record_id, vector in migrated.items():
            png = service.blobs.get(crop_key("default", record_id))
            bgr = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
            assert bgr is not None
            crop = np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), dtype=np.uint8)
            assert float(np.dot(vector, new_engine.embed(crop))) > 0.9999
            assert vector.tobytes() != originals[record_id]

        # -- shadow: new inputs are searched in both packs; decisions from the old one ---------
        gallery_before = service.gallery_size()
        assert gallery_before == total  # the old pack's partition only: packs never mix
        second = [(f, a) for f, a in _rows(photos) if f.startswith("second-application")]
        items = [service.enroll((photos / f).read_bytes(), InputRef(f, a)) for f, a in second]
        decided = [i for i in items if i.outcome not in (Outcome.REJECTED, Outcome.VERIFIED)]
        assert decided and any(i.outcome in (Outcome.DUPLICATE, Outcome.REVIEW) for i in decided)
        events = service.store.audit_events(tenant="default")
        imports = [e for e in events if e.action.startswith("import.") and e.details.get("thresholds")]
        assert all(e.details["thresholds"]["model_pack"] == OLD for e in imports)
        compared = [e.details for e in events if e.action == "shadow.compared"]
        assert len(compared) == len(decided)
        same_crop = next(i for i in items if i.source == "second-application-c.jpg")
        verdict = next(d for d in compared if d["record_id"] == same_crop.record_id)
        assert verdict["agree"] is True and verdict["shadow_outcome"] == same_crop.outcome.value
        assert service.shadow.index.count(tenant="default", model_pack=NEW) == total + len(
            [i for i in decided if i.record_id]
        )

        # -- erasure during the migration takes the new pack's template too -------------------
        victim = decided[0].record_id
        assert victim is not None
        victim_vector = service.store.pack_templates(tenant="default", model_pack=NEW)[victim].tobytes()
        service.erase(victim, "test", "erasure request")
        assert victim not in service.store.pack_templates(tenant="default", model_pack=NEW)
        assert victim not in service.shadow.index.record_ids(tenant="default", model_pack=NEW)
        for file in settings.data_dir.glob("registry.sqlite*"):
            assert victim_vector not in file.read_bytes(), file.name
        records_now = service.store.count_templates(tenant="default", model_pack=OLD)
    finally:
        adapters.close()
    status = _cli(env, "status")
    assert status["ready_to_cut_over"] is True and status["shadow_compared"] == len(compared)
    assert status["shadow_disagreements"] == sum(1 for d in compared if not d["agree"])

    # -- cut-over with one command --------------------------------------------------------------
    stale, stale_adapters = build_service(_load(settings))  # a process started before the cut-over
    _cli(env, "cutover")
    try:
        portrait = (photos / "applicant-portrait.png").read_bytes()
        with pytest.raises(ConfigError, match="restart it"):  # it stops instead of deciding blind
            stale.enroll(portrait, InputRef("applicant-portrait.png", "APP-9000"))
    finally:
        stale_adapters.close()
    live = _load(settings)
    assert (live.model_pack, live.shadow_pack) == (NEW, OLD)
    service, adapters = build_service(live)
    try:
        assert service.gallery_size() == records_now
        assert service.index.count(tenant="default", model_pack=OLD) == 0
        assert {r.model_pack for r in service.store.iter_templates(tenant="default")} == {NEW}
        name, _ = next((f, a) for f, a in _rows(photos) if f == "applicant-portrait.png")
        after = service.enroll((photos / name).read_bytes(), InputRef(name, "APP-9001"))
        assert after.outcome in (Outcome.DUPLICATE, Outcome.REVIEW)  # found in the new pack
        assert service.store.get_record(after.record_id or "").model_pack == NEW  # type: ignore[union-attr]
    finally:
        adapters.close()

    # -- an interrupted rollback (store switched, packs.json not) is refused, then finished -----
    service, adapters = build_service(live, with_engine=False, reconcile=False)
    event = AuditEvent("migration.rollback", "test", "default", utc_now(), {})
    service.store.switch_pack(tenant="default", source=NEW, target=OLD, audit=event)
    adapters.close()
    with pytest.raises(ConfigError, match="interrupted"):
        build_service(_load(settings), with_engine=False)

    _cli(env, "rollback")
    live = _load(settings)
    assert (live.model_pack, live.shadow_pack) == (OLD, NEW)
    service, adapters = build_service(live, with_engine=False)
    try:
        back = {r.record_id: r for r in service.store.iter_templates(tenant="default")}
        assert {r.model_pack for r in back.values()} == {OLD}
        for record_id, original in originals.items():
            if record_id in back:  # the old templates, bit for bit
                assert back[record_id].embedding.tobytes() == original
        assert after.record_id in back  # enrolled after the cut-over, kept in the old pack by shadow
        assert service.gallery_size() == len(back)
    finally:
        adapters.close()

    finished = _cli(env, "finish")
    assert finished["templates_erased"] == len(back)
    assert _load(settings).shadow_pack == ""

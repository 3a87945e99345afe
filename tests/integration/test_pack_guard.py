"""A registry never runs a pack its templates are not in (pack_guard.py, issue 12 follow-up).

A registry built with yunet-sface-v1 and no packs.json (it never ran `face-dedup migrate`)
stands for "an old-default registry"; opening it with the shipped default (yunet-sface-flip-v1)
stands for "a release that changed the default". Real models, real SQLite, the demo's photos.
"""

from __future__ import annotations

import csv
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from face_dedup.adapters.sqlite_store import SqliteRecordStore
from face_dedup.bootstrap import build_service
from face_dedup.demo import build_demo_inputs
from face_dedup.domain import Outcome
from face_dedup.errors import ConfigError
from face_dedup.migration import read_packs, write_packs
from face_dedup.models.registry import DEFAULT_PACK_ID, YUNET_SFACE, YUNET_SFACE_FLIP
from face_dedup.pack_guard import TemplatesInAnotherPack
from face_dedup.service import InputRef
from face_dedup.settings import PACKS_FILE, Settings

OLD, NEW = YUNET_SFACE.id, YUNET_SFACE_FLIP.id
assert NEW == DEFAULT_PACK_ID  # "the default changed": the registry below was built with OLD


def _rows(photos: Path) -> list[tuple[str, str]]:
    with (photos.parent / "manifest.csv").open() as handle:
        return [(r["file"], r["application_id"]) for r in csv.DictReader(handle)]


@pytest.fixture(scope="module")
def built(base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, int]:
    """(registry data dir, photos, records): the demo's first applications enrolled under OLD."""
    root = tmp_path_factory.mktemp("pack-guard")
    photos = root / "inputs" / "photos"
    build_demo_inputs(base_settings, photos)
    data_dir = root / "registry"
    settings = Settings.load(
        environ={}, data_dir=data_dir, models_dir=base_settings.models_dir, model_pack=OLD
    )
    service, adapters = build_service(settings)
    try:
        for name, application in _rows(photos):
            if not name.startswith("second-application"):
                service.enroll((photos / name).read_bytes(), InputRef(name, application))
        records = service.store.count_templates(tenant="default", model_pack=OLD)
    finally:
        adapters.close()
    assert records >= 6 and not (data_dir / PACKS_FILE).exists()
    return data_dir, photos, records


def _copy(data_dir: Path, tmp_path: Path) -> Path:
    """A test's own copy of the built registry (the fixture's stays as built)."""
    copy = tmp_path / "registry"
    subprocess.run(["cp", "-a", str(data_dir), str(copy)], check=True)
    return copy


def _env(data_dir: Path, models_dir: Path, **extra: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("FACE_DEDUP_")},
        "FACE_DEDUP_DATA_DIR": str(data_dir),
        "FACE_DEDUP_MODELS_DIR": str(models_dir),
        **extra,
    }


def test_a_changed_default_keeps_the_registrys_pack_and_finds_returning_people(
    built: tuple[Path, Path, int], base_settings: Settings, tmp_path: Path
) -> None:
    data_dir, photos, records = built
    data_dir = _copy(data_dir, tmp_path)
    settings = Settings.load(environ={}, data_dir=data_dir, models_dir=base_settings.models_dir)
    assert settings.model_pack == NEW and settings.model_pack_defaulted  # what the process was told
    service, adapters = build_service(settings)
    try:
        assert service.model_pack == OLD and service.settings.model_pack == OLD  # the templates' pack
        assert service.gallery_size() == records  # the OLD partition, refilled: not an empty one
        second = [(f, a) for f, a in _rows(photos) if f.startswith("second-application")]
        items = [service.enroll((photos / f).read_bytes(), InputRef(f, a)) for f, a in second]
        decided = [i for i in items if i.outcome not in (Outcome.REJECTED, Outcome.VERIFIED)]
        # returning people are found (under NEW's empty partition every one was ENROLLED as new)
        assert decided and any(i.outcome in (Outcome.DUPLICATE, Outcome.REVIEW) for i in decided)
        assert all(i.candidates for i in decided if i.outcome in (Outcome.DUPLICATE, Outcome.REVIEW))
        assert adapters.store.template_packs(tenant="default") == frozenset({OLD})  # none under NEW
    finally:
        adapters.close()
    assert not (data_dir / PACKS_FILE).exists()  # adopted, not recorded (pack_guard's docstring)


def test_an_explicit_other_pack_is_refused_with_the_fix(
    built: tuple[Path, Path, int], base_settings: Settings
) -> None:
    data_dir, _, records = built
    explicit = Settings.load(
        environ={"FACE_DEDUP_MODEL_PACK": NEW}, data_dir=data_dir, models_dir=base_settings.models_dir
    )
    assert not explicit.model_pack_defaulted
    with pytest.raises(TemplatesInAnotherPack) as refused:
        build_service(explicit, with_engine=False)
    message = str(refused.value)
    assert f"templates are in model pack {OLD}, not {NEW}" in message
    assert "unset FACE_DEDUP_MODEL_PACK" in message and f"face-dedup migrate start --to {NEW}" in message
    assert refused.value.packs == {OLD}
    # nothing written: the same records, all still in OLD, and no packs.json
    store = SqliteRecordStore(data_dir / "registry.sqlite")
    try:
        assert store.template_packs(tenant="default") == {OLD}
        assert store.count_templates(tenant="default", model_pack=OLD) == records
    finally:
        store.close()
    assert not (data_dir / PACKS_FILE).exists()


def test_the_cli_prints_the_refusal_without_a_traceback(
    built: tuple[Path, Path, int], base_settings: Settings
) -> None:
    data_dir, _, _ = built
    env = _env(data_dir, base_settings.models_dir, FACE_DEDUP_MODEL_PACK=NEW)
    done = subprocess.run(
        [sys.executable, "-m", "face_dedup", "migrate", "status"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert f"templates are in model pack {OLD}, not {NEW}" in " ".join(done.stderr.split())


def test_mid_migration_the_recorded_packs_run_unchanged(
    built: tuple[Path, Path, int], base_settings: Settings, tmp_path: Path
) -> None:
    data_dir = _copy(built[0], tmp_path)
    write_packs(data_dir, "default", OLD, NEW)  # `migrate start --to NEW`: NEW is the shadow
    settings = Settings.load(environ={}, data_dir=data_dir, models_dir=base_settings.models_dir)
    service, adapters = build_service(settings, with_engine=False, reconcile=False)
    adapters.close()
    assert (service.settings.model_pack, service.settings.shadow_pack) == (OLD, NEW)
    # packs.json naming a pack the templates are not in (restored without its registry): refused
    write_packs(data_dir, "default", NEW, "")
    moved = Settings.load(environ={}, data_dir=data_dir, models_dir=base_settings.models_dir)
    with pytest.raises(TemplatesInAnotherPack, match=f"records {NEW}.*restore {PACKS_FILE}"):
        build_service(moved, with_engine=False)


def test_migrate_start_under_a_changed_default_records_the_templates_pack(
    built: tuple[Path, Path, int], base_settings: Settings, tmp_path: Path
) -> None:
    """`migrate start` reads the pack from the service, not from the default it was given (which
    would have recorded NEW as active: or refused `--to NEW` as "already the active pack")."""
    data_dir = _copy(built[0], tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "face_dedup", "migrate", "start", "--to", NEW, "--json"],
        env=_env(data_dir, base_settings.models_dir),
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["active"] == OLD
    assert read_packs(data_dir)["default"]["active"] == OLD


def test_an_empty_registry_takes_the_configured_or_default_pack(
    base_settings: Settings, tmp_path: Path
) -> None:
    for environ, expected in (({}, DEFAULT_PACK_ID), ({"FACE_DEDUP_MODEL_PACK": OLD}, OLD)):
        data_dir = tmp_path / expected
        settings = Settings.load(environ=environ, data_dir=data_dir, models_dir=base_settings.models_dir)
        service, adapters = build_service(settings, with_engine=False)
        adapters.close()
        assert service.model_pack == expected
        assert not (data_dir / PACKS_FILE).exists()


_OPEN = """
import sys
from face_dedup.bootstrap import build_service
from face_dedup.settings import Settings
service, adapters = build_service(Settings.load(), with_engine=False)
print(service.model_pack)
adapters.close()
"""


def test_several_processes_opening_at_once_all_run_the_templates_pack(
    built: tuple[Path, Path, int], base_settings: Settings, tmp_path: Path
) -> None:
    data_dir = _copy(built[0], tmp_path)
    env = _env(data_dir, base_settings.models_dir)
    started = [
        subprocess.Popen(
            [sys.executable, "-c", _OPEN], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(4)
    ]
    results = [p.communicate(timeout=300) for p in started]
    for process, (out, err) in zip(started, results, strict=True):
        assert process.returncode == 0, err.decode()
        assert out.decode().split() == [OLD]
    assert not (data_dir / PACKS_FILE).exists()


def test_a_registry_enrolled_under_two_packs_is_refused_even_by_default(
    built: tuple[Path, Path, int], base_settings: Settings, tmp_path: Path
) -> None:
    """What the bug left behind (some records enrolled under a second pack): no pack is safe."""
    data_dir = _copy(built[0], tmp_path)
    with sqlite3.connect(data_dir / "registry.sqlite") as db:
        row = db.execute("SELECT record_id FROM records LIMIT 1").fetchone()
        db.execute("UPDATE records SET model_pack = ? WHERE record_id = ?", (NEW, row[0]))
    db.close()
    for environ in ({}, {"FACE_DEDUP_MODEL_PACK": OLD}):
        settings = Settings.load(environ=environ, data_dir=data_dir, models_dir=base_settings.models_dir)
        with pytest.raises(TemplatesInAnotherPack, match="enrolled under several model packs") as refused:
            build_service(settings, with_engine=False)
        assert refused.value.packs == {OLD, NEW}


def test_a_process_serves_no_other_tenant_whose_templates_are_in_another_pack(
    built: tuple[Path, Path, int], base_settings: Settings
) -> None:
    """The local API serves each caller's tenant from one process (service.for_tenant)."""
    data_dir, _, _ = built
    other = Settings.load(environ={}, data_dir=data_dir, models_dir=base_settings.models_dir, tenant="other")
    service, adapters = build_service(other, with_engine=False, reconcile=False)
    try:
        assert service.model_pack == NEW  # tenant "other" is empty: the default
        with pytest.raises(ConfigError, match=f"tenant default's templates are in model pack {OLD}"):
            service.for_tenant("default")
        assert service.for_tenant("third").tenant == "third"  # empty: served
    finally:
        adapters.close()

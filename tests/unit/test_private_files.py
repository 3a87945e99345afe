"""Files only the operator can read, whatever the umask; a data dir open to others is refused."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from face_dedup.adapters.private_files import private_report
from face_dedup.bootstrap import build_service
from face_dedup.errors import ConfigError, InputRejected, Reason
from face_dedup.importer import InputSpec, run_import
from face_dedup.service import InputRef, content_digest
from face_dedup.settings import Settings
from tests.unit.registry_worker import template


@pytest.fixture
def open_umask() -> Iterator[None]:
    previous = os.umask(0)
    yield
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_every_file_0600_and_folder_0700_under_umask_000(tmp_path: Path, open_umask: None) -> None:
    data_dir = tmp_path / "new" / "registry"
    service, adapters = build_service(Settings.load(data_dir=data_dir), with_engine=False)
    try:
        tenant = service.for_tenant("north")
        for n in range(2):
            photo = f"photo {n}".encode() * 20
            tenant.register(
                InputRef(f"{n}.jpg", f"APP-{n}"),
                content_digest(photo),
                template(service.settings, n, 0, 0),
                photo,
            )
        report = tmp_path / "report.jsonl"
        bad = InputSpec("x.jpg", None, problem=InputRejected(Reason.UNREADABLE, "gone"))
        run_import(service, [bad], report=private_report(report))
        assert _mode(report) == 0o600
    finally:
        adapters.close()
    entries = list(data_dir.rglob("*"))
    assert any(p.name == "registry.sqlite" for p in entries)
    assert any(p.name == "photo" for p in entries)
    assert _mode(data_dir) == 0o700
    for path in entries:
        expected = 0o700 if path.is_dir() else 0o600
        assert _mode(path) == expected, f"{path.relative_to(data_dir)} is {_mode(path):04o}"


def test_a_data_dir_open_to_others_is_refused_unless_allowed(tmp_path: Path) -> None:
    data_dir = tmp_path / "registry"
    data_dir.mkdir()
    data_dir.chmod(0o755)
    with pytest.raises(ConfigError, match=r"open to group or others \(mode 0755\).*chmod 700.*ALLOW_OPEN"):
        build_service(Settings.load(data_dir=data_dir), with_engine=False)
    assert not (data_dir / "registry.sqlite").exists()  # nothing written into it
    _, adapters = build_service(Settings.load(data_dir=data_dir, allow_open_data_dir=True), with_engine=False)
    adapters.close()
    assert _mode(data_dir / "registry.sqlite") == 0o600  # the files are private all the same


def test_the_override_is_a_setting(tmp_path: Path) -> None:
    settings = Settings.load({"FACE_DEDUP_ALLOW_OPEN_DATA_DIR": "1"}, data_dir=tmp_path)
    assert settings.allow_open_data_dir


def test_a_bad_tenant_on_the_command_line_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "face_dedup",
            "cases",
            "list",
            "--tenant",
            "..",
            "--data-dir",
            str(tmp_path / "r"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: invalid tenant '..': use 1-63 characters from letters, digits, '_' and '-', "
        "starting with a letter or digit"
    ]


@pytest.mark.parametrize("name", ["..", "a\\b", "a/b", ".hidden", "", "x" * 64, "a b"])
def test_tenant_names_follow_the_one_rule(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="invalid tenant"):
        Settings.load(data_dir=tmp_path, tenant=name)

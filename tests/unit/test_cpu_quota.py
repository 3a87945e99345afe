"""Review R12k: an import's analysis threads and OpenVINO's streams follow the cores a process
may use. A container limited by CPU quota (Kubernetes, `docker --cpus 2`) sees every core of
the host in its CPU set; without the quota, a 64-core host gave a 2-CPU container 128 analysis
threads, 512 photos in flight and 64 OpenVINO streams."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from face_dedup.vision import runtimes


def _quota(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, v2: str | None, v1: tuple[str, str] | None
) -> None:
    files: list[tuple[str, ...]] = []
    if v2 is not None:
        (tmp_path / "cpu.max").write_text(v2)
        files.append((str(tmp_path / "cpu.max"),))
    else:
        files.append((str(tmp_path / "absent"),))
    if v1 is not None:
        (tmp_path / "quota").write_text(v1[0])
        (tmp_path / "period").write_text(v1[1])
        files.append((str(tmp_path / "quota"), str(tmp_path / "period")))
    monkeypatch.setattr(runtimes, "CPU_QUOTA_FILES", tuple(files))
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(64)))


@pytest.mark.parametrize(
    ("v2", "v1", "cores"),
    [
        ("200000 100000\n", None, 2),  # cgroup v2: 2 CPUs
        ("150000 100000\n", None, 2),  # 1.5 CPUs: rounded up
        ("50000 100000\n", None, 1),
        ("max 100000\n", None, 64),  # no quota: the CPU set
        (None, ("300000\n", "100000\n"), 3),  # cgroup v1
        (None, ("-1\n", "100000\n"), 64),
        (None, None, 64),  # neither file
        ("garbage\n", None, 64),
    ],
)
def test_usable_cores_is_the_cpu_set_capped_by_the_quota(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, v2: str | None, v1: tuple[str, str] | None, cores: int
) -> None:
    _quota(monkeypatch, tmp_path, v2, v1)
    assert runtimes.usable_cores() == cores

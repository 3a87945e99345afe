"""The whole VectorIndex contract again, on the embedded index with its compact int8 scan used
for every threshold search (`compact_from=0`; by default it starts at 20,000 vectors, more than
these tests hold), in sealed blocks of 64 rows (by default 65,536)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from face_dedup.adapters.embedded_index import ExactVectorIndex
from face_dedup.ports import VectorIndex
from tests.unit.test_vector_index_contract import *  # noqa: F403 - the same tests, this adapter


# replaces the star-imported fixture of the same name: that is the point of this module
@pytest.fixture  # type: ignore[no-redef]
def make_index(tmp_path: Path) -> Iterator[Callable[[], VectorIndex]]:
    opened: list[VectorIndex] = []

    def factory() -> VectorIndex:
        # blocks of 64 rows: the contract's larger partitions seal MatMulNBits blocks (in the
        # background, so some searches meet a block being built) and scan a tail
        index = ExactVectorIndex(tmp_path / "index.sqlite", compact_from=0, block_rows=64)
        opened.append(index)
        return index

    yield factory
    for index in opened:
        index.close()

"""Review R12k: which of an erased record's templates the erasure's scan checks. A template is
left out of the check only where another record holds the very same bytes (the same photo
enrolled twice), never because another record's vector scores close to it: a twin at 0.9999
that is not byte-identical (a re-encoded copy of the photo, another embedder runtime) leaves
the erased record's own template unchecked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from face_dedup.add_template import add_photo
from face_dedup.bootstrap import Adapters, build_service
from face_dedup.domain import Actor, Role
from face_dedup.models.custom import find_pack
from face_dedup.service import DedupService, InputRef
from face_dedup.settings import Settings
from tests.support.fake_face_analyzer import at_score, unit
from tests.unit.test_record_templates import ScoredFake

OFFICER = Actor("olga", Role.OFFICER)


def _settings(data_dir: Path) -> Settings:
    return Settings.load({}, data_dir=data_dir, models_dir=data_dir.parent / "no-models")


@pytest.fixture
def fake(tmp_path: Path) -> ScoredFake:
    settings = _settings(tmp_path / "registry")
    return ScoredFake(find_pack(settings.model_pack, settings.models_dir))


@pytest.fixture
def built(tmp_path: Path, fake: ScoredFake) -> Iterator[DedupService]:
    adapters: Adapters
    service, adapters = build_service(_settings(tmp_path / "registry"), analyzer=fake)
    yield service
    adapters.close()


def _record_with_a_later_photo(service: DedupService, fake: ScoredFake, later_score: float) -> str:
    """APP-1 enrolled from "enrollment photo" (its template 1 is the axis 0), then a later photo."""
    base = unit(fake.dim, 0)
    first = service.enroll(fake.face(b"enrollment photo", base), InputRef("p.jpg", "APP-1"))
    assert first.record_id is not None
    add_photo(
        service, first.record_id, fake.face(b"later photo" * 4, at_score(base, later_score, 1)), OFFICER
    )
    return first.record_id


def test_a_near_twin_that_is_not_the_same_bytes_leaves_the_enrollment_template_checked(
    built: DedupService, fake: ScoredFake
) -> None:
    service = built
    base = unit(fake.dim, 0)
    first_id = _record_with_a_later_photo(service, fake, 0.9)
    # Another application's photo whose template scores 0.99995 with the enrollment template:
    # close, but not the same bytes, so nothing else holds the erased record's template 1.
    twin = at_score(base, 0.99995, 2)
    assert float(np.dot(twin, base)) >= 0.9999 and twin.astype(np.float32).tobytes() != base.tobytes()
    second = service.enroll(fake.face(b"a re-encoded copy", twin), InputRef("q.jpg", "APP-2"))
    assert second.record_id is not None
    receipt = service.erase(first_id, "dpo", "erasure request 9")
    assert "template 1" in receipt["verified"]


def test_the_same_photo_enrolled_twice_leaves_the_template_to_the_other_record(
    built: DedupService, fake: ScoredFake
) -> None:
    """The exception kept: the other record holds the same vector, so the erased record's
    template 1 bytes are legitimately still in the store, and the erasure succeeds."""
    service = built
    base = unit(fake.dim, 0)
    first_id = _record_with_a_later_photo(service, fake, 0.9)
    second = service.enroll(fake.face(b"enrollment photo", base), InputRef("p2.jpg", "APP-2"))
    assert second.record_id is not None
    receipt = service.erase(first_id, "dpo", "erasure request 10")
    assert "template 1" not in receipt["verified"]
    assert "template 2" in receipt["verified"]


def test_erasing_a_second_enrollment_of_a_photo_another_record_holds_among_several_templates(
    built: DedupService, fake: ScoredFake
) -> None:
    """The same photo enrolled under a second application, after the first record took a later
    photo: the first record is indexed by its centroid (0.89 with its own enrollment template
    here), below the same-photo candidates' old floor, so the second record's erasure looked
    for its template in the store, found the first record's template 1 (the same bytes) and
    failed with ErasureIncomplete although nothing of the erased record was left."""
    service = built
    base = unit(fake.dim, 0)
    first_id = _record_with_a_later_photo(service, fake, 0.6)
    second = service.enroll(fake.face(b"enrollment photo", base), InputRef("p2.jpg", "APP-2"))
    assert second.record_id is not None and second.record_id != first_id
    receipt = service.erase(second.record_id, "dpo", "erasure request 11")
    assert receipt["identical_copies_in_other_records"] == 1
    assert len(service.store.record_templates(first_id)) == 2  # the first record kept all

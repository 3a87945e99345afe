"""A claim lapses CLAIM_MINUTES after it was taken, so a case never stays with someone who left."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from face_dedup.domain import CLAIM_MINUTES, Case, CaseStatus, Outcome, claim_holder, claimed_at

TAKEN = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def case(claimed_by: str | None, history: tuple[dict[str, str], ...]) -> Case:
    return Case(
        case_id="case_1",
        tenant="t",
        probe_record_id="rec_1",
        kind=Outcome.REVIEW,
        candidates=(),
        status=CaseStatus.OPEN,
        created_at=TAKEN.isoformat(),
        thresholds={},
        claimed_by=claimed_by,
        history=history,
    )


def test_a_claim_holds_until_it_lapses() -> None:
    claimed = case("ann", ({"action": "claimed", "at": TAKEN.isoformat(), "actor": "ann"},))
    assert claimed_at(claimed) == TAKEN.isoformat()
    assert claim_holder(claimed, TAKEN + timedelta(minutes=CLAIM_MINUTES - 1)) == "ann"
    assert claim_holder(claimed, TAKEN + timedelta(minutes=CLAIM_MINUTES)) is None


def test_the_latest_claim_counts_and_no_claim_holds_nothing() -> None:
    later = TAKEN + timedelta(minutes=20)
    reclaimed = case(
        "ann",
        (
            {"action": "claimed", "at": TAKEN.isoformat(), "actor": "ann"},
            {"action": "claimed", "at": later.isoformat(), "actor": "ann"},
        ),
    )
    assert claim_holder(reclaimed, TAKEN + timedelta(minutes=CLAIM_MINUTES + 5)) == "ann"
    assert claim_holder(case(None, ()), TAKEN) is None


def test_a_claim_holds_only_an_open_case() -> None:
    from dataclasses import replace

    claimed = case("ann", ({"action": "claimed", "at": TAKEN.isoformat(), "actor": "ann"},))
    soon = TAKEN + timedelta(minutes=1)
    assert claim_holder(claimed, soon) == "ann"
    for status in (CaseStatus.AWAITING_CONFIRMATION, CaseStatus.CLOSED):
        assert claim_holder(replace(claimed, status=status), soon) is None, status


def test_the_claim_an_undo_gives_back_lapses_too() -> None:
    undone_at = TAKEN + timedelta(minutes=2)
    undone = case(
        "ann",
        (
            {"action": "decided", "at": TAKEN.isoformat(), "actor": "ann"},
            {"action": "undone", "at": undone_at.isoformat(), "actor": "ann"},
        ),
    )
    assert claimed_at(undone) == undone_at.isoformat()
    assert claim_holder(undone, undone_at + timedelta(minutes=CLAIM_MINUTES - 1)) == "ann"
    assert claim_holder(undone, undone_at + timedelta(minutes=CLAIM_MINUTES)) is None

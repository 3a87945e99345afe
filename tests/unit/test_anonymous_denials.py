"""Refusals of callers without an identity: one by one up to a budget a minute, then counted."""

from __future__ import annotations

from face_dedup_api.denials import AnonymousDenials


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_over_the_budget_refusals_are_counted_and_reported_in_the_next_minute() -> None:
    clock = Clock()
    budget = AnonymousDenials(per_minute=3, clock=clock)
    assert [budget.take() for _ in range(5)] == [(True, 0), (True, 0), (True, 0), (False, 0), (False, 0)]
    clock.now += 59.9
    assert budget.take() == (False, 0)  # still the same minute
    clock.now += 0.2
    assert budget.take() == (True, 3)  # a new minute: this one recorded, and the 3 before as a count
    assert budget.take() == (True, 0)  # the count is reported once


def test_under_the_budget_every_refusal_is_recorded() -> None:
    clock = Clock()
    budget = AnonymousDenials(per_minute=2, clock=clock)
    for _ in range(5):
        assert budget.take() == (True, 0)
        assert budget.take() == (True, 0)
        clock.now += 60

"""What an input's decision can be, and what each outcome sets off: shared by the decision
policy, the use cases, the in-process workflow and the Step Functions definition (the CDK app
generates its choice states from these constants). No numpy here, so synth can import it."""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    ENROLLED = "enrolled"  # no candidate at or above the review threshold
    REVIEW = "review"  # a case with ranked candidates for an officer
    DUPLICATE = "duplicate"  # above the auto-match threshold: linked, and still reviewable
    REJECTED = "rejected"  # decode or quality reason; nothing enrolled
    # The application already has an enrolled face and this photo matches it (1:1, at the verify
    # threshold): a verification, nothing new enrolled. A photo that does not match its own
    # application's face is never enrolled as someone new: it goes to review.
    VERIFIED = "verified"


# What the decision policy can decide for an analysed input (a rejection is decided earlier,
# by the engine). The workflow has a branch for each.
OPENS_CASE: tuple[Outcome, ...] = (Outcome.REVIEW, Outcome.DUPLICATE)  # a case, then officers told
NO_CASE: tuple[Outcome, ...] = (Outcome.ENROLLED, Outcome.VERIFIED)  # recorded, nobody told
DECIDED: tuple[Outcome, ...] = (*NO_CASE, *OPENS_CASE)


def case_to_notify(outcome: Outcome | str, case_id: str | None) -> str | None:
    """The one rule for whom to tell: the tenant's officers hear of a case the decision opened
    (its id and link only; returned here); an enrollment or a verification tells nobody (None)."""
    return case_id if case_id is not None and Outcome(outcome) in OPENS_CASE else None

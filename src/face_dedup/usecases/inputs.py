"""The values enrollment takes and hands back: where an input came from, and what a step of
the workflow decided (plain data: record ids and scores only, never a template)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from face_dedup.domain import Candidate, ImportItem, Outcome, candidates_from_json, candidates_to_json


@dataclass(frozen=True)
class InputRef:
    """Where an input came from. `source` is what the operator gave (a path or an object key)."""

    source: str
    application_id: str | None = None
    # What makes two submissions "the same submission": the application id when there is one,
    # otherwise the source's stable identity (e.g. its absolute path).
    identity: str | None = None

    @property
    def submission_identity(self) -> str:
        if self.application_id:
            return "app:" + self.application_id
        return "src:" + (self.identity or self.source)


@dataclass(frozen=True)
class StageResult:
    key: str
    item: ImportItem | None  # final already (rejected, or decided before); None: staged


@dataclass(frozen=True)
class StagedDecision:
    """What the search step decided; plain data, so a workflow can carry it between tasks
    (record ids and scores only, never a template)."""

    key: str
    outcome: Outcome
    candidates: tuple[Candidate, ...]
    thresholds: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "outcome": self.outcome.value,
            "candidates": json.loads(candidates_to_json(self.candidates)),
            "thresholds": self.thresholds,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> StagedDecision:
        return cls(
            str(raw["key"]),
            Outcome(raw["outcome"]),
            candidates_from_json(json.dumps(raw["candidates"])),
            dict(raw["thresholds"]),
        )

    @classmethod
    def of_item(cls, item: ImportItem) -> StagedDecision:
        return cls(item.key, item.outcome, item.candidates, {})


def content_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def rounded(measures: dict[str, float]) -> dict[str, float]:
    return {k: round(float(v), 4) for k, v in measures.items()}

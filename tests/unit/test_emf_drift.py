"""Cloud drift metrics: what adapters/emf_drift.py writes for one decided input is a CloudWatch
Embedded Metric Format line (parsed here as CloudWatch would) with the tenant as the only
dimension, the same aggregates drift.py counts locally, and nothing that names a person."""

from __future__ import annotations

import json

import pytest

from face_dedup import wiring
from face_dedup.adapters.emf_drift import NAMESPACE, EmfDriftStore
from face_dedup.domain import Candidate, ImportItem, Outcome
from face_dedup.drift import DayKey, observations


def _emf(out: str) -> dict[str, object]:
    (line,) = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
    return dict(line)


def _item(outcome: Outcome, **extra: object) -> ImportItem:
    fields: dict[str, object] = {
        "key": "k1",
        "tenant": "north",
        "source": "selfies/north/APP-Jane-Doe/x.jpg",
        "application_id": "APP-Jane-Doe",
        "content_sha256": "ab" * 32,
        "outcome": outcome,
        "created_at": "2026-12-01T10:00:00+00:00",
        "measures": {"brightness": 121.5, "sharpness": 300.0},
    }
    fields.update(extra)
    return ImportItem(**fields)  # type: ignore[arg-type]


def test_a_case_becomes_counts_and_values_per_tenant(capsys: pytest.CaptureFixture[str]) -> None:
    candidate = Candidate(record_id="r1", application_id="APP-Other", score=0.437)
    item = _item(Outcome.REVIEW, candidates=(candidate,))
    counts = {pair: 1 for pair in observations(item)}
    EmfDriftStore().add(DayKey("north", "selfie", "2026-12-01"), counts)
    line = _emf(capsys.readouterr().out)
    meta = line["_aws"]
    assert isinstance(meta, dict)
    (directive,) = meta["CloudWatchMetrics"]
    assert directive["Namespace"] == NAMESPACE == "FaceDedup/Drift"
    assert directive["Dimensions"] == [["tenant"]] and line["tenant"] == "north"
    names = {m["Name"] for m in directive["Metrics"]}
    assert names == {"outcome_review", "best_score", "quality_brightness", "quality_sharpness"}
    assert line["outcome_review"] in (1, [1.0]) and line["best_score"] in (0.42, [0.42])
    assert line["quality_brightness"] in (120.0, [120.0])  # the bin's lower edge, as locally
    text = json.dumps(line)
    assert "Jane" not in text and "APP-" not in text and "r1" not in text and "selfie" not in text


def test_a_rejection_counts_its_reason(capsys: pytest.CaptureFixture[str]) -> None:
    item = _item(Outcome.REJECTED, reason="TOO_DARK", measures={})
    EmfDriftStore().add(DayKey("north", "import", "2026-12-01"), {pair: 1 for pair in observations(item)})
    line = _emf(capsys.readouterr().out)
    assert line["outcome_rejected"] in (1, [1.0]) and line["rejected_TOO_DARK"] in (1, [1.0])


def test_every_function_that_commits_a_decision_declares_the_metrics() -> None:
    committing = {n for n, s in wiring.FUNCTIONS.items() if "commit" in s.methods(wiring.STORE)}
    assert committing == {"ingest", "complete", "record_failure"}
    assert all(wiring.FUNCTIONS[n].methods(wiring.DRIFT) == ("add",) for n in committing)

"""Drift counts in the cloud: CloudWatch metrics written as Embedded Metric Format lines to the
function's own log (Powertools Metrics), so recording them makes no API call, needs no IAM
action and no VPC endpoint. The same aggregates as drift.py counts locally, no biometric data.

One dimension, the tenant: the operations alarms (case rate, rejection rate) are per tenant,
and every further dimension multiplies the custom metrics billed (the channel split stays in
the local `face-dedup report drift`). Metric names per tenant:
- `outcome_<enrolled|review|duplicate|verified|rejected>` (Count): rates follow by metric math;
- `rejected_<REASON>` (Count);
- `best_score` (the bin's lower edge, one value per decided input; `best_score_none` counts
  inputs with no candidate at the review threshold);
- `quality_<measure>` (the bin's lower edge per analysed photo): percentiles in CloudWatch.
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

from face_dedup.drift import NO_CANDIDATE, DayKey, DriftStore

NAMESPACE = "FaceDedup/Drift"


def metric_name(metric: str, value: str) -> tuple[str, float | None]:
    """(name, value) for one (metric, bin) count: a counted category has value None."""
    if metric == "outcome":
        return f"outcome_{value}", None
    if metric == "reason":
        return f"rejected_{value}", None
    if metric == "best_score":
        return ("best_score_none", None) if value == NO_CANDIDATE else ("best_score", float(value))
    return metric.replace(".", "_"), float(value)  # quality.<measure>


class EmfDriftStore(DriftStore):
    def __init__(self, namespace: str = NAMESPACE) -> None:
        self._namespace = namespace

    def add(self, key: DayKey, counts: Mapping[tuple[str, str], int]) -> None:
        # An isolated metric set (not the handlers' shared one), flushed as one EMF line now.
        metrics = EphemeralMetrics(namespace=self._namespace)
        metrics.add_dimension(name="tenant", value=key.tenant)
        for (metric, value), count in sorted(counts.items()):
            name, number = metric_name(metric, value)
            if number is None:
                metrics.add_metric(name=name, unit=MetricUnit.Count, value=count)
            else:
                for _ in range(count):
                    metrics.add_metric(name=name, unit=MetricUnit.NoUnit, value=number)
        metrics.flush_metrics()

    def counts(
        self, *, tenant: str, first_day: str, last_day: str, channel: str | None = None
    ) -> dict[tuple[str, str], int]:
        raise NotImplementedError("cloud drift counts are read in CloudWatch, not through the service")

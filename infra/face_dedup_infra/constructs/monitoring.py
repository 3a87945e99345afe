from __future__ import annotations

from typing import Any

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_opensearchservice as opensearch
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

AT_LEAST = cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD
# Drift alarms, per tenant and UTC day, on the metrics adapters/emf_drift.py writes. Thresholds,
# not anomaly bands: a band needs weeks of history and a new registry has none, while these
# bounds say plainly what operations should look at. A day with fewer than DRIFT_MIN_DECIDED
# decisions is not judged (drift.py's minimum count too).
DRIFT_NAMESPACE = "FaceDedup/Drift"
OUTCOMES = ("enrolled", "review", "duplicate", "verified", "rejected")
CASE_RATE_PERCENT = 10  # cases (review + duplicate) per decision; ~1% expected at target FPIR 0.01
REJECTION_RATE_PERCENT = 25  # rejected photos per decision (a dark camera, a new site)
DRIFT_MIN_DECIDED = 100


class Monitoring(Construct):
    """Alarms on what loses work or blocks it (dead letters, failed executions, function
    errors and throttles, the cluster) and one dashboard. Every alarm notifies the operations
    topic (separate from officers' case topic), when it fires and when it clears."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        dead_letters: sqs.IQueue,
        notification_dead_letters: sqs.IQueue,
        queue: sqs.IQueue,
        state_machine: sfn.StateMachine,
        functions: list[lambda_.Function],
        domain: opensearch.Domain,
        topic: sns.ITopic,
        reconcile: object | None = None,
        tenants: tuple[str, ...] = (),
    ) -> None:
        super().__init__(scope, construct_id)
        self.alarms: list[cloudwatch.Alarm] = []

        def alarm(
            name: str,
            metric: cloudwatch.IMetric,
            description: str,
            threshold: float = 1,
            comparison: cloudwatch.ComparisonOperator = AT_LEAST,
            missing: cloudwatch.TreatMissingData = cloudwatch.TreatMissingData.NOT_BREACHING,
        ) -> None:
            created = cloudwatch.Alarm(
                self,
                name,
                metric=metric,
                threshold=threshold,
                evaluation_periods=1,
                comparison_operator=comparison,
                treat_missing_data=missing,
                alarm_description=description,
            )
            created.add_alarm_action(actions.SnsAction(topic))
            created.add_ok_action(actions.SnsAction(topic))
            self.alarms.append(created)

        alarm(
            "DeadLetters",
            dead_letters.metric_approximate_number_of_messages_visible(period=Duration.minutes(1)),
            "uploads that failed five times are waiting in the dead-letter queue",
        )
        alarm(
            "NotificationDeadLetters",
            notification_dead_letters.metric_approximate_number_of_messages_visible(
                period=Duration.minutes(5)
            ),
            "case notifications that could not be sent to officers are waiting in their dead-letter queue",
        )
        alarm(
            "DeadLetterAge",
            dead_letters.metric_approximate_age_of_oldest_message(period=Duration.minutes(5)),
            "a dead-lettered upload is older than 3 days (the queue keeps them 14): redrive it",
            threshold=3 * 24 * 3600,
        )
        alarm(
            "QueueAge",
            queue.metric_approximate_age_of_oldest_message(period=Duration.minutes(5)),
            "uploads wait more than an hour",
            threshold=3600,
        )
        alarm(
            "FailedExecutions",
            state_machine.metric_failed(period=Duration.minutes(5)),
            "de-duplication workflows failed: transient (redrive them) or recorded as rejected",
        )
        alarm(
            "TimedOutExecutions",
            state_machine.metric_timed_out(period=Duration.minutes(5)),
            "de-duplication workflows timed out (redrive them)",
        )
        for function in functions:
            alarm(
                f"{function.node.id}Errors",
                function.metric_errors(period=Duration.minutes(5)),
                f"{function.node.id} function errors",
            )
            alarm(
                f"{function.node.id}Throttles",
                function.metric_throttles(period=Duration.minutes(5)),
                f"{function.node.id} function throttled (its concurrency bound is reached)",
                threshold=10,
            )
        alarm(
            "ClusterRed",
            domain.metric_cluster_status_red(period=Duration.minutes(1)),
            "the index cluster is red",
        )
        alarm(
            "ClusterYellow",
            domain.metric_cluster_status_yellow(period=Duration.minutes(5)),
            "the index cluster is yellow (replicas unassigned)",
        )
        alarm(
            "JvmPressure",
            domain.metric_jvm_memory_pressure(period=Duration.minutes(5), statistic="Maximum"),
            "index JVM memory pressure above 80% (k-NN graphs need more memory: scale the data nodes)",
            threshold=80,
        )
        alarm(
            "FreeStorage",
            domain.metric_free_storage_space(period=Duration.minutes(5), statistic="Minimum"),
            "index free storage below 20 GiB on a node",
            threshold=20 * 1024,
            comparison=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
        )
        alarm(
            "IndexWriteBlocked",
            domain.metric_cluster_index_writes_blocked(period=Duration.minutes(1)),
            "the index blocks writes",
        )
        alarm(
            "AuditRewritten",
            cloudwatch.Metric(
                namespace="FaceDedup",
                metric_name="AuditEntriesRewritten",
                dimensions_map={"service": "audit-archive"},
                statistic="Sum",
                period=Duration.minutes(5),
            ),
            "an audit entry was rewritten or removed in the table (compare it with the archive)",
        )
        alarm(
            "IndexRepaired",
            cloudwatch.MathExpression(
                expression="added + removed",
                using_metrics={
                    name: cloudwatch.Metric(
                        namespace="FaceDedup",
                        metric_name=metric,
                        dimensions_map={"service": "reconcile"},
                        statistic="Sum",
                        period=Duration.days(1),
                    )
                    for name, metric in (("added", "IndexEntriesAdded"), ("removed", "IndexOrphansRemoved"))
                },
                period=Duration.days(1),
            ),
            "the nightly reconcile repaired the index (an interrupted write happened: look why)",
        )

        rates = [self._drift_alarms(tenant, alarm) for tenant in tenants]
        dashboard = cloudwatch.Dashboard(self, "Dashboard", dashboard_name=None)
        dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="uploads queued", left=[queue.metric_approximate_number_of_messages_visible()]
            ),
            cloudwatch.GraphWidget(
                title="dead letters", left=[dead_letters.metric_approximate_number_of_messages_visible()]
            ),
            cloudwatch.GraphWidget(
                title="workflow", left=[state_machine.metric_succeeded(), state_machine.metric_failed()]
            ),
            cloudwatch.GraphWidget(title="function errors", left=[f.metric_errors() for f in functions]),
            cloudwatch.GraphWidget(
                title="function throttles", left=[f.metric_throttles() for f in functions]
            ),
            cloudwatch.GraphWidget(
                title="index",
                left=[domain.metric_jvm_memory_pressure()],
                right=[domain.metric_free_storage_space()],
            ),
            cloudwatch.GraphWidget(title="function duration", left=[f.metric_duration() for f in functions]),
            cloudwatch.AlarmStatusWidget(title="alarms", alarms=self.alarms),
            *(
                cloudwatch.GraphWidget(title=f"drift: {tenant} (% of decisions per day)", left=list(pair))
                for tenant, pair in zip(tenants, rates, strict=True)
            ),
        )

    @staticmethod
    def _drift_alarms(tenant: str, alarm: Any) -> tuple[cloudwatch.MathExpression, cloudwatch.MathExpression]:
        """Case rate and rejection rate of one tenant's day, each with its alarm."""
        counts = {
            outcome: cloudwatch.Metric(
                namespace=DRIFT_NAMESPACE,
                metric_name=f"outcome_{outcome}",
                dimensions_map={"tenant": tenant},
                statistic="Sum",
                period=Duration.days(1),
            )
            for outcome in OUTCOMES
        }
        decided = " + ".join(f"FILL({o}, 0)" for o in OUTCOMES)

        def rate(label: str, numerator: str) -> cloudwatch.MathExpression:
            return cloudwatch.MathExpression(
                expression=f"IF(({decided}) >= {DRIFT_MIN_DECIDED}, 100 * ({numerator}) / ({decided}), 0)",
                using_metrics=dict(counts),
                label=label,
                period=Duration.days(1),
            )

        cases = rate("case rate", "FILL(review, 0) + FILL(duplicate, 0)")
        rejections = rate("rejection rate", "FILL(rejected, 0)")
        alarm(
            f"DriftCaseRate-{tenant}",
            cases,
            f"tenant {tenant}: over {CASE_RATE_PERCENT}% of a day's decisions opened a case",
            threshold=CASE_RATE_PERCENT,
        )
        alarm(
            f"DriftRejectionRate-{tenant}",
            rejections,
            f"tenant {tenant}: over {REJECTION_RATE_PERCENT}% of a day's photos were rejected",
            threshold=REJECTION_RATE_PERCENT,
        )
        return cases, rejections

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_opensearchservice as opensearch
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct


class Monitoring(Construct):
    """Alarms on what loses work or blocks it (dead letters, failed executions, function
    errors, a red cluster) and one dashboard for operators."""

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
    ) -> None:
        super().__init__(scope, construct_id)
        self.alarms: list[cloudwatch.Alarm] = []

        def alarm(name: str, metric: cloudwatch.IMetric, description: str, threshold: float = 1) -> None:
            self.alarms.append(
                cloudwatch.Alarm(
                    self,
                    name,
                    metric=metric,
                    threshold=threshold,
                    evaluation_periods=1,
                    comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                    treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
                    alarm_description=description,
                )
            )

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
            "QueueAge",
            queue.metric_approximate_age_of_oldest_message(period=Duration.minutes(5)),
            "uploads wait more than an hour",
            threshold=3600,
        )
        alarm(
            "FailedExecutions",
            state_machine.metric_failed(period=Duration.minutes(5)),
            "de-duplication workflows failed (each recorded as rejected with its reason)",
        )
        for function in functions:
            alarm(
                f"{function.node.id}Errors",
                function.metric_errors(period=Duration.minutes(5)),
                f"{function.node.id} function errors",
            )
        alarm(
            "ClusterRed",
            domain.metric_cluster_status_red(period=Duration.minutes(1)),
            "the index cluster is red",
        )

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
            cloudwatch.GraphWidget(title="function duration", left=[f.metric_duration() for f in functions]),
            cloudwatch.AlarmStatusWidget(title="alarms", alarms=self.alarms),
        )

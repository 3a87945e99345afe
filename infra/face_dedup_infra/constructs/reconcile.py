from __future__ import annotations

import json

from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_scheduler as scheduler
from constructs import Construct


class Reconcile(Construct):
    """Nightly (EventBridge Scheduler, 03:00 UTC): the reconcile function makes the index hold
    exactly the store's templates for each tenant and reports what it repaired (metrics
    IndexEntriesAdded / IndexOrphansRemoved, alarmed in Monitoring). Run it by hand with
    `aws lambda invoke --function-name <ReconcileFunction> --payload '{"tenants":["t"]}' out.json`."""

    def __init__(
        self, scope: Construct, construct_id: str, *, function: lambda_.IFunction, tenants: tuple[str, ...]
    ) -> None:
        super().__init__(scope, construct_id)
        self.function = function
        role = iam.Role(self, "SchedulerRole", assumed_by=iam.ServicePrincipal("scheduler.amazonaws.com"))
        function.grant_invoke(role)
        self.schedule = scheduler.CfnSchedule(
            self,
            "Nightly",
            schedule_expression="cron(0 3 * * ? *)",
            flexible_time_window=scheduler.CfnSchedule.FlexibleTimeWindowProperty(
                mode="FLEXIBLE", maximum_window_in_minutes=60
            ),
            target=scheduler.CfnSchedule.TargetProperty(
                arn=function.function_arn,
                role_arn=role.role_arn,
                input=json.dumps({"tenants": list(tenants)}),
                retry_policy=scheduler.CfnSchedule.RetryPolicyProperty(
                    maximum_event_age_in_seconds=3600, maximum_retry_attempts=3
                ),
            ),
        )

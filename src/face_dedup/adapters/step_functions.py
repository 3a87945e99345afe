"""Step Functions adapter of the workflow starter: one execution per staged input, named by
its idempotency key, so a repeated upload event starts nothing new."""

from __future__ import annotations

import json
from typing import Any

from face_dedup.ports import WorkflowStarter


class StepFunctionsStarter(WorkflowStarter):
    def __init__(self, client: Any, state_machine_arn: str) -> None:
        """`client` is a boto3 Step Functions client."""
        self._client = client
        self._arn = state_machine_arn

    def start(self, name: str, payload: dict[str, Any]) -> str:
        try:
            response = self._client.start_execution(
                stateMachineArn=self._arn, name=name, input=json.dumps(payload)
            )
            return str(response["executionArn"])
        except self._client.exceptions.ExecutionAlreadyExists:
            # The same upload event again: its workflow already runs (or ran). Nothing to do.
            return f"{self._arn.replace(':stateMachine:', ':execution:')}:{name}"

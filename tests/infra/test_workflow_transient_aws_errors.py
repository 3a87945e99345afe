"""A throttled, overloaded or unreachable AWS service is a transient cause: the workflow task
raises `TransientError` (retried by the state machine, then left failed at its task for a
redrive), never `PermanentError` (which records the applicant's upload as rejected).

The errors come from a real botocore client (its Stubber answers in place of the service),
exactly as they reach the handler once the SDK's own retries are spent."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError
from botocore.stub import Stubber

from face_dedup.errors import TransientError


def _dynamodb() -> Any:
    return boto3.client(
        "dynamodb",
        region_name="eu-west-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"max_attempts": 1}),
    )


def _task(call: Callable[[], Any]) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    from functions.workflow.handler import classified

    def task(event: dict[str, Any], context: Any) -> dict[str, Any]:
        call()
        return {}

    return classified(task)


def _failing_get(code: str, status: int, **extra: Any) -> Callable[[], Any]:
    client = _dynamodb()
    stubber = Stubber(client)
    stubber.add_client_error(
        "get_item", service_error_code=code, http_status_code=status, service_error_meta=extra
    )
    stubber.activate()
    return lambda: client.get_item(TableName="staged", Key={"key": {"S": "k"}})


CHECK = {
    "ConditionCheck": {
        "TableName": "staged",
        "Key": {"key": {"S": "k"}},
        "ConditionExpression": "attribute_exists(#k)",
        "ExpressionAttributeNames": {"#k": "key"},
    }
}


def _cancelled(*reasons: str) -> Callable[[], Any]:
    client = _dynamodb()
    stubber = Stubber(client)
    stubber.add_client_error(
        "transact_write_items",
        service_error_code="TransactionCanceledException",
        http_status_code=400,
        response_meta={},
    )
    stubber.activate()

    def call() -> Any:
        try:
            return client.transact_write_items(TransactItems=[CHECK])
        except client.exceptions.TransactionCanceledException as exc:
            exc.response["CancellationReasons"] = [{"Code": r} for r in reasons]
            raise

    return call


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("ProvisionedThroughputExceededException", 400),
        ("ThrottlingException", 400),
        ("RequestLimitExceeded", 400),
        ("InternalServerError", 500),
        ("ServiceUnavailable", 503),
        ("SomethingNewAndBroken", 502),
    ],
)
def test_throttling_and_server_errors_are_retried_not_rejected(code: str, status: int) -> None:
    with pytest.raises(TransientError):
        _task(_failing_get(code, status))({}, None)


@pytest.mark.parametrize(
    "error",
    [
        EndpointConnectionError(endpoint_url="https://dynamodb.eu-west-1.amazonaws.com"),
        ConnectTimeoutError(endpoint_url="https://dynamodb.eu-west-1.amazonaws.com"),
        ReadTimeoutError(endpoint_url="https://dynamodb.eu-west-1.amazonaws.com"),
    ],
)
def test_an_unreachable_service_is_retried_not_rejected(error: Exception) -> None:
    def call() -> None:
        raise error

    with pytest.raises(TransientError):
        _task(call)({}, None)


def test_a_transaction_cancelled_by_a_conflict_is_retried() -> None:
    with pytest.raises(TransientError):
        _task(_cancelled("None", "TransactionConflict"))({}, None)


def test_a_real_fault_is_still_permanent() -> None:
    from functions.workflow.handler import PermanentError

    with pytest.raises(PermanentError, match=r"^ClientError$"):
        _task(_failing_get("ValidationException", 400))({}, None)
    with pytest.raises(PermanentError, match=r"^ClientError$"):
        _task(_failing_get("AccessDeniedException", 400))({}, None)
    with pytest.raises(PermanentError, match=r"^TransactionCanceledException$"):
        _task(_cancelled("ConditionalCheckFailed"))({}, None)

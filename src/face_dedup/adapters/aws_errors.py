"""Which AWS SDK errors are transient: throttling, a service's 5xx, a dropped or timed-out
connection. The workflow retries those (as `TransientError`) and never records them as a
rejection; the bootstrap's adaptive retries have already been spent when one reaches here.

The error codes follow botocore's own retry policy (botocore/retries/standard.py: throttled
and transient codes) plus DynamoDB's transaction cancellations whose only reasons are
conflicts or throttling.
"""

from __future__ import annotations

from typing import Any

THROTTLED = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
        "KMSThrottlingException",
        "KMS.KMSThrottlingException",
    }
)
TRANSIENT = frozenset(
    {
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "InternalServerError",
        "InternalFailure",
        "ServiceUnavailable",
        "ServiceUnavailableException",
    }
)
# DynamoDB cancels a whole transaction when another one touches the same item at the same
# time, or an item's partition is throttled: retrying later succeeds.
RETRYABLE_CANCELLATIONS = frozenset(
    {"None", "TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"}
)


def is_transient(exc: BaseException) -> bool:
    """True for an AWS SDK error that a later retry should get past."""
    from botocore import exceptions

    if isinstance(exc, exceptions.ConnectionError | exceptions.HTTPClientError):
        return True  # endpoint unreachable, connect or read timeout, connection closed
    if not isinstance(exc, exceptions.ClientError):
        return False
    response: dict[str, Any] = exc.response or {}
    code = str(response.get("Error", {}).get("Code", ""))
    if code in THROTTLED or code in TRANSIENT:
        return True
    if code == "TransactionCanceledException":
        reasons = {str(r.get("Code", "None")) for r in response.get("CancellationReasons", [])}
        return bool(reasons - {"None"}) and reasons <= RETRYABLE_CANCELLATIONS
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return isinstance(status, int) and status >= 500

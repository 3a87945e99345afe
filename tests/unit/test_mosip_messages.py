"""MOSIP ABIS request validation: each malformed request gets its own failure reason."""

from __future__ import annotations

import json
from typing import Any

import pytest

from face_dedup.mosip.messages import AbisFailure, FailureReason, failure, parse_request, success
from tests.support.mosip import request

R = FailureReason


def reason_of(body: dict[str, Any] | str | bytes) -> FailureReason:
    raw = json.dumps(body) if isinstance(body, dict) else body
    with pytest.raises(AbisFailure) as caught:
        parse_request(raw)
    return caught.value.reason


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("not json", R.INVALID_REQUEST_STRUCTURE),
        (b"\xff\xfe", R.INVALID_REQUEST_STRUCTURE),
        ("[1, 2]", R.INVALID_REQUEST_STRUCTURE),
        ('{"id": ' + "9" * 5000 + "}", R.INVALID_REQUEST_STRUCTURE),
        ("[" * 100_000 + "]" * 100_000, R.INVALID_REQUEST_STRUCTURE),
        (request("ping") | {"id": "mosip.abis.reboot"}, R.INVALID_ID),
        (request("ping") | {"id": None}, R.INVALID_ID),
        (request("ping") | {"version": "1.0"}, R.INVALID_VERSION),
        ({k: v for k, v in request("ping").items() if k != "version"}, R.INVALID_VERSION),
        (request("ping") | {"requestId": ""}, R.MISSING_REQUEST_ID),
        (request("ping") | {"requestId": "a b/../"}, R.INVALID_REQUEST_STRUCTURE),
        (request("ping") | {"requesttime": None}, R.MISSING_REQUEST_TIME),
        (request("ping") | {"requesttime": "29/03/2020 07:01"}, R.INVALID_REQUEST_TIME_FORMAT),
        (request("ping") | {"requesttime": "2020-02-30T07:01:24.692Z"}, R.INVALID_REQUEST_TIME_FORMAT),
        (request("ping") | {"requesttime": "2020-03-29T07:01:24+02:00"}, R.INVALID_REQUEST_TIME_FORMAT),
        (request("insert", referenceURL="https://x/y"), R.MISSING_REFERENCE_ID),
        (request("insert", referenceId="r1"), R.MISSING_REFERENCE_URL),
        (
            request("insert", referenceId="r1", referenceURL="https://x", extra="1"),
            R.INVALID_REQUEST_STRUCTURE,
        ),
        (request("insert", referenceId="../etc", referenceURL="https://x"), R.INVALID_REQUEST_STRUCTURE),
        (request("insert", referenceId=7, referenceURL="https://x"), R.INVALID_REQUEST_STRUCTURE),
        # never trimmed into another reference's id (" r1" would have erased r1)
        (request("delete", referenceId=" r1 "), R.INVALID_REQUEST_STRUCTURE),
        (request("insert", referenceId="r1\n", referenceURL="https://x"), R.INVALID_REQUEST_STRUCTURE),
        (request("identify", referenceId="\tr1"), R.INVALID_REQUEST_STRUCTURE),
        (request("delete", referenceId="   "), R.MISSING_REFERENCE_ID),
        (request("delete"), R.MISSING_REFERENCE_ID),
        (request("identify", referenceId="", referenceURL=""), R.MISSING_REFERENCE_ID),
        (request("identify", referenceId="r1", gallery={"referenceIds": "r2"}), R.INVALID_REQUEST_STRUCTURE),
        (
            request("identify", referenceId="r1", gallery={"referenceIds": [{"id": "r2"}]}),
            R.INVALID_REQUEST_STRUCTURE,
        ),
        (request("identify", referenceId="r1", flags={"maxResults": "ten"}), R.INVALID_REQUEST_STRUCTURE),
        (request("identify", referenceId="r1", flags={"maxResults": "0"}), R.INVALID_REQUEST_STRUCTURE),
        (request("identify", referenceId="r1", flags=[1]), R.INVALID_REQUEST_STRUCTURE),
    ],
)
def test_each_malformed_request_has_its_reason(body: Any, reason: FailureReason) -> None:
    assert reason_of(body) is reason


def test_the_failure_carries_what_the_reply_needs_to_be_matched() -> None:
    body = request("insert", referenceId="r1")
    with pytest.raises(AbisFailure) as caught:
        parse_request(json.dumps(body))
    assert caught.value.op_id == "mosip.abis.insert" and caught.value.request_id == body["requestId"]
    reply = failure(caught.value.op_id, caught.value.request_id, caught.value.reason)
    assert reply["returnValue"] == "2" and reply["failureReason"] == "8"
    assert reply["requestId"] == body["requestId"]


def test_valid_requests_parse() -> None:
    identify = parse_request(
        json.dumps(
            request(
                "identify",
                referenceId="a-1",
                referenceURL="",
                flags={"maxResults": "10", "targetFPIR": 30, "flag1": "v"},
                gallery={"referenceIds": [{"referenceId": "b-2"}, {"referenceId": "b-2"}]},
            )
            | {"requesttime": "2020-03-29T07:01:24Z"}
        )
    )
    assert identify.reference_id == "a-1" and identify.gallery == ("b-2",)
    assert identify.flags["maxResults"] == "10" and identify.flags["targetFPIR"] == "30"
    assert parse_request(json.dumps(request("identify", referenceId="a", gallery={}))).gallery is None
    ping = parse_request(json.dumps(request("ping")))
    reply = success(ping, jobscount="0")
    assert all(isinstance(v, str) for v in reply.values())
    assert reply["responsetime"].endswith("Z") and len(reply["responsetime"]) == 24

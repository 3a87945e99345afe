"""The Amazon MQ side of the cloud ABIS that needs no broker: endpoints and the broker secret."""

from __future__ import annotations

import json

import pytest

from face_dedup.errors import ConfigError
from face_dedup.mosip.amazon_mq import broker_hosts, credentials_from_secret


def test_active_standby_endpoints_are_both_tried_with_tls() -> None:
    # what the stack puts in FACE_DEDUP_ABIS_BROKER_URL: Amazon MQ's STOMP endpoints, joined
    url = "stomp+ssl://b-1-1.mq.eu-west-1.amazonaws.com:61614,stomp+ssl://b-1-2.mq.eu-west-1.amazonaws.com:61614"
    hosts, tls = broker_hosts(url)
    assert hosts == [("b-1-1.mq.eu-west-1.amazonaws.com", 61614), ("b-1-2.mq.eu-west-1.amazonaws.com", 61614)]
    assert tls
    assert broker_hosts("stomp://127.0.0.1:61613") == ([("127.0.0.1", 61613)], False)


@pytest.mark.parametrize(
    "url",
    ["", "ssl://b:61617", "stomp+ssl://b", "stomp+ssl://b:61614,stomp://c:61613", "http://b:80"],
)
def test_a_broker_url_that_is_not_stomp_is_refused(url: str) -> None:
    with pytest.raises(ConfigError):
        broker_hosts(url)


def test_the_broker_secret_is_lambdas_basic_auth_json() -> None:
    creds = credentials_from_secret(json.dumps({"username": "face-dedup-abis", "password": "p" * 32}))
    assert (creds.username, creds.password) == ("face-dedup-abis", "p" * 32)


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "not json",
        "[]",
        '{"username": "u"}',
        '{"username": "", "password": "p"}',
        '{"username": 1, "password": "p"}',
    ],
)
def test_a_broken_broker_secret_is_a_config_error_without_its_value(raw: str) -> None:
    with pytest.raises(ConfigError) as caught:
        credentials_from_secret(raw)
    assert raw not in str(caught.value) or not raw

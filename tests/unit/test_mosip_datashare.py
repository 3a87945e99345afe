"""The datashare client against a real HTTP server on loopback, and MOSIP 1.2 decryption."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from face_dedup.mosip.crypto import PayloadKey, encrypt_for
from face_dedup.mosip.datashare import DatashareClient, DatashareConfig, DatashareError
from face_dedup.mosip.messages import FailureReason
from tests.support.mosip import Datashare, datashare_server


@pytest.fixture
def share() -> Iterator[Datashare]:
    with datashare_server() as running:
        yield running


def client(**config: object) -> DatashareClient:
    return DatashareClient(DatashareConfig(allow_http=True, **config))  # type: ignore[arg-type]


def reason(c: DatashareClient, url: str) -> FailureReason:
    with pytest.raises(DatashareError) as caught:
        c.fetch(url)
    return caught.value.reason


def test_fetch_sends_the_token_as_the_authorization_cookie(share: Datashare) -> None:
    url = share.share(b"<BIR/>")
    assert client(token="eyJ.token").fetch(url) == b"<BIR/>"
    assert share.cookies == ["Authorization=eyJ.token"]


def test_expired_share_is_failure_17_other_errors_7(share: Datashare) -> None:
    expired = {"errors": [{"errorCode": "DAT-SER-006", "message": "Data share usage expired"}]}
    missing = {"errors": [{"errorCode": "DAT-SER-006", "message": "Data share not found"}]}
    denied = {"errors": [{"errorCode": "KER-ATH-401", "message": "Authentication Failed"}]}
    c = client()
    assert reason(c, share.share(json.dumps(expired).encode())) is FailureReason.DATASHARE_URL_EXPIRED
    assert reason(c, share.share(json.dumps(missing).encode())) is FailureReason.UNABLE_TO_FETCH_BIOMETRICS
    assert reason(c, share.share(json.dumps(denied).encode())) is FailureReason.UNABLE_TO_FETCH_BIOMETRICS
    assert reason(c, share.share(b"gone", status=410)) is FailureReason.DATASHARE_URL_EXPIRED
    assert reason(c, share.url("nothing-here")) is FailureReason.UNABLE_TO_FETCH_BIOMETRICS
    assert reason(c, share.share(b"")) is FailureReason.UNABLE_TO_FETCH_BIOMETRICS


def test_size_limit_timeout_and_url_rules(share: Datashare) -> None:
    assert (
        reason(client(max_bytes=1000), share.share(b"x" * 1001)) is FailureReason.UNABLE_TO_FETCH_BIOMETRICS
    )
    assert client(max_bytes=1000).fetch(share.share(b"x" * 1000)) == b"x" * 1000
    share.delay_s = 1.0
    with pytest.raises(DatashareError, match="timed out"):
        client(timeout_s=0.2).fetch(share.share(b"late"))
    share.delay_s = 0
    only = client(allowed_hosts=("datashare.mosip.example",))
    assert reason(only, share.share(b"x")) is FailureReason.UNABLE_TO_FETCH_BIOMETRICS
    assert client(allowed_hosts=("127.0.0.1",)).fetch(share.share(b"x")) == b"x"
    strict = DatashareClient(DatashareConfig())
    for url in (share.share(b"x"), "file:///etc/passwd", "https://user:pw@example.org/x", "not a url"):
        assert reason(strict, url) is FailureReason.UNABLE_TO_FETCH_BIOMETRICS


def test_mosip_1_2_payload_decrypts_with_our_key_only(share: Datashare) -> None:
    ours = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    theirs = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    payload = encrypt_for(ours.public_key(), b"<BIR>secret</BIR>")
    c = DatashareClient(DatashareConfig(allow_http=True), decrypt=PayloadKey(ours).decrypt)
    assert c.fetch(share.share(payload)) == b"<BIR>secret</BIR>"
    wrong = DatashareClient(DatashareConfig(allow_http=True), decrypt=PayloadKey(theirs).decrypt)
    assert reason(wrong, share.share(payload)) is FailureReason.UNABLE_TO_FETCH_BIOMETRICS
    tampered = bytearray(payload)
    tampered[-5] = ord("A") if tampered[-5] != ord("A") else ord("B")
    assert reason(c, share.share(bytes(tampered))) is FailureReason.UNABLE_TO_FETCH_BIOMETRICS
    assert reason(c, share.share(b"<BIR>plain</BIR>")) is FailureReason.UNABLE_TO_FETCH_BIOMETRICS


def test_token_from_the_auth_manager_renewed_once_refused(share: Datashare) -> None:
    share.required_token = "tok-1"
    auth = {"authmanager_url": f"http://127.0.0.1:{share.port}/v1/authmanager/authenticate/clientidsecretkey"}
    c = client(client_id="abis", secret_key="s3cret", **auth)
    url = share.share(b"<BIR/>")
    assert c.fetch(url) == b"<BIR/>" and share.issued == ["tok-1"]
    assert c.fetch(url) == b"<BIR/>" and share.issued == ["tok-1"]  # kept, not asked for again
    share.required_token = "tok-2"  # the token expired: the datashare refuses it
    assert c.fetch(url) == b"<BIR/>" and share.issued == ["tok-1", "tok-2"]
    wrong = client(client_id="abis", secret_key="guess", **auth)
    with pytest.raises(DatashareError, match="auth manager refused"):
        wrong.fetch(url)

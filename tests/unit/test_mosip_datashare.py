"""The datashare client against a real HTTP server on loopback, and MOSIP 1.2 decryption."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from face_dedup.errors import ConfigError
from face_dedup.mosip.config import AbisConfig
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


def test_token_refused_in_a_200_body_is_renewed_too(share: Datashare) -> None:
    """MOSIP sends functional failures with HTTP 200: an expired token as KER-ATH-401 in the body
    must be renewed like an HTTP 401, or every insert fails (7) once the first token expires."""
    share.required_token, share.refuse_with_200 = "tok-1", True
    auth = {"authmanager_url": f"http://127.0.0.1:{share.port}/v1/authmanager/authenticate/clientidsecretkey"}
    c = client(client_id="abis", secret_key="s3cret", **auth)
    url = share.share(b"<BIR/>")
    assert c.fetch(url) == b"<BIR/>" and share.issued == ["tok-1"]
    share.required_token = "tok-2"  # expired
    assert c.fetch(url) == b"<BIR/>" and share.issued == ["tok-1", "tok-2"]
    share.required_token = "tok-3"
    stuck = client(token="tok-2")  # a static token cannot be renewed: failure 7, not a loop
    assert reason(stuck, url) is FailureReason.UNABLE_TO_FETCH_BIOMETRICS


@contextmanager
def trickling_share(total: int, every_s: float) -> Iterator[tuple[str, list[int]]]:
    """A datashare that sends its body one byte per `every_s`: each read is quick, the whole slow."""
    sent = [0]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(total))
            self.end_headers()
            with suppress(OSError):
                for _ in range(total):
                    self.wfile.write(b"<")
                    self.wfile.flush()
                    sent[0] += 1
                    threading.Event().wait(every_s)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/share", sent
    finally:
        server.shutdown()
        server.server_close()


def test_a_trickling_share_is_cut_off_by_the_deadline_on_the_whole_body() -> None:
    """Each byte arrives well within the read timeout; the body as a whole would take 100 s and
    hold every request queued behind it. The fetch gives up with failure 7 long before."""
    with trickling_share(total=1000, every_s=0.1) as (url, sent):
        with pytest.raises(DatashareError, match="timed out") as caught:
            client(timeout_s=1.0).fetch(url)
        assert caught.value.reason is FailureReason.UNABLE_TO_FETCH_BIOMETRICS
        assert sent[0] < 1000  # cut off, not read to the end


def test_a_token_is_only_configured_with_the_hosts_it_may_go_to() -> None:
    """The token is sent to whatever host a referenceURL (from the message) names: without
    DATASHARE_HOSTS, anyone able to queue an insert naming their own host would receive it."""
    auth = {"FACE_DEDUP_ABIS_AUTHMANAGER_URL": "https://mosip.example/v1/authmanager/authenticate"}
    for env in (auth, {"FACE_DEDUP_ABIS_DATASHARE_TOKEN": "eyJ.token"}):
        with pytest.raises(ConfigError, match="DATASHARE_HOSTS"):
            AbisConfig.load(env)
        hosts = {"FACE_DEDUP_ABIS_DATASHARE_HOSTS": "datashare.mosip.example"}
        assert AbisConfig.load(env | hosts).datashare.allowed_hosts == ("datashare.mosip.example",)
    assert AbisConfig.load({}).datashare.allowed_hosts == ()  # no token: nothing to leak


def test_a_share_trickling_its_headers_is_cut_off_too() -> None:
    """The headers come before any body, so a deadline checked while reading the body does not
    see them: the connection itself is shut when the time is up."""
    listener = socket.create_server(("127.0.0.1", 0))
    sent = [0]

    def trickle() -> None:
        with suppress(OSError):
            conn, _ = listener.accept()
            with conn:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 200 OK\r\n")
                while sent[0] < 1000:  # 100 s of one header line that never ends
                    conn.sendall(b"X")
                    sent[0] += 1
                    threading.Event().wait(0.1)

    threading.Thread(target=trickle, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/share"
        with pytest.raises(DatashareError, match="timed out") as caught:
            client(timeout_s=1.0).fetch(url)
        assert caught.value.reason is FailureReason.UNABLE_TO_FETCH_BIOMETRICS
        assert sent[0] < 1000
    finally:
        listener.close()

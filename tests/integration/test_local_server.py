"""`face-dedup serve` over real sockets (cheroot): authentication before the body, size limits,
timeouts, bounded JSON depth, security headers, denied requests audited, the users file checked
and a non-loopback bind refused."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from face_dedup.service import DedupService
from face_dedup_api.app import Dependencies, configure
from face_dedup_api.auth import InvalidUsersFile, LocalUsers, Unauthorized, parse_users
from face_dedup_api.images import ImageSigner
from face_dedup_api.local_server import (
    MAX_BODY,
    LocalServer,
    RefusedBind,
    headers_complete,
    json_depth,
    serve,
)
from tests.support.review_api import queries_of

ANN = "t-ann-0123456789"
AL = "t-al-0123456789"
OLD = "t-old-0123456789"


def user(name: str, role: str, token: str, tenant: str = "tenant-a", **extra: Any) -> dict[str, Any]:
    return {"name": name, "role": role, "tenant": tenant, "token_sha256": LocalUsers.digest(token), **extra}


@pytest.fixture
def users_file(tmp_path: Path) -> Path:
    path = tmp_path / "users.json"
    expired = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    path.write_text(
        json.dumps(
            {
                "users": [
                    user("ann", "officer", ANN),
                    user("al", "auditor", AL),
                    user("old", "officer", OLD, expires_at=expired),
                ]
            }
        )
    )
    return path


@pytest.fixture
def server(service: DedupService, users_file: Path) -> Iterator[LocalServer]:
    configure(
        Dependencies(
            service=service.for_tenant("tenant-a"),
            queries=queries_of(service.for_tenant("tenant-a")),
            signer=ImageSigner(b"k", ttl_seconds=60),
        )
    )
    running = serve(LocalUsers.load(users_file), "127.0.0.1", 0, timeout=2, threads=4)
    running.start_background()
    yield running
    running.shutdown()
    running.server_close()


def request(
    server: LocalServer, method: str, path: str, token: str | None = None, body: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=30)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, data


def raw(server: LocalServer, payload: bytes, timeout: float = 30) -> bytes:
    """Send bytes, read until the server closes (or answers and closes)."""
    with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=timeout) as sock:
        sock.sendall(payload)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def denials(service: DedupService) -> list[dict[str, Any]]:
    return [
        {"actor": e.actor, **e.details}
        for e in service.store.audit_events(tenant=None)
        if e.action == "request.denied"
    ]


def test_a_huge_unauthenticated_body_is_refused_before_it_is_read(
    server: LocalServer, service: DedupService
) -> None:
    # Headers claim 300 MB; none of it is sent. The answer must come anyway: 401, not 413 or 422.
    head = (
        b"POST /cases/x/decision HTTP/1.1\r\nHost: local\r\nContent-Type: application/json\r\n"
        b"Content-Length: 314572800\r\n\r\n"
    )
    answer = raw(server, head)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert b"not signed in" in answer and b"nosniff" in answer.lower()
    assert any(d["status"] == 401 and d["path"] == "/cases/x/decision" for d in denials(service))


def test_body_limits_after_authentication(server: LocalServer) -> None:
    big = json.dumps({"decision": "cannot_tell", "comment": "x" * (MAX_BODY + 10)}).encode()
    status, _, body = request(server, "POST", "/cases/x/decision", ANN, big)
    assert status == 413 and b"over" in body
    head = (
        b"POST /cases/x/decision HTTP/1.1\r\nHost: local\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + ANN.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"x" * 32768
    chunks = b"".join(b"%x\r\n" % len(chunk) + chunk + b"\r\n" for _ in range(3)) + b"0\r\n\r\n"
    assert raw(server, head + chunks).startswith(b"HTTP/1.1 413")


def test_bad_framing_and_deep_json_get_an_answer(server: LocalServer) -> None:
    answer = raw(
        server,
        b"POST /cases/x/decision HTTP/1.1\r\nHost: local\r\nAuthorization: Bearer "
        + ANN.encode()
        + b"\r\nContent-Length: banana\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 400"), answer[:100]
    deep = b"[" * 5000 + b"]" * 5000
    status, _, body = request(server, "POST", "/cases/x/decision", ANN, deep)
    assert status == 400 and b"nested deeper" in body
    assert json_depth({"a": [[[{}]]]}) == 5
    status, _, body = request(server, "POST", "/cases/x/decision", ANN, b"{not json")
    assert status == 400 and b"not valid JSON" in body


def test_idle_connections_time_out_and_do_not_starve_requests(server: LocalServer, users_file: Path) -> None:
    # 300 silent connections against 2 threads and a 30 s timeout: they wait in the selector, not
    # in the threads, so a real request is answered long before any of them times out.
    patient = serve(LocalUsers.load(users_file), "127.0.0.1", 0, timeout=30, threads=2)
    patient.start_background()
    port = patient.server_address[1]
    idle = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(300)]
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        connection.request("GET", "/me", headers={"Authorization": f"Bearer {ANN}"})
        assert connection.getresponse().status == 200
        connection.close()
    finally:
        for sock in idle:
            sock.close()
        patient.shutdown()
        patient.server_close()
    # A connection that says nothing is closed by the server (the fixture's timeout is 2 s).
    with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=30) as silent:
        closing = silent.recv(1024)
    assert closing == b"" or closing.startswith(b"HTTP/1.1 408")


def test_security_headers_everywhere(server: LocalServer) -> None:
    for method, path, token in (("GET", "/me", ANN), ("GET", "/cases", None), ("GET", "/nowhere", ANN)):
        status, headers, _ = request(server, method, path, token)
        assert headers["cache-control"] == "no-store", path
        assert headers["x-content-type-options"] == "nosniff", path
        assert "frame-ancestors 'none'" in headers["content-security-policy"], path
    status, headers, _ = request(server, "GET", "/")
    assert status == 200 and "script-src 'self';" in headers["content-security-policy"]
    assert "unsafe-inline" not in headers["content-security-policy"]


def test_denied_requests_are_audited_without_tokens(server: LocalServer, service: DedupService) -> None:
    assert request(server, "GET", "/cases", "wrong-token-secret")[0] == 401
    status, _, body = request(server, "GET", "/cases", OLD)
    assert status == 401 and b"expired" in body
    assert request(server, "POST", "/cases/x/decision", AL, b'{"decision": "cannot_tell"}')[0] == 403
    assert request(server, "GET", "/cases/case_of_another_tenant", ANN)[0] == 404
    found = denials(service) + denials(service.for_tenant("tenant-a"))
    statuses = {(d["actor"], d["status"]) for d in found}
    assert ("anonymous", 401) in statuses and ("al", 403) in statuses and ("ann", 404) in statuses
    dump = json.dumps([e.details for e in service.store.audit_events(tenant=None)])
    for secret in ("wrong-token-secret", OLD, AL, ANN):
        assert secret not in dump


def test_revoking_a_user_takes_effect_without_a_restart(server: LocalServer, users_file: Path) -> None:
    assert request(server, "GET", "/me", ANN)[0] == 200
    users = json.loads(users_file.read_text())
    users["users"] = [u for u in users["users"] if u["name"] != "ann"]
    users_file.write_text(json.dumps(users))
    status, _, body = request(server, "GET", "/me", ANN)
    assert status == 401 and b"revoked" in body


@pytest.mark.parametrize(
    ("users", "message"),
    [
        ([user("ann", "officer", "a"), user("ann", "supervisor", "b")], "appears twice"),
        ([user("ann", "officer", "a"), user("bob", "supervisor", "a")], "also 'ann'"),
        ([user("ann", "wizard", "a")], "wizard"),
        ([user("ann", "officer", "a", tenant="../etc")], "tenant"),
        ([user("<b>x</b>", "officer", "a")], "name must be"),
        ([{**user("ann", "officer", "a"), "token_sha256": "abc"}], "64 lowercase hex"),
        ([user("ann", "officer", "a", expires_at="2030-01-01T00:00:00")], "time zone"),
        ([user("ann", "officer", "a", expires_at="soon")], "ISO 8601"),
        ([user("ann", "officer", "a", password="plain")], "unknown field"),
        ([], "at least one user"),
    ],
)
def test_users_file_is_checked_whole(users: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(InvalidUsersFile, match=message):
        parse_users({"users": users})


def test_token_expiry_and_header_shape() -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    users = LocalUsers(parse_users({"users": [user("ann", "officer", ANN, expires_at=later.isoformat())]}))
    assert users.authenticate(f"Bearer {ANN}")["cognito:username"] == "ann"
    with pytest.raises(Unauthorized, match="expired"):
        users.authenticate(f"Bearer {ANN}", now=later + timedelta(seconds=1))
    with pytest.raises(Unauthorized, match="Bearer"):
        users.authenticate(f"Basic {ANN}")
    with pytest.raises(Unauthorized, match="unknown or revoked"):
        users.authenticate("Bearer " + hashlib.sha256(b"x").hexdigest())


def test_non_loopback_bind_needs_tls_in_front(users_file: Path) -> None:
    users = LocalUsers.load(users_file)
    for host in ("0.0.0.0", "192.0.2.10", "::", "example.org"):
        with pytest.raises(RefusedBind, match="behind-tls-proxy"):
            serve(users, host, 0)
    running = serve(users, "0.0.0.0", 0, behind_tls_proxy=True)  # said out loud: allowed
    running.shutdown()
    for host in ("127.0.0.1", "localhost", "::1"):
        with contextlib.suppress(OSError):  # e.g. no IPv6 here: not what this test is about
            serve(users, host, 0).shutdown()


def test_concurrent_callers_never_see_each_others_identity(server: LocalServer) -> None:
    """The resolver is shared: requests from two users at once must each get their own answer."""
    from concurrent.futures import ThreadPoolExecutor

    def ask(index: int) -> tuple[str, str]:
        token, name = (ANN, "ann") if index % 2 else (AL, "al")
        status, _, body = request(server, "GET", "/me", token)
        return name, json.loads(body)["name"] if status == 200 else f"status {status}"

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(ask, range(400)))
    wrong = [(asked, got) for asked, got in answers if asked != got]
    assert not wrong, wrong[:5]


def test_slowly_sent_headers_hold_no_thread(users_file: Path) -> None:
    # Slowloris: connections that send one header line at a time, never finishing, against 2
    # threads and a 30 s timeout. cheroot gave each a thread at its first byte (the review: 20 of
    # them starved 8 threads); here they wait without one, and a real request is answered while
    # every one of them is still sending.
    patient = serve(LocalUsers.load(users_file), "127.0.0.1", 0, timeout=30, threads=2)
    patient.start_background()
    port = patient.server_address[1]
    slow = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(6)]
    for sock in slow:
        sock.sendall(b"GET /me HTTP/1.1\r\nHost: local\r\n")
    stop = threading.Event()
    answered: list[bytes] = []

    def drip() -> None:
        while not stop.wait(0.2):
            for sock in slow:
                sock.sendall(b"X-Slow: 1\r\n")  # raises if the server gave up on it

    dripper = threading.Thread(target=drip, daemon=True)
    dripper.start()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        connection.request("GET", "/me", headers={"Authorization": f"Bearer {ANN}"})
        assert connection.getresponse().status == 200
        connection.close()
        assert dripper.is_alive()  # still sending: none was closed to make room
        for sock in slow:
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                answered.append(sock.recv(1024))
        assert answered == []  # and none was answered: they are still waiting for their headers
    finally:
        stop.set()
        dripper.join()
        for sock in slow:
            sock.close()
        patient.shutdown()
        patient.server_close()


def test_headers_that_never_finish_are_closed_at_the_deadline(server: LocalServer) -> None:
    # The fixture's timeout is 2 s: a client that keeps sending header lines faster than that
    # (so no single read ever times out) is still answered 408 and closed.
    with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=30) as sock:
        sock.sendall(b"GET /me HTTP/1.1\r\nHost: local\r\n")
        sock.settimeout(0.25)
        answer: bytes | None = None  # stays None if the server never gives up on it
        for _ in range(400):
            try:
                sock.sendall(b"X-Slow: 1\r\n")
                answer = sock.recv(1024)
                break
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                answer = b""
                break
    assert answer is not None and (answer == b"" or answer.startswith(b"HTTP/1.1 408")), answer


def test_headers_complete() -> None:
    assert not headers_complete(b"GET / HTTP/1.1\r\nHost: a\r\n")
    assert headers_complete(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert headers_complete(b"GET / HTTP/1.1\nHost: a")  # a bare LF: cheroot refuses it at once
    assert headers_complete(b"X" * (16 * 1024))  # too long: cheroot answers 413 at once


def test_two_framings_at_once_are_refused(server: LocalServer) -> None:
    answer = raw(
        server,
        b"POST /cases/x/decision HTTP/1.1\r\nHost: local\r\nAuthorization: Bearer "
        + ANN.encode()
        + b"\r\nContent-Type: application/json\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"2\r\n{}\r\n0\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 400") and b"Transfer-Encoding together" in answer, answer[:200]


def test_a_flood_of_anonymous_refusals_cannot_flood_the_audit_log(
    server: LocalServer, service: DedupService
) -> None:
    # The review: one client without a token wrote 2,073 audit entries in 5 s. Now anonymous
    # refusals are recorded one by one up to a budget a minute (60), known callers' always.
    for n in range(150):
        assert request(server, "GET", "/cases", f"wrong-{n}")[0] == 401
    assert request(server, "POST", "/cases/x/decision", AL, b'{"decision": "cannot_tell"}')[0] == 403
    found = denials(service) + denials(service.for_tenant("tenant-a"))
    anonymous = [d for d in found if d["actor"] == "anonymous"]
    assert 60 <= len(anonymous) < 150  # 60 a minute: more only if the 150 took over a minute
    assert any(d["actor"] == "al" and d["status"] == 403 for d in found)

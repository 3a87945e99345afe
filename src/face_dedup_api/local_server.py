"""`face-dedup serve`: the review API and console on one machine, LOCAL ONLY.

A production WSGI server (cheroot: a bounded thread pool, socket timeouts, idle keep-alive
connections parked in a selector rather than holding threads, header and body size limits)
runs a thin WSGI gate in front of the same resolver the cloud uses:

1. authenticate from the headers alone, before a byte of the body is read (a stranger's 300 MB
   POST is refused with 401 and never read);
2. refuse bodies over the route's limit (413), from Content-Length or while reading a chunked one;
3. refuse JSON nested deeper than MAX_JSON_DEPTH (400), rather than drop the connection;
4. turn the request into the API Gateway (REST, proxy) event the cloud would deliver, with the
   user's claims and without the Authorization header, and resolve it.

Every refusal is audited (who if known, method, path, status, reason; never a token or a body).
Waitress was considered: it buffers a whole request body before the application sees the
headers, so it cannot authenticate first. Binds to 127.0.0.1; any other address needs the
operator to say TLS terminates in front of it (`behind_tls_proxy`)."""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qsl, urlsplit

from cheroot import connections, wsgi

from face_dedup_api import capture
from face_dedup_api.app import SECURITY_HEADERS, app, audit_denied
from face_dedup_api.auth import LocalUsers, Unauthorized

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

StartResponse = Callable[[str, list[tuple[str, str]]], Any]

MAX_BODY = 64 * 1024  # decisions, confirmations, uploads: a few hundred bytes
MAX_VERIFY_BODY = 72 * 1024 * 1024  # /verify: two base64 photos of at most 35 MB each
MAX_JSON_DEPTH = 32
MAX_HEADERS = 16 * 1024
TIMEOUT_SECONDS = 10  # a socket that says nothing for this long is closed
THREADS = 8
PUBLIC = (
    "/",
    "/openapi.json",
    "/favicon.ico",
)  # the page and its files carry no data; everything else needs a token


# Powertools' resolver is one module-level object that holds the request being resolved
# (current_event, route context): two threads resolving at once could each read the other's
# event, i.e. the other caller's identity. Lambda runs one request per process; here the gate
# resolves one at a time (reading bodies, authentication and sending stay concurrent).
_ONE_AT_A_TIME = threading.Lock()


class LocalContext:
    function_name = "face-dedup-serve"
    memory_limit_in_mb = 0
    invoked_function_arn = "local"
    aws_request_id = "local"


class RefusedBind(ValueError):
    """A non-loopback address without TLS in front."""


def check_bind(host: str, behind_tls_proxy: bool) -> None:
    """Loopback only, unless the operator states that a TLS-terminating proxy is in front:
    tokens travel in every request and must not cross a network in clear."""
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not behind_tls_proxy:
        raise RefusedBind(
            f"refusing to serve on {host}: tokens would cross the network in clear. Bind to "
            "127.0.0.1, or put a TLS-terminating proxy in front and pass --behind-tls-proxy"
        )


def to_event(
    method: str, target: str, headers: dict[str, str], body: bytes, claims: dict[str, str] | None
) -> dict[str, Any]:
    parts = urlsplit(target)
    query = dict(parse_qsl(parts.query))
    return {
        "resource": parts.path,
        "path": parts.path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": query or None,
        "multiValueQueryStringParameters": {k: [v] for k, v in query.items()} or None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": parts.path,
            "httpMethod": method,
            "path": parts.path,
            "stage": "local",
            "requestId": "local",
            "identity": {"sourceIp": "127.0.0.1"},
            "authorizer": {"claims": claims} if claims else None,
        },
        "body": base64.b64encode(body).decode() if body else None,
        "isBase64Encoded": bool(body),
    }


def json_depth(value: Any) -> int:
    """How deeply lists and objects nest (iterative: a hostile value cannot exhaust the stack)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


class Refusal(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ReviewGate:
    """The WSGI application: the checks above, then the resolver."""

    def __init__(self, users: LocalUsers) -> None:
        self.users = users

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = str(environ.get("REQUEST_METHOD", "GET"))
        path = str(environ.get("PATH_INFO", "/"))
        claims: dict[str, str] | None = None
        try:
            public = method == "GET" and (path in PUBLIC or path.startswith("/static/"))
            if not (public or capture.is_public(method, path)):  # capture routes check their own token
                try:
                    claims = self.users.authenticate(environ.get("HTTP_AUTHORIZATION"))
                except Unauthorized as exc:
                    raise Refusal(401, str(exc)) from None
            elif method == "POST":  # a photo upload: its capture token, before a byte of the body
                try:
                    capture.check_token(environ.get("HTTP_X_CAPTURE_TOKEN"))
                except Unauthorized as exc:
                    raise Refusal(401, str(exc)) from None
            body = self._body(environ, path)
            if body and "json" in str(environ.get("CONTENT_TYPE", "")):
                self._check_json(body)
        except Refusal as refusal:
            audit_denied(method, path, refusal.status, str(refusal), claims)
            environ[REFUSED] = True  # the gateway closes the connection instead of draining the body
            return self._reply(start_response, refusal.status, str(refusal))
        target = path + (f"?{environ['QUERY_STRING']}" if environ.get("QUERY_STRING") else "")
        event = to_event(method, target, self._headers(environ), body, claims)
        with _ONE_AT_A_TIME:  # the resolver keeps the current request in shared state
            response = app.resolve(event, cast("LambdaContext", LocalContext()))
        payload = response.get("body") or ""
        data = base64.b64decode(payload) if response.get("isBase64Encoded") else payload.encode()
        headers: list[tuple[str, str]] = []
        for name, values in (response.get("multiValueHeaders") or {}).items():
            headers.extend((name, str(value)) for value in values)
        headers.extend((name, str(value)) for name, value in (response.get("headers") or {}).items())
        headers.append(("Content-Length", str(len(data))))
        start_response(_status_line(int(response["statusCode"])), headers)
        return [data]

    @staticmethod
    def _headers(environ: dict[str, Any]) -> dict[str, str]:
        """Request headers for the event, without Authorization: nothing past the gate sees a token."""
        headers = {
            key[5:].replace("_", "-").title(): str(value)
            for key, value in environ.items()
            if key.startswith("HTTP_") and key != "HTTP_AUTHORIZATION"
        }
        if environ.get("CONTENT_TYPE"):
            headers["Content-Type"] = str(environ["CONTENT_TYPE"])
        return headers

    @staticmethod
    def _body(environ: dict[str, Any], path: str) -> bytes:
        limit = MAX_VERIFY_BODY if path == "/verify" else capture.body_limit(path) or MAX_BODY
        declared = environ.get("CONTENT_LENGTH") or ""
        stream = environ["wsgi.input"]
        if declared and environ.get("HTTP_TRANSFER_ENCODING"):
            # Two framings at once is how requests are smuggled past a proxy (RFC 9112 6.3).
            raise Refusal(400, "Content-Length and Transfer-Encoding together: send one")
        if declared:
            if not declared.isdigit():
                raise Refusal(400, "Content-Length is not a number")
            if int(declared) > limit:
                raise Refusal(413, f"request body over {limit} bytes")
            return bytes(stream.read(int(declared))) if int(declared) else b""
        if "chunked" in str(environ.get("HTTP_TRANSFER_ENCODING", "")).lower():
            data = bytes(stream.read(limit + 1))
            if len(data) > limit:
                raise Refusal(413, f"request body over {limit} bytes")
            return data
        return b""

    @staticmethod
    def _check_json(body: bytes) -> None:
        try:
            value = json.loads(body)
        except RecursionError:
            raise Refusal(400, f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
        except ValueError:
            raise Refusal(400, "the request body is not valid JSON") from None
        if json_depth(value) > MAX_JSON_DEPTH:
            raise Refusal(400, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")

    @staticmethod
    def _reply(start_response: StartResponse, status: int, message: str) -> list[bytes]:
        data = json.dumps({"error": message}).encode()
        headers = [(name, value) for name, value in SECURITY_HEADERS.items()]
        # A refused body is never read; cheroot closes such a connection after the answer.
        headers += [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(data))),
        ]
        start_response(_status_line(status), headers)
        return [data]


def _status_line(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Status"


REFUSED = "face_dedup.refused"


class _ClosingGateway(wsgi.Gateway_10):
    """cheroot reads (drains) an unread request body before keeping a connection alive. After a
    refusal the body must never be read: close the connection instead."""

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        if self.env.get(REFUSED):
            self.req.close_connection = True
        return super().start_response(status, headers, exc_info)


class _WaitForFirstBytes(connections.ConnectionManager):
    """cheroot hands a new connection to a worker thread at once, so connections that send
    nothing (300 of them in the review) hold every thread until they time out. Here a new
    connection waits in the selector, like an idle keep-alive one, until its first bytes arrive;
    one that never sends any is closed after the timeout by the manager's expiry."""

    def _from_server_socket(self, server_socket: Any) -> Any:
        conn = super()._from_server_socket(server_socket)  # type: ignore[misc]  # cheroot internal
        if conn is not None:
            self.put(conn)  # registered with the selector until readable, then processed
        return None


_BARE_LF = re.compile(rb"(?<!\r)\n")


def headers_complete(data: bytes) -> bool:
    """Whether a worker can parse this without waiting for more: the blank line that ends the
    headers has arrived, or cheroot will refuse what it has at once (a bare LF, or more than
    MAX_HEADERS bytes)."""
    return b"\r\n\r\n" in data or bool(_BARE_LF.search(data)) or len(data) >= MAX_HEADERS


class _HeaderWaitingRoom:
    """Slowloris. cheroot hands a connection to a worker thread as soon as any byte arrives, and
    its timeout is per read: a client that sends one header line every few seconds holds a thread
    for as long as it likes. In the review, 20 such connections starved the 8 threads (a real
    `GET /me` timed out after 30 s). Here a connection whose headers are incomplete waits, holding
    no thread, and is looked at (peeked, never read) every POLL seconds; it goes to a worker once
    the whole header block is there, and is closed with 408 if that takes longer than the deadline
    (counted from its first bytes), however slowly it keeps sending."""

    POLL = 0.05

    def __init__(self, dispatch: Callable[[Any], None], deadline: float, timeout: float) -> None:
        self._dispatch = dispatch
        self._deadline = deadline
        self._timeout = timeout
        self._waiting: dict[Any, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def admit(self, conn: Any) -> None:
        ready = self._ready(conn)
        if ready is None:
            conn.close()
        elif ready:
            self._dispatch(conn)
        else:
            with self._lock:
                self._waiting[conn] = time.monotonic() + self._deadline
                if self._thread is None:
                    self._thread = threading.Thread(target=self._watch, name="header-wait", daemon=True)
                    self._thread.start()

    def _ready(self, conn: Any) -> bool | None:
        """True: dispatch; False: keep waiting; None: the client has gone."""
        rfile = getattr(conn, "rfile", None)
        buffered = bytes(rfile.peek(0)) if rfile is not None and rfile.has_data() else b""
        if headers_complete(buffered):
            return True
        sock = conn.socket
        try:
            sock.settimeout(0.0)  # look without waiting
            try:
                peeked = sock.recv(MAX_HEADERS + 4, socket.MSG_PEEK)
            except BlockingIOError:
                return False
            finally:
                sock.settimeout(self._timeout)
        except OSError:
            return None
        if not peeked:
            return None if not buffered else False
        return headers_complete(buffered + peeked)

    def _watch(self) -> None:
        while not self._stop.wait(self.POLL):
            with self._lock:
                waiting = list(self._waiting.items())
            now = time.monotonic()
            for conn, deadline in waiting:
                ready = self._ready(conn)
                if ready is False and now < deadline:
                    continue
                with self._lock:
                    self._waiting.pop(conn, None)
                if ready:
                    self._dispatch(conn)
                    continue
                if ready is False:  # too slow: say so, then close
                    with contextlib.suppress(OSError):
                        conn.socket.sendall(
                            b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        )
                conn.close()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            waiting, self._waiting = list(self._waiting), {}
        for conn in waiting:
            conn.close()


class _Server(wsgi.Server):
    """cheroot's WSGI server; every connection about to be given to a worker goes through the
    waiting room first (new ones from the selector, kept-alive ones with more to read)."""

    waiting_room: _HeaderWaitingRoom

    def process_conn(self, conn: Any) -> None:
        self.waiting_room.admit(conn)


class LocalServer:
    """cheroot's server with the small interface `face-dedup serve` and the tests use."""

    def __init__(self, server: _Server) -> None:
        self._server = server
        self._thread: threading.Thread | None = None

    @property
    def server_address(self) -> tuple[str, int]:
        address = self._server.bind_addr
        return (str(address[0]), int(address[1]))

    def serve_forever(self) -> None:
        self._server.serve()

    def start_background(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        self._server.waiting_room.stop()
        self._server.stop()

    def server_close(self) -> None:
        if self._thread is not None:
            self._thread.join(timeout=10)


def serve(
    users: LocalUsers,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    behind_tls_proxy: bool = False,
    timeout: int = TIMEOUT_SECONDS,
    threads: int = THREADS,
) -> LocalServer:
    """A bound, ready server (port 0 picks a free one); call serve_forever()."""
    check_bind(host, behind_tls_proxy)
    server = _Server(
        (host, port),
        ReviewGate(users),
        numthreads=threads,
        max=threads,
        request_queue_size=64,
        timeout=timeout,
        shutdown_timeout=2,
        server_name="face-dedup-local",
    )
    server.max_request_header_size = MAX_HEADERS
    server.waiting_room = _HeaderWaitingRoom(
        lambda conn: wsgi.Server.process_conn(server, conn), deadline=timeout, timeout=timeout
    )
    # Body limits are the gate's, per route and after authentication (cheroot's own would answer
    # 413 to a stranger before anyone knew who was asking, and unaudited).
    server.max_request_body_size = 0
    server.gateway = _ClosingGateway
    server.prepare()  # binds now, so the caller knows the port and a bad address fails here
    # cheroot >= 8.5 internals (pinned in pyproject): swap in the manager that waits for data.
    plain = server._connections  # type: ignore[attr-defined]
    server._connections = _WaitForFirstBytes(server)  # type: ignore[attr-defined]
    plain._selector.close()  # its selector only: the listening socket stays open
    return LocalServer(server)

"""MOSIP's datashare: fetch a person's CBEFF from a referenceURL.

The URL comes from the request, so it is hostile: only https (http only where the operator
allows it, e.g. a datashare on loopback), a timeout on every phase and a deadline on the whole
body, a size limit enforced while reading (not trusted from Content-Length), and MOSIP's in-body
errors (it answers 200 with an `errors` list) turned into failure reasons: an expired share is
17, anything else 7. The token MOSIP's auth manager issues travels as the `Authorization`
cookie, renewed once when the datashare refuses it (HTTP 401/403 or KER-ATH-401/403 in a body).
Payloads of MOSIP 1.2 and later are encrypted for us; `crypto.decrypt_datashare` opens them
when a key is configured.
Nothing is written anywhere: a failed fetch leaves no trace but the typed error.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from face_dedup.mosip.messages import FailureReason

# MOSIP uses one code for "Data share not found" and "Data share usage expired": the message tells.
EXPIRED_CODES = {"DAT-SER-006"}
# A refused token, which MOSIP may send as HTTP 200 with these codes in the body (its docs: "for
# all the functional failures MOSIP sends a response code 200"), as well as HTTP 401/403.
AUTH_CODES = {"KER-ATH-401", "KER-ATH-403"}


class DatashareError(Exception):
    """The biometrics could not be fetched. `reason` is MOSIP's failure reason (7 or 17)."""

    def __init__(self, reason: FailureReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class DatashareConfig:
    timeout_s: float = 10.0
    max_bytes: int = 10 << 20
    allow_http: bool = False  # plain http only for a datashare on a trusted network (tests, labs)
    # Hosts a referenceURL may name (empty: any). Set it: the URL comes from the message, and an
    # ABIS that fetches any URL can be made to probe its own network.
    allowed_hosts: tuple[str, ...] = ()
    token: str = ""  # a static token (cookie); empty: ask the auth manager, if configured
    authmanager_url: str = (
        ""  # e.g. https://api-internal.example/v1/authmanager/authenticate/clientidsecretkey
    )
    client_id: str = ""
    secret_key: str = ""
    app_id: str = "regproc"


class TokenSource:
    """The auth manager's token, asked for once and again only after the datashare refuses it."""

    def __init__(self, config: DatashareConfig, client: httpx.Client) -> None:
        self._config, self._client = config, client
        self._token = config.token
        self._lock = threading.Lock()

    def get(self, *, renew: bool = False) -> str:
        with self._lock:
            if (renew or not self._token) and self._config.authmanager_url:
                self._token = self._authenticate()
            return self._token

    def _authenticate(self) -> str:
        c = self._config
        body = {
            "id": "mosip.io.clientId.pwd",
            "version": "1.0",
            "metadata": {},
            "requesttime": "",
            "request": {"clientId": c.client_id, "secretKey": c.secret_key, "appId": c.app_id},
        }
        try:
            response = self._client.post(c.authmanager_url, json=body, timeout=c.timeout_s)
        except httpx.HTTPError as exc:
            raise DatashareError(
                FailureReason.UNABLE_TO_FETCH_BIOMETRICS, f"auth manager: {_kind(exc)}"
            ) from None
        token = response.cookies.get("Authorization") or response.headers.get("authorization", "")
        self._client.cookies.clear()
        if response.status_code != 200 or not token:
            raise DatashareError(
                FailureReason.UNABLE_TO_FETCH_BIOMETRICS,
                f"auth manager refused the client credentials (HTTP {response.status_code})",
            )
        return token


class DatashareClient:
    def __init__(
        self,
        config: DatashareConfig,
        *,
        transport: httpx.BaseTransport | None = None,
        decrypt: Callable[[bytes], bytes] | None = None,
    ) -> None:
        self.config = config
        # No kept-alive connections: each fetch opens its own, which the deadline can cut.
        self._client = httpx.Client(
            transport=transport,
            follow_redirects=False,
            trust_env=False,
            limits=httpx.Limits(max_keepalive_connections=0),
        )
        self._tokens = TokenSource(config, self._client)
        self._decrypt = decrypt

    def close(self) -> None:
        self._client.close()

    def fetch(self, url: str) -> bytes:
        """The CBEFF document behind `url`, decrypted when a key is configured."""
        self._check_url(url)
        body, status = self._get(url, self._tokens.get())
        if self.config.authmanager_url and (status in (401, 403) or _error_codes(body) & AUTH_CODES):
            body, status = self._get(url, self._tokens.get(renew=True))
        if status == 410:
            raise DatashareError(FailureReason.DATASHARE_URL_EXPIRED, "the datashare URL has expired")
        if status != 200:
            raise DatashareError(
                FailureReason.UNABLE_TO_FETCH_BIOMETRICS, f"datashare answered HTTP {status}"
            )
        _raise_in_body_error(body)
        if not body.strip():
            raise DatashareError(FailureReason.UNABLE_TO_FETCH_BIOMETRICS, "the datashare sent nothing")
        if self._decrypt is not None:
            return self._decrypt(body)
        return body

    def _check_url(self, url: str) -> None:
        try:
            parts = urlsplit(url)
        except ValueError:
            raise DatashareError(
                FailureReason.UNABLE_TO_FETCH_BIOMETRICS, "referenceURL is not a URL"
            ) from None
        allowed = ("https", "http") if self.config.allow_http else ("https",)
        if parts.scheme not in allowed or not parts.hostname or parts.username or parts.password:
            raise DatashareError(
                FailureReason.UNABLE_TO_FETCH_BIOMETRICS,
                "referenceURL must be an https URL without credentials",
            )
        hosts = {h.lower() for h in self.config.allowed_hosts}
        if hosts and parts.hostname.lower() not in hosts:
            raise DatashareError(
                FailureReason.UNABLE_TO_FETCH_BIOMETRICS, "referenceURL names a host not allowed"
            )

    def _get(self, url: str, token: str) -> tuple[bytes, int]:
        # The cookie is set per request, never kept in a jar: no cookie from one host reaches another.
        headers = {"Cookie": "Authorization=" + token} if token else None
        self._client.cookies.clear()
        limit = self.config.max_bytes
        # The timeout bounds each read; the deadline bounds the whole exchange, or a share
        # trickling its headers or body a byte per read would hold the queue (every request waits
        # behind this one) for days.
        deadline = time.monotonic() + self.config.timeout_s
        cutoff = _Cutoff(self.config.timeout_s)
        try:
            with self._client.stream(
                "GET", url, headers=headers, timeout=self.config.timeout_s, extensions={"trace": cutoff.trace}
            ) as response:
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > limit:
                    raise _too_large(limit)
                chunks, size = [], 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise _too_large(limit)
                    if time.monotonic() > deadline:
                        raise DatashareError(
                            FailureReason.UNABLE_TO_FETCH_BIOMETRICS, "datashare: timed out (whole body)"
                        )
                    chunks.append(chunk)
                return b"".join(chunks), response.status_code
        except httpx.HTTPError as exc:
            kind = "timed out (whole exchange)" if cutoff.expired else _kind(exc)
            raise DatashareError(FailureReason.UNABLE_TO_FETCH_BIOMETRICS, f"datashare: {kind}") from None
        finally:
            cutoff.cancel()


class _Cutoff:
    """Shuts the fetch's connection down when its time is up, wherever it is blocked (httpx has
    no deadline on a whole exchange, only timeouts per read). The socket comes from httpcore's
    documented `trace` extension, when the connection is made."""

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def trace(self, event: str, info: dict[str, Any]) -> None:
        # TLS wraps (detaches) the TCP socket: the TLS stream's socket is the one to shut then.
        if event not in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            return
        stream = info.get("return_value")
        sock = stream.get_extra_info("socket") if stream is not None else None
        with self._lock:
            self._sock = sock if isinstance(sock, socket.socket) else None
            if self.expired:
                self._shut()

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            self._shut()

    def _shut(self) -> None:
        if self._sock is not None:
            with suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked read, unlike close()

    def cancel(self) -> None:
        self._timer.cancel()


def _too_large(limit: int) -> DatashareError:
    return DatashareError(FailureReason.UNABLE_TO_FETCH_BIOMETRICS, f"datashare payload over {limit} bytes")


def _kind(exc: Exception) -> str:
    return "timed out" if isinstance(exc, httpx.TimeoutException) else type(exc).__name__


def _errors(body: bytes) -> list[dict[str, Any]]:
    """MOSIP's in-body `errors` list (functional failures come with HTTP 200), or []."""
    if not body.lstrip().startswith(b"{"):
        return []
    try:
        doc: Any = json.loads(body)
    except (ValueError, RecursionError):
        return []
    errors = doc.get("errors") if isinstance(doc, dict) else None
    if not errors or not isinstance(errors, list):
        return []
    return [e for e in errors if isinstance(e, dict)]


def _error_codes(body: bytes) -> set[str]:
    return {str(e.get("errorCode", "")) for e in _errors(body)}


def _raise_in_body_error(body: bytes) -> None:
    """MOSIP answers functional failures with HTTP 200 and a JSON body with `errors`."""
    errors = _errors(body)
    if not errors:
        return
    codes = {str(e.get("errorCode", "")) for e in errors}
    messages = " ".join(str(e.get("message", "")) for e in errors).lower()
    if codes & EXPIRED_CODES and "expired" in messages:
        raise DatashareError(FailureReason.DATASHARE_URL_EXPIRED, "the datashare URL has expired")
    shown = ",".join(sorted(c for c in codes if c.replace("-", "").isalnum())[:3])
    raise DatashareError(FailureReason.UNABLE_TO_FETCH_BIOMETRICS, f"datashare error {shown or 'unknown'}")

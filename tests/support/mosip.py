"""Test helpers for the MOSIP ABIS: CBEFF files built from photos (ISO/IEC 19794-5 with JPEG 2000,
as MOSIP registers faces), a real HTTP datashare on loopback, and request builders."""

from __future__ import annotations

import io
import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from PIL import Image

from face_dedup.mosip.cbeff import build_cbeff
from face_dedup.mosip.iso_face import JP2_LOSSLESS, JPEG, write_face_record


def cbeff_from_photo(path: Path, *, jpeg2000: bool = True) -> bytes:
    with Image.open(path) as image:
        rgb = image.convert("RGB")
    out = io.BytesIO()
    if jpeg2000:
        rgb.save(out, "JPEG2000", irreversible=False)  # lossless, as MOSIP registers faces
    else:
        rgb.save(out, "JPEG", quality=95)
    record = write_face_record(out.getvalue(), JP2_LOSSLESS if jpeg2000 else JPEG, *rgb.size)
    return build_cbeff(record)


@dataclass
class Datashare:
    """A datashare on loopback: path -> (status, body); records the cookies it was sent."""

    files: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    cookies: list[str] = field(default_factory=list)
    delay_s: float = 0.0
    port: int = 0
    required_token: str = ""  # when set, files need `Authorization=<it>` (else HTTP 401)
    refuse_with_200: bool = False  # refuse a token as MOSIP's functional failures: HTTP 200, errors
    issued: list[str] = field(default_factory=list)  # tokens the auth manager handed out

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/v1/datashare/get/{name}"

    def share(self, body: bytes, status: int = 200) -> str:
        name = uuid.uuid4().hex
        self.files[name] = (status, body)
        return self.url(name)


@contextmanager
def datashare_server() -> Iterator[Datashare]:
    share = Datashare()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            share.cookies.append(self.headers.get("Cookie", ""))
            if share.delay_s:
                threading.Event().wait(share.delay_s)
            status, body = share.files.get(self.path.rsplit("/", 1)[-1], (404, b"not found"))
            if (
                share.required_token
                and self.headers.get("Cookie", "") != "Authorization=" + share.required_token
            ):
                status, body = (
                    200 if share.refuse_with_200 else 401,
                    b'{"errors":[{"errorCode":"KER-ATH-401","message":"Authentication Failed"}]}',
                )
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            with suppress(BrokenPipeError, ConnectionResetError):  # a client that timed out
                self.wfile.write(body)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            request = json.loads(self.rfile.read(length))["request"]
            self.send_response(200)
            if request == {"clientId": "abis", "secretKey": "s3cret", "appId": "regproc"}:
                share.issued.append(share.required_token)
                self.send_header("Set-Cookie", f"Authorization={share.required_token}; Path=/")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    share.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield share
    finally:
        server.shutdown()
        server.server_close()


def request(op: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": f"mosip.abis.{op}",
        "version": "1.1",
        "requestId": str(uuid.uuid4()),
        "requesttime": "2026-12-01T10:00:00.000Z",
        **fields,
    }


_REPLY_KEYS = {
    "insert": {"failureReason"},
    "identify": {"failureReason", "candidateList"},
    "delete": {"failureReason"},
    "ping": {"failureReason"},
    "pendingJobs": {"failureReason", "jobscount"},
    "referenceCount": {"failureReason", "count"},
}


def assert_reply_shape(reply: dict[str, Any]) -> None:
    """What MOSIP's conformance kit demands of a reply: only the keys the spec names, every
    value a string (no nulls, numbers or booleans), candidates exactly as specified."""
    op = str(reply.get("id", "")).rsplit(".", 1)[-1]
    allowed = {"id", "requestId", "responsetime", "returnValue"} | _REPLY_KEYS.get(op, {"failureReason"})
    assert set(reply) <= allowed, set(reply) - allowed
    assert {"id", "requestId", "responsetime", "returnValue"} <= set(reply)
    assert all(isinstance(v, str) for k, v in reply.items() if k != "candidateList")
    if "candidateList" in reply:
        cl = reply["candidateList"]
        assert set(cl) == {"count", "candidates"} and cl["count"].isdigit()
        for c in cl["candidates"]:
            assert set(c) == {"referenceId", "analytics", "modalities"} and isinstance(c["referenceId"], str)
            assert all(isinstance(v, str) for v in c["analytics"].values())
            for modality in c["modalities"]:
                assert set(modality) == {"biometricType", "analytics"}

"""`face-dedup serve`: the review API and console on one machine, LOCAL ONLY.

Each HTTP request becomes the API Gateway (REST, proxy) event the cloud would deliver, with
the claims of the user whose bearer token matched the local users file, and goes through
the same resolver. Binds to 127.0.0.1 by default. Not a production server: no TLS."""

from __future__ import annotations

import base64
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qsl, urlsplit

from face_dedup_api.app import app

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext
from face_dedup_api.auth import LocalUsers


class LocalContext:
    function_name = "face-dedup-serve"
    memory_limit_in_mb = 0
    invoked_function_arn = "local"
    aws_request_id = "local"


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


def make_handler(users: LocalUsers) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "face-dedup-local"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k: v for k, v in self.headers.items()}
            claims = users.claims_for(self.headers.get("Authorization"))
            event = to_event(self.command, self.path, headers, body, claims)
            response = app.resolve(event, cast("LambdaContext", LocalContext()))
            payload = response.get("body") or ""
            data = base64.b64decode(payload) if response.get("isBase64Encoded") else payload.encode()
            self.send_response(int(response["statusCode"]))
            for name, values in (response.get("multiValueHeaders") or {}).items():
                for value in values:
                    self.send_header(name, value)
            for name, value in (response.get("headers") or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: request lines can carry case ids; nothing here needs them on stderr."""

    return Handler


def serve(users: LocalUsers, host: str = "127.0.0.1", port: int = 8080) -> ThreadingHTTPServer:
    return ThreadingHTTPServer((host, port), make_handler(users))

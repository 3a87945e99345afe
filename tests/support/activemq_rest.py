"""ActiveMQ's web-console REST message API, answered over STOMP, for MOSIP's ABIS testing kit.

The kit posts requests to `POST /api/message/<queue>?type=queue` and polls replies with
`GET /api/message/<queue>?type=queue&clientId=...`; Debian's ActiveMQ ships no web console, so
this adapter answers those two calls on loopback and relays them to the broker's STOMP
connector. For conformance runs only (see README, MOSIP ABIS), never for production.

    python -m tests.support.activemq_rest --stomp-port 61613 --port 8161
"""

from __future__ import annotations

import argparse
import queue
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import stomp


class Relay:
    def __init__(self, stomp_port: int) -> None:
        self.conn = stomp.Connection12([("127.0.0.1", stomp_port)], auto_content_length=False)
        self.inboxes: dict[str, queue.Queue[Any]] = {}
        self.lock = threading.Lock()
        relay = self

        class Listener(stomp.ConnectionListener):  # type: ignore[misc]
            def on_message(self, frame: Any) -> None:
                relay.inboxes[frame.headers["subscription"]].put(frame)

        self.conn.set_listener("relay", Listener())
        self.conn.connect(wait=True)

    def send(self, name: str, body: bytes) -> None:
        self.conn.send("/queue/" + name, body, headers={"persistent": "true"})

    def receive(self, name: str, wait_s: float) -> bytes | None:
        with self.lock:
            if name not in self.inboxes:
                self.inboxes[name] = queue.Queue()
                # prefetch 1 and ack on hand-over: a message is never held by the relay unseen
                self.conn.subscribe(
                    "/queue/" + name, id=name, ack="client-individual", headers={"activemq.prefetchSize": "1"}
                )
        try:
            frame = self.inboxes[name].get(timeout=wait_s)
        except queue.Empty:
            return None
        self.conn.ack(frame.headers["ack"])
        body = frame.body
        return body if isinstance(body, bytes) else str(body).encode()


def serve(stomp_port: int, port: int) -> None:
    relay = Relay(stomp_port)

    class Handler(BaseHTTPRequestHandler):
        def _queue(self) -> str | None:
            parts = urlsplit(self.path)
            if not parts.path.startswith("/api/message/"):
                return None
            return parts.path.removeprefix("/api/message/").strip("/") or None

        def do_POST(self) -> None:
            name = self._queue()
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            if name is None:
                self.send_error(404)
                return
            relay.send(name, body)
            self._answer(200, b"Message sent")

        def do_GET(self) -> None:
            name = self._queue()
            if name is None:
                self.send_error(404)
                return
            wait = float(parse_qs(urlsplit(self.path).query).get("readTimeout", ["2000"])[0]) / 1000
            body = relay.receive(name, min(wait, 10.0))
            if body is None:
                self._answer(204, b"")
            else:
                self._answer(200, body, "application/json")

        def _answer(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stomp-port", type=int, default=61613)
    parser.add_argument("--port", type=int, default=8161)
    args = parser.parse_args()
    serve(args.stomp_port, args.port)

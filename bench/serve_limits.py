"""What `face-dedup serve` does under two kinds of abuse, measured on this machine:

1. a 300 MB POST without a token: how much the client got to send before the 401, and the
   server's resident memory before and after;
2. 300 connections that never send anything: whether a real request is still answered, and how
   many of the silent ones the server has closed 12 s later (its timeout is 10 s).

Run: .venv/bin/python bench/serve_limits.py  (starts its own server on a free port, empty registry)
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def rss_mb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) // 1024
    return -1


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="serve-limits-"))
    token = "bench-token-0123456789"
    digest = hashlib.sha256(token.encode()).hexdigest()
    users = {"users": [{"name": "ann", "role": "officer", "tenant": "default", "token_sha256": digest}]}
    (work / "users.json").write_text(json.dumps(users))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "face_dedup", "serve", "--users", str(work / "users.json")]
    command += ["--port", str(port), "--data-dir", str(work / "registry")]
    server = subprocess.Popen(command, stderr=(work / "serve.log").open("w"))
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("serve did not start: " + (work / "serve.log").read_text()) from None
                time.sleep(0.2)
        before = rss_mb(server.pid)
        sent, answer = 0, b""
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"POST /cases/x/decision HTTP/1.1\r\nHost: l\r\nContent-Type: application/json\r\n")
            sock.sendall(b"Content-Length: 314572800\r\n\r\n")
            chunk = b"x" * (1 << 20)
            try:
                while sent < 314572800:
                    sock.sendall(chunk)
                    sent += len(chunk)
            except OSError:
                pass
            with contextlib.suppress(OSError):
                answer = sock.recv(64)
        first_line = answer.splitlines()[0].decode() if answer else "no answer"
        print(
            f"300 MB POST without a token: {first_line}; client sent {sent >> 20} MB before the "
            f"server closed; RSS {before} MB -> {rss_mb(server.pid)} MB"
        )
        silent = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(300)]
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        started = time.perf_counter()
        connection.request("GET", "/me", headers={"Authorization": f"Bearer {token}"})
        status = connection.getresponse().status
        print(f"300 silent connections open: GET /me -> {status} in {time.perf_counter() - started:.3f} s")
        time.sleep(12)
        closed = 0
        for sock in silent:
            sock.settimeout(0.5)
            with contextlib.suppress(OSError):
                closed += sock.recv(16) == b""
            sock.close()
        print(f"12 s later: {closed} of 300 silent connections closed by the server")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()

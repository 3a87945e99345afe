"""Short-lived links to face images. In the cloud the blob store presigns S3 URLs; locally the
server serves the image itself behind an HMAC-signed, expiring token that names the tenant."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

from face_dedup.errors import NotFound


class ImageSigner:
    def __init__(self, secret: bytes, ttl_seconds: int = 300) -> None:
        self._secret = secret
        self.ttl_seconds = ttl_seconds

    def token(self, key: str, tenant: str) -> str:
        payload = base64.urlsafe_b64encode(
            json.dumps({"k": key, "t": tenant, "e": int(time.time()) + self.ttl_seconds}).encode()
        ).decode()
        signature = hmac.new(self._secret, payload.encode(), hashlib.sha256).hexdigest()
        return f"{payload}.{signature}"

    def verify(self, token: str, tenant: str) -> str:
        """The blob key, if the token is genuine, unexpired and for this tenant."""
        payload, _, signature = token.partition(".")
        expected = hmac.new(self._secret, payload.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            raise NotFound("no such image")
        data = json.loads(base64.urlsafe_b64decode(payload.encode()))
        if data["t"] != tenant or data["e"] < time.time():
            raise NotFound("no such image (expired, or another tenant's)")
        return str(data["k"])

"""Who is calling. In the cloud API Gateway's Cognito authorizer has verified the token and
passes its claims; locally, `face-dedup serve` verifies a bearer token against a configured
users file (LOCAL ONLY: plain shared tokens, for one machine) and passes the same claims."""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from face_dedup.domain import Actor, Role


@dataclass(frozen=True)
class Caller:
    actor: Actor
    tenant: str


class Unauthorized(Exception):
    """No valid identity."""


def caller_from_claims(claims: dict[str, Any] | None) -> Caller:
    """Cognito claims: `cognito:username`, the role as the first of `cognito:groups` (or
    `custom:role`), the tenant in `custom:tenant`."""
    if not claims:
        raise Unauthorized("no identity")
    name = str(claims.get("cognito:username") or claims.get("username") or "")
    groups = claims.get("cognito:groups") or claims.get("custom:role") or ""
    role_name = (groups.split(",")[0] if isinstance(groups, str) else next(iter(groups), "")).strip()
    tenant = str(claims.get("custom:tenant") or "")
    try:
        return Caller(Actor(name, Role(role_name)), tenant)
    except ValueError as exc:
        raise Unauthorized(f"incomplete identity: {exc}") from None


@dataclass(frozen=True)
class LocalUser:
    name: str
    role: Role
    tenant: str


class LocalUsers:
    """LOCAL ONLY. A JSON file `{"users": [{"name", "role", "tenant", "token_sha256"}]}`: tokens
    are stored hashed and compared in constant time. Never use this in the cloud."""

    def __init__(self, users: dict[str, LocalUser]) -> None:
        self._by_digest = users

    @classmethod
    def load(cls, path: Path) -> LocalUsers:
        raw = json.loads(path.read_text(encoding="utf-8"))
        users = {
            str(u["token_sha256"]): LocalUser(str(u["name"]), Role(u["role"]), str(u["tenant"]))
            for u in raw["users"]
        }
        return cls(users)

    @staticmethod
    def digest(token: str) -> str:
        return hashlib.sha256(token.encode("utf-8")).hexdigest()

    def claims_for(self, authorization: str | None) -> dict[str, str] | None:
        if not authorization or not authorization.startswith("Bearer "):
            return None
        digest = self.digest(authorization.removeprefix("Bearer ").strip())
        for known, user in self._by_digest.items():
            if hmac.compare_digest(known, digest):
                return {
                    "cognito:username": user.name,
                    "cognito:groups": user.role.value,
                    "custom:tenant": user.tenant,
                }
        return None

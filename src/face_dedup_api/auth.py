"""Who is calling. In the cloud API Gateway's Cognito authorizer has verified the token and
passes its claims; locally, `face-dedup serve` verifies a bearer token against a configured
users file (LOCAL ONLY: plain shared tokens, for one machine) and passes the same claims."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from face_dedup.domain import Actor, Role
from face_dedup.errors import FaceDedupError
from face_dedup.identifiers import tenant as valid_tenant


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
        raise Unauthorized("not signed in: no valid access token was sent")
    name = str(claims.get("cognito:username") or claims.get("username") or "")
    groups = claims.get("cognito:groups") or claims.get("custom:role") or ""
    role_name = (groups.split(",")[0] if isinstance(groups, str) else next(iter(groups), "")).strip()
    tenant = str(claims.get("custom:tenant") or "")
    try:
        return Caller(Actor(name, Role(role_name)), tenant)
    except ValueError as exc:
        raise Unauthorized(f"incomplete identity: {exc}") from None


class InvalidUsersFile(FaceDedupError, ValueError):
    """The local users file is malformed: the server refuses to start rather than guess."""


@dataclass(frozen=True)
class LocalUser:
    name: str
    role: Role
    tenant: str
    expires_at: datetime | None = None


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._@-]{0,63}$")
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


def parse_users(raw: Any) -> dict[str, LocalUser]:
    """`{"users": [{"name", "role", "tenant", "token_sha256", "expires_at"?}]}`, checked whole:
    names and token hashes unique (a duplicate hash would make one token two people), roles
    known, tenants valid, expiry an ISO 8601 time with a zone."""
    if not isinstance(raw, dict) or not isinstance(raw.get("users"), list) or not raw["users"]:
        raise InvalidUsersFile('a users file is {"users": [ ... ]} with at least one user')
    users: dict[str, LocalUser] = {}
    names: set[str] = set()
    for index, entry in enumerate(raw["users"]):
        where = f"users[{index}]"
        if not isinstance(entry, dict):
            raise InvalidUsersFile(f"{where}: not an object")
        unknown = set(entry) - {"name", "role", "tenant", "token_sha256", "expires_at"}
        if unknown:
            raise InvalidUsersFile(f"{where}: unknown field(s) {sorted(unknown)}")
        name, digest = entry.get("name"), entry.get("token_sha256")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise InvalidUsersFile(f"{where}: name must be 1-64 letters, digits, space, . _ @ -")
        if name in names:
            raise InvalidUsersFile(f"{where}: name {name!r} appears twice")
        if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
            raise InvalidUsersFile(f"{where}: token_sha256 must be 64 lowercase hex digits")
        if digest in users:
            raise InvalidUsersFile(f"{where}: token_sha256 of {name!r} is also {users[digest].name!r}'s")
        try:
            role = Role(str(entry.get("role")))
            tenant = valid_tenant(entry.get("tenant"))
        except ValueError as exc:
            raise InvalidUsersFile(f"{where}: {exc}") from None
        expires_at = None
        if entry.get("expires_at") is not None:
            try:
                expires_at = datetime.fromisoformat(str(entry["expires_at"]))
            except ValueError:
                raise InvalidUsersFile(f"{where}: expires_at is not an ISO 8601 time") from None
            if expires_at.tzinfo is None:
                raise InvalidUsersFile(f"{where}: expires_at needs a time zone (e.g. Z or +00:00)")
        names.add(name)
        users[digest] = LocalUser(name, role, tenant, expires_at)
    return users


class LocalUsers:
    """LOCAL ONLY. Tokens are stored hashed and compared in constant time. Never use this in the
    cloud. A file it was loaded from is re-read when it changes, so removing a user (revoking a
    token) takes effect on the next request; a changed file that is invalid keeps the last good
    one and is reported by `reload_error`."""

    def __init__(self, users: dict[str, LocalUser], path: Path | None = None) -> None:
        self._by_digest = users
        self._path = path
        self._stamp = self._stat()
        self._lock = threading.Lock()
        self.reload_error: str | None = None

    @classmethod
    def load(cls, path: Path) -> LocalUsers:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise InvalidUsersFile(f"cannot read users file {path}: {exc}") from None
        return cls(parse_users(raw), path)

    def _stat(self) -> tuple[int, int] | None:
        if self._path is None:
            return None
        try:
            info = self._path.stat()
        except OSError:
            return None
        return (info.st_mtime_ns, info.st_size)

    def _refresh(self) -> None:
        stamp = self._stat()
        if self._path is None or stamp == self._stamp:
            return
        with self._lock:
            if stamp == self._stamp:
                return
            self._stamp = stamp
            try:
                self._by_digest = parse_users(json.loads(self._path.read_text(encoding="utf-8")))
                self.reload_error = None
            except (OSError, ValueError) as exc:
                self.reload_error = str(exc)

    @staticmethod
    def digest(token: str) -> str:
        return hashlib.sha256(token.encode("utf-8")).hexdigest()

    def authenticate(self, authorization: str | None, now: datetime | None = None) -> dict[str, str]:
        """The claims of the bearer token's user; Unauthorized (with a reason a person can act on,
        never echoing the token) otherwise."""
        if not authorization:
            raise Unauthorized("not signed in: no access token was sent")
        if not authorization.startswith("Bearer ") or len(authorization) > 4096:
            raise Unauthorized("the Authorization header must be 'Bearer <token>'")
        self._refresh()
        digest = self.digest(authorization.removeprefix("Bearer ").strip())
        match = None
        for known, user in self._by_digest.items():  # every entry: constant time per entry
            if hmac.compare_digest(known, digest):
                match = user
        if match is None:
            raise Unauthorized("unknown or revoked access token")
        if match.expires_at is not None and match.expires_at <= (now or datetime.now(UTC)):
            raise Unauthorized("access token expired: ask for a new one")
        return {
            "cognito:username": match.name,
            "cognito:groups": match.role.value,
            "custom:tenant": match.tenant,
        }

    def claims_for(self, authorization: str | None) -> dict[str, str] | None:
        try:
            return self.authenticate(authorization)
        except Unauthorized:
            return None

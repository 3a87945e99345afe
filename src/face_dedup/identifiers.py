"""One rule for identifiers that come from outside: application ids (manifests, uploads, the API,
MOSIP reference ids) and tenant names (settings, tokens).

An identifier ends up in storage keys, file names, log lines, reports and the officers' console, so
it is restricted to a small alphabet that is safe in all of them: it starts with a letter or digit
(never `.` or `-`, so never `..` or an option), then letters, digits, `.`, `_` and `-`. Anything
else is refused with `InvalidIdentifier`, never "cleaned": a cleaned id would silently name a
different person."""

from __future__ import annotations

import re

from face_dedup.errors import FaceDedupError

APPLICATION_ID_MAX = 64
TENANT_MAX = 63

# Pattern strings are exported too: the API's request models and the CDK stack use the same rule.
APPLICATION_ID_PATTERN = rf"^[A-Za-z0-9][A-Za-z0-9._-]{{0,{APPLICATION_ID_MAX - 1}}}$"
TENANT_PATTERN = rf"^[A-Za-z0-9][A-Za-z0-9_-]{{0,{TENANT_MAX - 1}}}$"

_APPLICATION_ID = re.compile(APPLICATION_ID_PATTERN)
_TENANT = re.compile(TENANT_PATTERN)


class InvalidIdentifier(FaceDedupError, ValueError):
    """An identifier from outside does not follow the rule. The message quotes it with repr()
    (escaped, truncated), so it is safe to print."""

    def __init__(self, kind: str, value: object) -> None:
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(
            f"invalid {kind} {shown}: use 1-{_limit(kind)} characters from letters, digits, "
            f"{_punctuation(kind)}, starting with a letter or digit"
        )
        self.kind = kind


def _punctuation(kind: str) -> str:
    return "'.', '_' and '-'" if kind == "application id" else "'_' and '-'"


def _limit(kind: str) -> int:
    return APPLICATION_ID_MAX if kind == "application id" else TENANT_MAX


def is_application_id(value: object) -> bool:
    return isinstance(value, str) and _APPLICATION_ID.fullmatch(value) is not None


def application_id(value: object) -> str:
    """Return `value` if it is a valid application id, else raise InvalidIdentifier."""
    if not is_application_id(value):
        raise InvalidIdentifier("application id", value)
    assert isinstance(value, str)
    return value


def tenant(value: object) -> str:
    """Return `value` if it is a valid tenant name, else raise InvalidIdentifier. No dots: a
    tenant is a folder name on one machine and a key prefix in the cloud (`..` must never pass)."""
    if not isinstance(value, str) or _TENANT.fullmatch(value) is None:
        raise InvalidIdentifier("tenant", value)
    return value

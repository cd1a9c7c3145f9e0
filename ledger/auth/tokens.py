"""Bearer tokens: `glt_<id>_<secret>`. The id names the token in lists and in the access log; only a
SHA-256 digest of the whole token is stored, so a copy of the database grants nothing."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

PREFIX = "glt_"
_TOKEN = re.compile(r"glt_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")


def new_token() -> tuple[str, str]:
    """A fresh (token id, token); the token is shown once and never stored."""
    token_id = secrets.token_hex(8)
    return token_id, f"{PREFIX}{token_id}_{secrets.token_urlsafe(32)}"


def token_id_of(token: str) -> str | None:
    """The id of a well-formed token; None for anything else (which no lookup can match)."""
    match = _TOKEN.fullmatch(token)
    return match.group(1) if match else None


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def matches(token: str, stored_digest: str) -> bool:
    return hmac.compare_digest(digest(token), stored_digest)

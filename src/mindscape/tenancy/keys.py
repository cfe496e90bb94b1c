"""API key format: `msk_<prefix>_<secret>`.

The prefix (12 hex characters) is public: it finds the row and names the key in lists and
logs. The secret (secrets.token_urlsafe(32): 256 random bits) is shown once and stored only
as its SHA-256; a fast hash is enough because the secret is random, not a password.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

PREFIX = "msk_"
_KEY_RE = re.compile(r"^msk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True)
class NewKey:
    prefix: str
    secret: str
    key_hash: bytes

    @property
    def token(self) -> str:
        """The full key; only ever printed once, never logged or stored."""
        return f"{PREFIX}{self.prefix}_{self.secret}"

    def __repr__(self) -> str:  # keep the secret out of tracebacks and debug output
        return f"NewKey(prefix={self.prefix!r})"


def generate() -> NewKey:
    secret = secrets.token_urlsafe(32)
    return NewKey(prefix=secrets.token_hex(6), secret=secret, key_hash=hash_secret(secret))


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("ascii")).digest()


def parse(token: str) -> tuple[str, str] | None:
    """(prefix, secret) of a well-formed key, else None."""
    match = _KEY_RE.match(token)
    return (match.group(1), match.group(2)) if match else None


def matches(secret: str, stored_hash: bytes) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)

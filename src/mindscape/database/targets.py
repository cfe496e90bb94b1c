"""Where to connect (runtime role vs owner), and how to print a connection URL safely."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

RUNTIME_ROLE = "mindscape_app"


@dataclass(frozen=True)
class Targets:
    """Where to connect: `runtime` as the unprivileged server role, `owner` for DDL and admin."""

    runtime: str
    owner: str
    embedded: bool
    # The runtime URL reaches PostgreSQL through a transaction-mode pooler (PgBouncer): runtime
    # connections keep no prepared statements and rely on no session state. The owner URL
    # (migrations, DDL, administration) always points at PostgreSQL itself.
    pooled: bool = False


def redact(url: str) -> str:
    """The URL without its password, fit for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" if parts.username else f"***@{host}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))

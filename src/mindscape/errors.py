"""Errors Mindscape raises on purpose.

MindscapeError                 anything we anticipated; its message is safe to show
├── StartupError               the process cannot start (config, database, schema, tenant)
├── InvalidArgument            the caller sent something we refuse (bad cursor, bad filter...)
├── NotFound                   the named thing does not exist for this tenant
├── TenantUnavailable          the tenant is unknown or disabled
├── QuotaExceeded              the tenant is over one of its limits (quotas.limits)
├── ImportFileError            an import file is malformed; carries line-numbered problems
└── Unavailable                the database cannot serve this call now; a retry later may succeed
    ├── ServerBusy             every connection of the pool stayed in use for pool_acquire_timeout_s
    ├── ShuttingDown           the server is stopping: its pool is closed
    └── CommitUnknown          the connection failed while committing: the change may have been saved

Database errors themselves (asyncpg's) are not wrapped: app.errors classifies them where they
become answers. The `Unavailable` family exists for what only the code that saw it can know.

Messages never contain another tenant's data: they only echo what the caller sent.
"""

from __future__ import annotations


class MindscapeError(Exception):
    """An anticipated failure whose message is meant for the caller."""


class StartupError(MindscapeError):
    pass


class InvalidArgument(MindscapeError):
    pass


class NotFound(MindscapeError):
    pass


class TenantUnavailable(MindscapeError):
    pass


class QuotaExceeded(MindscapeError):
    """`limit` names the quota; `retry_after` (seconds) is set when waiting helps (calls per minute)."""

    def __init__(self, message: str, *, limit: str, value: int, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.limit = limit
        self.value = value
        self.retry_after = retry_after


class ImportFileError(MindscapeError):
    def __init__(self, path: str, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{path} was not imported ({len(problems)} problem(s)); nothing was written:\n{lines}")


class Unavailable(MindscapeError):
    """Temporary: retrying in `retry_after` seconds is expected to work."""

    retry_after = 2


class DatabaseUnreachable(Unavailable):
    """No connection could be opened: refused, or the socket file gone (the server is down or restarting)."""

    def __init__(self) -> None:
        super().__init__("the database cannot be reached (it may be restarting)")


class ServerBusy(Unavailable):
    retry_after = 1

    def __init__(self, waited_s: float) -> None:
        super().__init__(f"every database connection of this server stayed in use for {waited_s:g} s")
        self.waited_s = waited_s


class ShuttingDown(Unavailable):
    def __init__(self) -> None:
        super().__init__("the server is shutting down")


class CommitUnknown(Unavailable):
    """Raised from the database failure that interrupted COMMIT (its `__cause__`)."""

    def __init__(self) -> None:
        super().__init__("the database connection failed while the change was being committed")

"""Errors Mindscape raises on purpose.

MindscapeError                 anything we anticipated; its message is safe to show
├── StartupError               the process cannot start (config, database, schema, tenant)
├── InvalidArgument            the caller sent something we refuse (bad cursor, bad filter...)
├── NotFound                   the named thing does not exist for this tenant
├── TenantUnavailable          the tenant is unknown or disabled
├── QuotaExceeded              the tenant is over one of its limits (quotas.limits)
└── ImportFileError            an import file is malformed; carries line-numbered problems

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

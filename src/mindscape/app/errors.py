"""The one place where failures become MCP errors, and where the HTTP refusals get their words.

Tools, resources and prompts raise domain errors (mindscape.errors) or let database errors
escape; MindscapeServer catches what its three entry points raise and calls `mcp_error`. The
first anticipated failure in the exception's cause chain decides:

    a ToolError / ResourceError     -> None: already an MCP error with its own message
    Unavailable (and its kinds)     -> temporary: "... Retry in N s", see `temporary`
    MindscapeError (NotFound)       -> its own message (resources: not found, -32602)
    InvalidArgument                 -> its own message (resources and prompts: invalid params, -32602)
    MindscapeError (anything else)  -> its own message
    pydantic ValidationError        -> app.validation's text (a prompt's arguments), invalid params
    a database failure a retry can fix (lost connection, restart, 57P01/57P03, read-only
    standby, too many connections, serialization failure, statement timeout, asyncpg's
    InternalClientError...)         -> temporary
    any other exception             -> INTERNAL; logged with its traceback for the operator

A temporary failure is one clear answer on every transport: for a tool an `isError` result
saying what happened, whether anything was saved, when to retry and, for a write, how to retry
safely (its idempotency key or expected version); for a resource or prompt a JSON-RPC error with
code UNAVAILABLE and `data: {"temporary": true, "retry_after": N, "reason": ...}`. Before a call
runs (credential checks, limits) the HTTP layer answers the same way as an HTTP 503 with
Retry-After (transports.http.refusals.unavailable_response, using `temporary` and `describe`).
Never the SDK's generic "Error executing tool", never a traceback for the client.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg
from asyncpg.exceptions import _base as asyncpg_base  # pyright: ignore[reportPrivateUsage]
from mcp.server.mcpserver.exceptions import (
    ResourceError,
    ResourceNotFoundError,
    ToolError,
    UnexpectedResourceError,
    UnexpectedToolError,
)
from mcp.shared.exceptions import MCPError
from mcp.types import INTERNAL_ERROR, INVALID_PARAMS
from pydantic import ValidationError

from mindscape.app import validation
from mindscape.errors import (
    CommitUnknown,
    InvalidArgument,
    MindscapeError,
    NotFound,
    ServerBusy,
    ShuttingDown,
    Unavailable,
)

log = logging.getLogger(__name__)

Kind = Literal["tool", "resource", "prompt", "completion"]
Reason = Literal[
    "database_unavailable", "server_busy", "shutting_down", "statement_timeout", "conflict", "issuer_unavailable"
]
UNAVAILABLE = -32003  # JSON-RPC server-error range; unused by the MCP SDK (-32000 is our quota refusal)
INTERNAL = "internal error; it was logged for the operator. Retry later, or report it if it persists"
_MAX_CHAIN = 8  # the SDK wraps a prompt's exception twice; our own code never nests deeper

# asyncpg's InterfaceErrors that are a caller's mistake, not a connection's state.
_MISUSE = (asyncpg_base.DataError, asyncpg.ClientConfigurationError, asyncpg_base.UnsupportedClientFeatureError)

# How a write can be retried safely once its outcome is unknown (the connection failed during
# COMMIT). Tools not listed are reads, or writes that are harmless to repeat.
RETRY_SAFELY = {
    "create_task": "retry with the same idempotency_key: it returns the task if it was created (duplicate=true) "
    "and never creates a second one",
    "remember": "remembering the same content again returns the stored memory if it was saved (duplicate=true)",
    "update_task": "retry with the same expected_version: if the change was saved you get a version conflict, "
    "and get_task shows the task as it is",
    "update_campaign": "retry with the same expected_version: if the change was saved you get a version conflict, "
    "and get_campaign shows the campaign as it is",
    "create_campaign": "list_campaigns shows whether it was created before you retry",
    "claim_next_task": "if the claim was saved, the task is in progress for you until its lease ends "
    "(list_tasks with status='in_progress' shows it)",
}
_IDEMPOTENCY_KEY = {"create_task": "with the same idempotency_key a retry never creates a second task"}


@dataclass(frozen=True)
class Temporary:
    """A failure that retrying later is expected to fix."""

    what: str  # what happened, for a person: "the database connection was lost"
    reason: Reason
    retry_after: int  # seconds
    outcome_unknown: bool = False  # a write whose COMMIT may have been saved

    @property
    def data(self) -> dict[str, Any]:
        """The machine-readable part of a JSON-RPC error (resources, prompts, HTTP refusals)."""
        return {"temporary": True, "reason": self.reason, "retry_after": self.retry_after}


def temporary(exc: BaseException) -> Temporary | None:
    """Whether `exc` (or an exception in its cause chain) is temporary, and how to say so."""
    cause: BaseException | None = exc
    for _ in range(_MAX_CHAIN):
        if cause is None:
            return None
        found = _classify(cause)
        if found is not None:
            return found
        cause = cause.__cause__
    return None


def _classify(exc: BaseException) -> Temporary | None:
    if isinstance(exc, CommitUnknown):
        underneath = temporary(exc.__cause__) if exc.__cause__ is not None else None
        what = f"{underneath.what} while the change was being committed" if underneath else str(exc)
        return Temporary(what, "database_unavailable", exc.retry_after, outcome_unknown=True)
    if isinstance(exc, ServerBusy):
        return Temporary(str(exc), "server_busy", exc.retry_after)
    if isinstance(exc, ShuttingDown):
        return Temporary(str(exc), "shutting_down", exc.retry_after)
    if isinstance(exc, Unavailable):
        return Temporary(str(exc), "database_unavailable", exc.retry_after)
    if isinstance(exc, MindscapeError):
        return None
    # asyncpg may raise one error from another (a lost connection from the FATAL that ended it):
    # the innermost one says best what happened.
    deeper = _classify(exc.__cause__) if exc.__cause__ is not None else None
    if deeper is not None:
        return deeper
    if isinstance(exc, asyncpg.QueryCanceledError):
        return Temporary("the database took longer than the statement timeout", "statement_timeout", 1)
    if isinstance(exc, asyncpg.PostgresError):
        return _by_sqlstate(exc.sqlstate or "")
    if isinstance(exc, asyncpg.InterfaceError) and not isinstance(exc, _MISUSE):
        return Temporary("the database connection was lost", "database_unavailable", 2)
    if isinstance(exc, asyncpg.InternalClientError | ConnectionError):
        return Temporary("the database connection was lost", "database_unavailable", 2)
    return None


def _by_sqlstate(state: str) -> Temporary | None:
    if state.startswith("08"):  # connection exceptions
        return Temporary("the database connection was lost", "database_unavailable", 2)
    if state in ("57P01", "57P02", "57P03"):  # admin shutdown (pg_terminate_backend too), crash, starting up
        return Temporary("the database is restarting or ended this connection", "database_unavailable", 2)
    if state == "25006":  # read_only_sql_transaction: a standby, or a primary demoted during a failover
        return Temporary("the database is read-only right now (a standby, or a failover)", "database_unavailable", 2)
    if state.startswith("53"):  # insufficient resources: too many connections, out of memory or disk
        return Temporary("the database is out of resources (e.g. connections)", "database_unavailable", 2)
    if state.startswith("40") or state == "55P03":  # serialization failure, deadlock, lock not available
        return Temporary("the change conflicted with a concurrent one", "conflict", 1)
    return None


def describe(found: Temporary, *, tool: str | None = None) -> str:
    """The message an agent (or a person) reads: what happened, what was saved, when and how to retry."""
    if found.reason == "shutting_down":
        saved = "if this was a write, it may or may not have been saved"
        return f"temporarily unavailable: {found.what}; {saved}. Retry in {found.retry_after} s" + _how(tool, True)
    if found.outcome_unknown:
        return (
            f"temporarily unavailable: {found.what}, so it may or may not have been saved. "
            f"Retry in {found.retry_after} s" + _how(tool, True)
        )
    hint = f" ({_IDEMPOTENCY_KEY[tool]})" if tool in _IDEMPOTENCY_KEY else ""
    narrow = "; if it happens again, narrow the request" if found.reason == "statement_timeout" else ""
    return (
        f"temporarily unavailable: {found.what}; nothing was changed. "
        f"Retrying in {found.retry_after} s is safe{hint}{narrow}"
    )


def _how(tool: str | None, unknown: bool) -> str:
    advice = RETRY_SAFELY.get(tool or "") if unknown else None
    return f": {advice}" if advice else ""


def agent_error(
    kind: Kind, message: str, *, not_found: bool = False, internal: bool = False, invalid: bool = False
) -> Exception:
    """The exception that carries `message` to the client for this kind of call."""
    if kind == "tool":
        return ToolError(message)
    if kind == "resource" and not invalid:
        return ResourceNotFoundError(message) if not_found else ResourceError(message)
    return MCPError(INTERNAL_ERROR if internal else INVALID_PARAMS, message)


def mcp_error(
    kind: Kind, exc: BaseException, *, name: str | None = None, target: str = "this call"
) -> Exception | None:
    """The MCP error for `exc`; None when it already is one.

    `name`: the tool, resource URI or prompt; `target` names the call in a validation message
    ("prompt persona").
    """
    cause: BaseException | None = exc
    for _ in range(_MAX_CHAIN):
        if cause is None:
            break
        if isinstance(cause, ToolError | ResourceError) and not isinstance(
            cause, UnexpectedToolError | UnexpectedResourceError
        ):
            return None  # already an MCP error with its own message
        found = _classify(cause)
        if found is not None:
            return unavailable_error(kind, found, exc, name=name)
        if isinstance(cause, MindscapeError):
            return agent_error(
                kind, str(cause), not_found=isinstance(cause, NotFound), invalid=isinstance(cause, InvalidArgument)
            )
        if isinstance(cause, ValidationError):
            return agent_error(kind, validation.describe(target, cause), invalid=True)
        cause = cause.__cause__
    # Unanticipated: a defect, or a database error no retry fixes (a permission, a constraint).
    log.error("%s %s failed unexpectedly", kind, name or "call", exc_info=exc)
    return agent_error(kind, INTERNAL, internal=True)


def unavailable_error(kind: Kind, found: Temporary, exc: BaseException, *, name: str | None = None) -> Exception:
    """A temporary failure as this kind of call reports it; logged in one line, without a traceback."""
    root = _root(exc)
    log.warning("%s %s: temporarily unavailable (%s: %s)", kind, name or "call", type(root).__name__, str(root)[:200])
    message = describe(found, tool=name if kind == "tool" else None)
    if kind == "tool":
        return ToolError(message)
    return MCPError(UNAVAILABLE, message, found.data)


def _root(exc: BaseException) -> BaseException:
    """The innermost cause, what the database (or socket) actually said: for the log."""
    for _ in range(_MAX_CHAIN):
        if exc.__cause__ is None:
            return exc
        exc = exc.__cause__
    return exc

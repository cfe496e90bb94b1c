"""The one place where failures become MCP errors.

Tools, resources and prompts raise domain errors (mindscape.errors) or let database errors
escape; MindscapeServer catches what its three entry points raise and calls `mcp_error`:

    MindscapeError (NotFound)       -> its own message (resources: not found, -32602)
    InvalidArgument                 -> its own message (resources and prompts: invalid params, -32602)
    MindscapeError (anything else)  -> its own message
    pydantic ValidationError        -> app.validation.describe's text (a prompt's arguments)
    asyncpg.QueryCanceledError      -> "took longer than the statement timeout"
    other database / socket errors  -> a generic message; the details go to the log (stderr)
    a ToolError / ResourceError     -> None: already an MCP error with its message
    anything else                   -> None: a crash, left to the SDK (generic text, traceback logged)

Each MCP primitive reports errors its own way: tools as `isError` results, resources and
prompts as JSON-RPC errors.
"""

from __future__ import annotations

import logging
from typing import Literal

import asyncpg
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

from mindscape.app.validation import describe
from mindscape.errors import InvalidArgument, MindscapeError, NotFound

log = logging.getLogger(__name__)

Kind = Literal["tool", "resource", "prompt"]
TIMEOUT = "the database took longer than the statement timeout; narrow the request and retry"
INTERNAL = "internal error; it was logged for the operator. Retry later, or report it if it persists"
DATABASE_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)
_MAX_CHAIN = 8  # the SDK wraps a prompt's exception twice; our own code never nests deeper


def agent_error(
    kind: Kind, message: str, *, not_found: bool = False, internal: bool = False, invalid: bool = False
) -> Exception:
    """The exception that carries `message` to the client for this kind of call."""
    if kind == "tool":
        return ToolError(message)
    if kind == "resource" and not invalid:
        return ResourceNotFoundError(message) if not_found else ResourceError(message)
    return MCPError(INTERNAL_ERROR if internal else INVALID_PARAMS, message)


def mcp_error(kind: Kind, exc: BaseException, *, target: str = "this call") -> Exception | None:
    """The MCP error for the first anticipated failure in `exc`'s cause chain; None for a crash.

    `target` names the call in a validation message ("prompt persona").
    """
    cause: BaseException | None = exc
    for _ in range(_MAX_CHAIN):
        if cause is None:
            return None
        if isinstance(cause, ToolError | ResourceError) and not isinstance(
            cause, UnexpectedToolError | UnexpectedResourceError
        ):
            return None  # already an MCP error with its own message
        if isinstance(cause, MindscapeError):
            return agent_error(
                kind, str(cause), not_found=isinstance(cause, NotFound), invalid=isinstance(cause, InvalidArgument)
            )
        if isinstance(cause, ValidationError):
            return agent_error(kind, describe(target, cause), invalid=True)
        if isinstance(cause, asyncpg.QueryCanceledError):
            return agent_error(kind, TIMEOUT)
        if isinstance(cause, DATABASE_ERRORS):
            log.error("database failure during a %s call", kind, exc_info=cause)
            return agent_error(kind, INTERNAL, internal=True)
        cause = cause.__cause__
    return None

"""A tenant's limits over HTTP: 429 with Retry-After, before the MCP handler sees the request.

An ASGI middleware placed inside the SDK's authentication middleware (transports.http.stack), so
`scope["user"]` holds the verified access token (and so the tenant). For a POST it reads the body
(and replays it unchanged to the app) and checks, in this order:

1. max_concurrent_calls: each tools/call, resources/read and prompts/get takes one of the tenant's
   call slots (quotas.concurrency); the call adopts it and gives it back when its work is done;
2. db_ms_per_second: a tenant over its share of database time while a lighter tenant is active is
   refused (quotas.db_time); each admitted call is reserved as a running call, adopted by the call;
3. calls_per_minute: those three methods and `initialize` (a new session costs the server more
   than most calls) are counted (quotas.call_rate);
4. max_sessions: a new Streamable HTTP session over the tenant's limit is refused where the SDK
   admits it (transports.http.sessions), and answered here.

A legacy SSE stream (GET /sse) is one session: it holds one of the tenant's session slots for as
long as it is open. Everything else (lists, notifications, other GETs, unauthenticated requests)
passes straight through. Every refusal is a 429 with Retry-After and a JSON-RPC error naming the
limit, the same for every key of the tenant.
"""

from __future__ import annotations

import json
from typing import Any, cast

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mindscape.app.identity import caller_from_token
from mindscape.errors import QuotaExceeded
from mindscape.quotas import concurrency, db_time, sessions
from mindscape.quotas.call_rate import CallQuota
from mindscape.quotas.concurrency import ConcurrentCalls, Slot
from mindscape.quotas.db_time import DbTimeBudget, Run
from mindscape.quotas.sessions import OpenSessions
from mindscape.tenancy.caller import Caller
from mindscape.transports.http.sessions import SessionRefused

WORK = frozenset({"tools/call", "resources/read", "prompts/get"})  # hold a call slot while they run
NAMED = frozenset({"tools/call", "prompts/get"})  # their `name` is part of the call's kind
COUNTED = WORK | {"initialize"}  # count against calls_per_minute
QUOTA_ERROR_CODE = -32000  # JSON-RPC "server error" range


class TenantLimits:
    def __init__(
        self,
        app: ASGIApp,
        *,
        calls: CallQuota,
        running: ConcurrentCalls,
        open_sessions: OpenSessions,
        db_budget: DbTimeBudget | None = None,
        sse_stream_path: str | None = None,
    ) -> None:
        self._app = app
        self._calls = calls
        self._running = running
        self._sessions = open_sessions
        self._db_budget = db_budget
        self._sse_stream_path = sse_stream_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        user = scope.get("user")
        if scope["type"] != "http" or not isinstance(user, AuthenticatedUser):
            await self._app(scope, receive, send)
            return
        caller = caller_from_token(user.access_token)
        if scope["method"] == "GET" and scope["path"] == self._sse_stream_path:
            await self._sse_stream(caller, scope, receive, send)
        elif scope["method"] == "POST":
            await self._post(caller, scope, receive, send)
        else:
            await self._app(scope, receive, send)

    async def _post(self, caller: Caller, scope: Scope, receive: Receive, send: Send) -> None:
        messages, body = await _read_body(receive)
        replay = _replayer(messages, receive)
        requests = _requests(body)
        counted = [(method, rid, name) for method, rid, name in requests if method in COUNTED]
        reserved: list[Slot] = []
        runs: list[Run] = []
        try:
            if counted:
                limits = await self._calls.limits(caller.tenant_id)  # also makes known_limits current
                try:
                    for method, _, _ in counted:
                        if method in WORK:
                            limit = limits.max_concurrent_calls.value
                            reserved.append(self._running.take(caller.tenant_id, caller.tenant_slug, limit))
                    if self._db_budget is not None:  # before calls are counted: a refusal costs none
                        per_second = limits.db_ms_per_second.value
                        for method, _, name in counted:
                            if method in WORK:
                                kind = db_time.call_kind(method, name)
                                runs.append(
                                    self._db_budget.admit(caller.tenant_id, caller.tenant_slug, per_second, kind)
                                )
                    for _ in counted:
                        await self._calls.check(caller.tenant_id, caller.tenant_slug)
                except QuotaExceeded as exc:
                    await _too_many(exc, counted[0][1])(scope, replay, send)
                    return
            token = concurrency.reserved_slots.set(reserved)
            run_token = db_time.reserved_runs.set(runs)
            try:
                await self._app(scope, replay, send)
            except SessionRefused as exc:  # raised before the SDK sent anything
                await _too_many(exc.quota, counted[0][1] if counted else None)(scope, replay, send)
            finally:
                db_time.reserved_runs.reset(run_token)
                concurrency.reserved_slots.reset(token)
        finally:
            for slot in reserved:
                if not slot.adopted:  # the request never reached a call (or the call found no slot)
                    slot.release()
            for run in runs:
                if not run.adopted:
                    run.end()

    async def _sse_stream(self, caller: Caller, scope: Scope, receive: Receive, send: Send) -> None:
        """A legacy SSE session lives exactly as long as its GET stream: one slot for that long."""
        limit = (await self._calls.limits(caller.tenant_id)).max_sessions.value
        stream = object()
        if not self._sessions.open(caller.tenant_id, stream, limit):
            await _too_many(sessions.over_limit(caller.tenant_slug, limit), None)(scope, receive, send)
            return
        try:
            await self._app(scope, receive, send)
        finally:
            self._sessions.close(stream)


async def _read_body(receive: Receive) -> tuple[list[Message], bytes]:
    """The request's messages as received, and its body (up to the SDK's own body limit)."""
    messages: list[Message] = []
    body = bytearray()
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break  # a disconnect: let the app see it
        body += message.get("body", b"")
        if not message.get("more_body", False) or len(body) > DEFAULT_MAX_REQUEST_BODY_SIZE:
            break  # past the limit the SDK refuses the request anyway; the rest is streamed through
    return messages, bytes(body)


def _replayer(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replay() -> Message:
        return pending.pop(0) if pending else await receive()

    return replay


def _requests(body: bytes) -> list[tuple[str, Any, str]]:
    """(method, id, the tool's or prompt's name) of the JSON-RPC messages in a body (a message or a
    batch); malformed bodies hold none."""
    try:
        parsed: Any = json.loads(body)
    except ValueError:
        return []  # the SDK answers malformed JSON itself
    items: list[Any] = parsed if isinstance(parsed, list) else [parsed]  # pyright: ignore[reportUnknownVariableType]
    found: list[tuple[str, Any, str]] = []
    for item in items:
        if isinstance(item, dict):
            message: dict[str, Any] = item  # pyright: ignore[reportUnknownVariableType]
            method = message.get("method")
            if isinstance(method, str):
                found.append((method, message.get("id"), _name(method, message.get("params"))))
    return found


def _name(method: str, params: Any) -> str:
    """A tools/call's or prompts/get's `name` (not checked here: the SDK refuses a bad one); no
    other method's, so a client cannot file a call under a kind of its choosing (db_time.call_kind)."""
    if method not in NAMED or not isinstance(params, dict):
        return ""
    name = cast(dict[str, Any], params).get("name")
    return name if isinstance(name, str) else ""


def _too_many(exc: QuotaExceeded, request_id: Any) -> JSONResponse:
    retry_after = exc.retry_after or 1
    return JSONResponse(
        {
            "jsonrpc": "2.0",
            "id": request_id,
            "error": {
                "code": QUOTA_ERROR_CODE,
                "message": str(exc),
                "data": {"limit": exc.limit, "value": exc.value, "retry_after": retry_after},
            },
        },
        status_code=429,
        headers={"Retry-After": str(retry_after)},
    )

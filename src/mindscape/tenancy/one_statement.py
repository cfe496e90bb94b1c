"""A read that is one query, or a write that is one script, in one round trip: context and
query in one statement.

A tenant transaction costs BEGIN, the context statement, the query and the end: four round
trips for a read such as get_persona. Here the query's own SQL constant becomes a function in
the connection's temporary schema (generated on the connection's first use of it, so the SQL
stays next to the Python that runs it). The function sets read-only, role, tenant and
principal transaction-locally, checks the tenant is active, then runs the query as written. The
call is one statement outside any explicit transaction: its implicit transaction ends with it, so
every setting is gone when the answer arrives and the session needs no reset.

It is used only where it keeps every guarantee of tenant_transaction:
- the statement timeout: one set inside a statement does not govern that statement, so the
  connection's session must already have the call's timeout (database.pool.create_pool's
  `statement_timeout_ms`); any other connection takes the four-round-trip path;
- a direct connection: through a transaction-mode pooler a temporary function would live on one
  server connection only; and one that can create it (a hot standby cannot): a connection that
  fails to is not asked again.

A write (`tenant_write`, a `Script`: several statements in plpgsql) is made into a function the
same way, without read-only. What a transaction's caller decides from the tenant's settings (its
limits, its model) the write's caller decides from the settings it last saw, which the function
compares with the tenant's current ones before writing anything; if they differ, or the
connection cannot run it, nothing is written and the caller writes in a transaction instead.
The statement commits as it ends, so a connection lost under it is CommitUnknown, as a COMMIT is.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import AsyncGenerator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import asyncpg
from anyio.abc import TaskGroup
from asyncpg import Record

from mindscape.database.pool import (
    FAILURES,
    Pool,
    PooledConnection,
    Reader,
    acquire,
    counted,
    discard,
    end,
    release,
)
from mindscape.database.scripts import Script, literal
from mindscape.errors import CommitUnknown, InvalidArgument, TenantUnavailable
from mindscape.queries.settings import set_locally
from mindscape.tenancy.caller import Caller
from mindscape.tenancy.transaction import context_values, server_answered, set_context, transaction_on, unavailable

log = logging.getLogger(__name__)

# Raised by the function when the tenant is disabled or gone (codes of our own, class "MS"), and
# by a write's when the tenant's settings are no longer those the caller saw.
TENANT_UNAVAILABLE = "MS403"
SETTINGS_CHANGED = "MS412"

# tenant_context's arguments: the context as tenant_transaction's SET_CONTEXT sets it, less the
# statement timeout (the session's governs); `mindscape_ctx__` holds context_values() in order.
CONTEXT = """mindscape.tenant_context({first}
      set_config('role', 'mindscape_tenant', true),
      set_config('app.tenant_id', mindscape_ctx__[1], true),
      set_config('app.principal', mindscape_ctx__[2], true),
      set_config('app.call', mindscape_ctx__[4], true),
      set_config('app.source', mindscape_ctx__[5], true),
      set_config('app.persona', mindscape_ctx__[6], true),
      set_config('app.client_name', mindscape_ctx__[7], true),
      set_config('app.client_version', mindscape_ctx__[8], true),
      set_config('app.all_memories', mindscape_ctx__[9], true)
  ) c"""

# A read: read-only comes first, so nothing after it can write.
FUNCTION = """
CREATE OR REPLACE FUNCTION pg_temp.{name}({parameters}mindscape_ctx__ text[]) RETURNS SETOF record
LANGUAGE plpgsql{settings} AS $mindscape_read$
DECLARE
  mindscape_active__ boolean;
BEGIN
  SELECT c.status = 'active' INTO mindscape_active__
  FROM {context};
  IF mindscape_active__ IS NOT TRUE THEN
    RAISE EXCEPTION 'tenant unavailable' USING ERRCODE = '{unavailable}';
  END IF;
  RETURN QUERY {query};
END
$mindscape_read$
"""
READ_CONTEXT = CONTEXT.format(first="\n      set_config('transaction_read_only', 'on', true),")

# A write (a Script): its statements run only if the tenant's settings are still those the caller
# decided with (`mindscape_seen__`: limits, model), else SETTINGS_CHANGED and nothing is written.
WRITE_FUNCTION = """
CREATE OR REPLACE FUNCTION pg_temp.{name}({parameters}mindscape_ctx__ text[], mindscape_seen__ jsonb)
RETURNS SETOF record LANGUAGE plpgsql AS $mindscape_write$
DECLARE
  mindscape_active__ boolean;
  mindscape_same__ boolean;{declare}
BEGIN
  SELECT c.status = 'active', c.settings = mindscape_seen__ INTO mindscape_active__, mindscape_same__
  FROM {context};
  IF mindscape_active__ IS NOT TRUE THEN
    RAISE EXCEPTION 'tenant unavailable' USING ERRCODE = '{unavailable}';
  END IF;
  IF mindscape_same__ IS NOT TRUE THEN
    RAISE EXCEPTION 'tenant settings changed' USING ERRCODE = '{changed}';
  END IF;
{body}
END
$mindscape_write$
"""

# A connection that fails to create a function with one of these can create none: it is not asked again.
CANNOT_CREATE = frozenset({"25006", "42501"})  # read-only (a hot standby), no TEMP privilege

# A setting's name, as a function's SET clause takes it (the values are quoted).
SETTING_NAME = re.compile(r"[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?")

TYPE_NAMES = "SELECT format_type(t.oid, NULL) FROM unnest($1::oid[]) WITH ORDINALITY AS t(oid, n) ORDER BY t.n"


@dataclass(frozen=True)
class TenantRead:
    """A read as a tenant: `conn` runs its one query, `tenant_id` is the caller's tenant."""

    conn: Reader
    tenant_id: UUID


@dataclass(frozen=True)
class _Compiled:
    name: str
    create: str  # CREATE FUNCTION ...
    call: str  # SELECT * FROM pg_temp.name($1, ...) AS t(...)


Settings = Mapping[str, str]
# Per process: the SQL of a query and its settings -> its function, the same on every connection.
_COMPILED: dict[tuple[str, tuple[tuple[str, str], ...]], _Compiled] = {}


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _set_clauses(settings: Settings) -> str:
    """The function's SET clauses: in effect while it runs, so for its query's planning too."""
    for name in settings:
        if not SETTING_NAME.fullmatch(name):
            raise ValueError(f"bad setting name {name!r}")
    return "".join(f"\nSET {name} = {literal(value)}" for name, value in sorted(settings.items()))


def _key(query: str, settings: Settings) -> tuple[str, tuple[tuple[str, str], ...]]:
    return query, tuple(sorted(settings.items()))


async def _compile(conn: PooledConnection, query: str, settings: Settings) -> _Compiled:
    key = _key(query, settings)
    known = _COMPILED.get(key)
    if known is not None:
        return known
    if "$mindscape_read$" in query:
        raise ValueError("a one-statement query cannot contain the function's quote")
    clauses = _set_clauses(settings)
    statement = await conn.prepare(query)
    parameters = [p.oid for p in statement.get_parameters()]
    columns = list(statement.get_attributes())
    names: list[str] = [r[0] for r in await conn.fetch(TYPE_NAMES, parameters + [c.type.oid for c in columns])]
    parameter_types, column_types = names[: len(parameters)], names[len(parameters) :]
    # The types are part of the name: a query whose types changed (a migration while serving) is another function.
    name = "mindscape_read_" + hashlib.sha256("\0".join([query, clauses, *names]).encode()).hexdigest()[:16]
    definition = ", ".join(f"{_quote(c.name)} {t}" for c, t in zip(columns, column_types, strict=True))
    placeholders = ", ".join(f"${i}" for i in range(1, len(parameters) + 2))
    compiled = _Compiled(
        name=name,
        create=FUNCTION.format(
            name=name,
            parameters="".join(f"{t}, " for t in parameter_types),
            settings=clauses,
            context=READ_CONTEXT,
            unavailable=TENANT_UNAVAILABLE,
            query=query.strip(),
        ),
        call=f"SELECT * FROM pg_temp.{name}({placeholders}) AS t({definition})",
    )
    _COMPILED[key] = compiled
    return compiled


_SCRIPTS: dict[Script, _Compiled] = {}
_FAILED: set[str] = set()  # functions whose creation failed in this process (logged once)


def _compile_script(script: Script) -> _Compiled:
    known = _SCRIPTS.get(script)
    if known is not None:
        return known
    if "$mindscape_write$" in script.body:
        raise ValueError("a script cannot contain the function's quote")
    declare = "".join(f"\n  {line.strip()}" for line in script.declare.strip().splitlines())
    types = [t.strip() for t in script.parameters.split(",")]
    text = "\0".join([*types, script.returns, declare, script.body])
    name = "mindscape_write_" + hashlib.sha256(text.encode()).hexdigest()[:16]
    placeholders = ", ".join(f"${i}" for i in range(1, len(types) + 3))
    compiled = _Compiled(
        name=name,
        create=WRITE_FUNCTION.format(
            name=name,
            parameters="".join(f"{t}, " for t in types),
            declare=declare,
            context=CONTEXT.format(first=""),
            unavailable=TENANT_UNAVAILABLE,
            changed=SETTINGS_CHANGED,
            body=script.body.strip("\n"),
        ),
        call=f"SELECT * FROM pg_temp.{name}({placeholders}) AS t({script.returns})",
    )
    _SCRIPTS[script] = compiled
    return compiled


async def _created(conn: PooledConnection, compiled: _Compiled) -> bool:
    """Whether `compiled`'s function exists on `conn`, made now if need be; False if it could not be.
    A connection that fails with CANNOT_CREATE is not asked again."""
    session = counted(conn)
    if compiled.name in session.functions:
        return True
    try:
        await conn.execute(compiled.create)
    except asyncpg.PostgresError as exc:
        if exc.sqlstate in CANNOT_CREATE:
            session.no_functions = True
            log.info("one-statement calls are off on a connection that cannot create functions (%s)", exc.sqlstate)
        elif compiled.name not in _FAILED:
            _FAILED.add(compiled.name)  # once a process: a function that cannot be made is a defect to see
            log.warning("could not make %s (%s); its calls run in transactions", compiled.name, exc.sqlstate)
        return False
    session.functions.add(compiled.name)
    return True


@dataclass
class OneQuery:
    """A pooled connection that runs exactly one query, through its function, with the context."""

    conn: PooledConnection
    caller: Caller
    context: list[str]
    settings: Settings = field(default_factory=lambda: {})
    ran: bool = field(default=False)
    pending: bool = field(default=False)
    succeeded: bool = field(default=False)

    async def fetch(self, query: str, *args: Any) -> list[Record]:
        if self.ran:
            raise RuntimeError("a one-statement read runs one query; use tenant_transaction for more")
        self.ran = True
        self.pending = True  # until the server has answered: if the wait ends otherwise, discard
        try:
            rows = await self._fetch(query, args)
        except asyncpg.PostgresError as exc:
            self.pending = False  # answered: the statement's own transaction was rolled back
            if exc.sqlstate == TENANT_UNAVAILABLE:
                raise unavailable(self.caller) from None
            raise
        except TenantUnavailable:
            self.pending = False  # the fallback's refusal, its transaction ended
            raise
        self.pending = False
        self.succeeded = True
        return rows

    async def _fetch(self, query: str, args: tuple[Any, ...]) -> list[Record]:
        session = counted(self.conn)
        if session.no_functions:
            return await self._in_transaction(query, args)
        compiled = await _compile(self.conn, query, self.settings)
        if not await _created(self.conn, compiled):
            # Anything but a connection that can create none (a timeout, a deadlock, out of memory,
            # this query's function): this read only, in a transaction; the others stay one statement.
            return await self._in_transaction(query, args)
        # Either failure below is made good once; the failed statement was its own transaction and did nothing.
        try:
            return await self.conn.fetch(compiled.call, *args, self.context)
        except asyncpg.UndefinedFunctionError:
            # The session lost its temporary functions (DISCARD TEMP or ALL): made again. (If the
            # query itself raised it, OR REPLACE lets the second try raise the query's own error.)
            session.functions.clear()
        except asyncpg.DatatypeMismatchError:
            # "structure of query does not match function result type": the query's result types
            # changed since it was compiled (a migration while serving): compiled again.
            _COMPILED.pop(_key(query, self.settings), None)
            compiled = await _compile(self.conn, query, self.settings)
        await self.conn.execute(compiled.create)
        session.functions.add(compiled.name)
        return await self.conn.fetch(compiled.call, *args, self.context)

    async def fetchrow(self, query: str, *args: Any) -> Record | None:
        rows = await self.fetch(query, *args)
        return rows[0] if rows else None

    async def _in_transaction(self, query: str, args: tuple[Any, ...]) -> list[Record]:
        # As tenant_transaction does it, on this connection: BEGIN, context, query, end.
        await self.conn.execute("BEGIN READ ONLY")
        try:
            await set_context(self.conn, self.caller, self.context)
            await set_locally(self.conn, self.settings)
            return await self.conn.fetch(query, *args)
        finally:
            await end(self.conn, "ROLLBACK")


@asynccontextmanager
async def tenant_read(
    pool: Pool,
    caller: Caller,
    *,
    statement_timeout_ms: int,
    background: TaskGroup | None = None,
    call: str = "",
    acquire_timeout_s: float | None = None,
    settings: Settings | None = None,
) -> AsyncGenerator[TenantRead]:
    """A read of one query as `caller`'s tenant: one round trip where the connection allows it
    (see the module's docstring), else tenant_transaction's read (the same arguments).

    `settings` (name: value) are in effect for the query, however it runs: the function's SET
    clauses, or set transaction-locally before it (one more round trip)."""
    settings = settings or {}
    if not isinstance(caller.tenant_id, UUID):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise InvalidArgument("tenant identifier is not a UUID")  # as tenant_transaction
    conn = await acquire(pool, wait_s=acquire_timeout_s)
    session = counted(conn)
    if not session.resets or session.session_timeout_ms != statement_timeout_ms:
        async with transaction_on(
            pool,
            conn,
            caller,
            read_only=True,
            statement_timeout_ms=statement_timeout_ms,
            background=background,
            call=call,
        ) as tx:
            await set_locally(tx.conn, settings)
            yield TenantRead(conn=tx.conn, tenant_id=tx.tenant_id)
        return
    reader = OneQuery(conn, caller, context_values(caller, statement_timeout_ms, call, ""), settings)
    try:
        yield TenantRead(conn=reader, tenant_id=caller.tenant_id)
    finally:
        if reader.pending:
            discard(conn)  # cancelled or lost mid-statement: never reused
        elif reader.succeeded:
            # One statement, its own transaction, every setting in it local: the session is as the
            # pool's reset would leave it, so release costs no round trip. (After an error, the
            # pool's reset runs, to be sure.)
            counted(conn).mark_reset()
        await release(pool, conn)  # shielded by asyncpg (database.pool.release)


@dataclass
class OneWrite:
    """A pooled connection that runs one Script as `caller`'s tenant, in one statement (its own
    transaction), where the connection allows it (see the module's docstring and `run`)."""

    conn: PooledConnection
    caller: Caller
    context: list[str]
    possible: bool
    ran: bool = field(default=False)
    sent: bool = field(default=False)
    pending: bool = field(default=False)
    succeeded: bool = field(default=False)

    async def run(self, script: Script, *args: Any, seen: Mapping[str, Any]) -> list[Record] | None:
        """`script`'s rows, committed; None when nothing was written and the caller should write in a
        transaction instead: this connection cannot run it, or the tenant's settings are no longer
        `seen` (the settings the caller's limits and choices came from)."""
        if self.ran:
            raise RuntimeError("a one-statement write runs one script")
        self.ran = True
        if not self.possible or counted(self.conn).no_functions:
            return None
        compiled = _compile_script(script)
        self.sent = True
        for attempt in range(2):
            self.pending = True  # until the server has answered: if the wait ends otherwise, discard
            if not await _created(self.conn, compiled):
                self.pending = False
                return None
            try:
                return await self._call(compiled, args, seen)
            except asyncpg.UndefinedFunctionError:
                if attempt:
                    raise  # made again and still missing: the script's own error
                # The session lost its temporary functions (DISCARD TEMP or ALL); nothing ran: made again.
                counted(self.conn).functions.clear()
        raise AssertionError("unreachable")

    async def _call(self, compiled: _Compiled, args: tuple[Any, ...], seen: Mapping[str, Any]) -> list[Record] | None:
        try:
            rows = await self.conn.fetch(compiled.call, *args, self.context, seen)
        except asyncpg.PostgresError as exc:
            if not server_answered(exc):
                raise CommitUnknown() from exc  # pending: the connection is discarded
            # The server answered (or asyncpg refused an argument, class 22, before sending): the
            # statement's transaction was rolled back, or never began.
            self.pending = False
            if exc.sqlstate == TENANT_UNAVAILABLE:
                raise unavailable(self.caller) from None
            if exc.sqlstate == SETTINGS_CHANGED:
                return None
            raise
        except FAILURES as exc:
            raise CommitUnknown() from exc  # sent, or about to be: nobody knows whether it committed
        self.pending = False
        self.succeeded = True
        return rows


@asynccontextmanager
async def tenant_write(
    pool: Pool,
    caller: Caller,
    *,
    statement_timeout_ms: int,
    call: str = "",
    acquire_timeout_s: float | None = None,
) -> AsyncGenerator[OneWrite]:
    """A write of one Script as `caller`'s tenant, in one round trip where the connection allows
    it (the conditions of a one-statement read); else `run` answers None and sends nothing."""
    if not isinstance(caller.tenant_id, UUID):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise InvalidArgument("tenant identifier is not a UUID")  # as tenant_transaction
    conn = await acquire(pool, wait_s=acquire_timeout_s)
    session = counted(conn)
    possible = session.resets and session.session_timeout_ms == statement_timeout_ms
    writer = OneWrite(conn, caller, context_values(caller, statement_timeout_ms, call, ""), possible)
    try:
        yield writer
    finally:
        if writer.pending:
            discard(conn)  # cancelled or lost mid-statement: never reused
        elif writer.succeeded or not writer.sent:
            # As tenant_read's: every setting was local to the statement (or nothing was sent).
            counted(conn).mark_reset()
        await release(pool, conn)  # shielded by asyncpg (database.pool.release)

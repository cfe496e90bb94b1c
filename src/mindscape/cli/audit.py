"""`mindscape audit tail`: who changed what in one tenant, newest events last.

Read through the same tenant transaction as the tools (as the runtime role, under row-level
security), so an operator command can show only the named tenant's events.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import anyio
import asyncpg
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from mindscape.config.settings import Settings, load_settings
from mindscape.database.prepare import prepare
from mindscape.database.targets import Targets
from mindscape.errors import MindscapeError
from mindscape.models.audit import AuditEvent
from mindscape.queries import audit
from mindscape.tenancy.operator import operator_session
from mindscape.tenancy.transaction import tenant_transaction

audit_app = typer.Typer(help="Audit trail of one tenant: who changed what.", no_args_is_help=True)

out = Console()
err = Console(stderr=True)


async def read_tail(
    settings: Settings, targets: Targets, *, tenant_slug: str, since: datetime | None, limit: int
) -> list[AuditEvent]:
    async with (
        operator_session(settings, targets, tenant_slug) as (pool, caller),
        tenant_transaction(pool, caller, read_only=True, statement_timeout_ms=settings.statement_timeout_ms) as tx,
    ):
        return await audit.tail(tx.conn, tenant_id=tx.tenant_id, since=since, limit=limit)


def _since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not an ISO 8601 time, e.g. 2026-03-01 or 2026-03-01T09:00:00+01:00", param_hint="--since"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)  # no timezone: UTC, as the table shows


def _fail(message: str) -> None:
    # Text, not markup: messages echo user input.
    err.print(Text.assemble(("error:", "red"), " ", message), soft_wrap=True)
    raise typer.Exit(1)


@audit_app.command("tail")
def tail(
    tenant: Annotated[str, typer.Option("--tenant", help="Tenant slug.", show_default=False)],
    since: Annotated[
        str | None, typer.Option("--since", help="Only events at or after this ISO 8601 time (UTC without an offset).")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000, help="Show at most the newest N events.")] = 50,
    config: Annotated[
        Path | None, typer.Option("--config", help="TOML settings file (or MINDSCAPE_CONFIG).", show_default=False)
    ] = None,
) -> None:
    """Show the tenant's latest audit events (oldest first): time, principal, tool, outcome, targets."""
    start = _since(since)
    try:
        settings = load_settings(config)
    except MindscapeError as exc:
        _fail(str(exc))
        return
    logging.basicConfig(stream=sys.stderr, level=settings.log_level, format="%(levelname)s %(name)s: %(message)s")

    async def main() -> list[AuditEvent]:
        targets = await prepare(settings)
        return await read_tail(settings, targets, tenant_slug=tenant, since=start, limit=limit)

    try:
        events = anyio.run(main)
    except MindscapeError as exc:
        _fail(str(exc))
        return
    except asyncpg.PostgresError as exc:
        _fail(f"database error ({exc.sqlstate}): {exc}")
        return
    table = Table("time (UTC)", "principal", "tool", "outcome", "targets", "detail")
    for e in events:
        when = e.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        detail = json.dumps(e.detail, separators=(",", ":"), ensure_ascii=False) if e.detail else ""
        # Plain Text cells: principals, ids and details are data, not rich markup.
        table.add_row(*[Text(c) for c in (when, e.principal, e.tool, e.outcome, "\n".join(e.target_ids), detail)])
    out.print(table)
    if not events:
        out.print(Text(f"no audit events for {tenant}" + (f" since {start.isoformat()}" if start else "")))

"""`mindscape audit tail|verify`: who changed what in one tenant, and whether its trail is intact."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Column, Table
from rich.text import Text

from mindscape.cli.common import ConfigOption, JsonOption, TenantOption, load, out, print_json, print_table, row, run
from mindscape.database.prepare import prepare
from mindscape.models.audit import AuditEvent, ChainReport
from mindscape.ops.audit import read_tail, verify_chain

audit_app = typer.Typer(help="Audit trail of one tenant: who changed what.", no_args_is_help=True)


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


@audit_app.command("tail")
def tail(
    tenant: TenantOption,
    since: Annotated[
        str | None, typer.Option("--since", help="Only events at or after this ISO 8601 time (UTC without an offset).")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000, help="Show at most the newest N events.")] = 50,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show the tenant's latest audit events (oldest first): time, principal, tool, outcome, targets."""
    start = _since(since)
    settings = load(config)

    async def main() -> list[AuditEvent]:
        targets = await prepare(settings)
        return await read_tail(settings, targets, tenant_slug=tenant, since=start, limit=limit)

    events = run(main)
    if as_json:
        print_json([e.model_dump(mode="json") for e in events])
        return
    whole = [Column(h, no_wrap=True) for h in ("seq", "time (UTC)", "principal", "tool", "outcome", "targets")]
    table = Table(*whole, "detail")
    for e in events:
        when = e.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        detail = json.dumps(e.detail, ensure_ascii=False) if e.detail else ""
        # Plain cells: principals, ids and details are data, not rich markup.
        table.add_row(*row(str(e.seq), when, e.principal, e.tool, e.outcome, "\n".join(e.target_ids), detail))
    print_table(table)
    if not events:
        out.print(Text(f"no audit events for {tenant}" + (f" since {start.isoformat()}" if start else "")))


@audit_app.command("verify")
def verify(tenant: TenantOption, config: ConfigOption = None) -> None:
    """Recompute the tenant's hash chain: "ok, N events", or the first broken link and exit code 1."""
    settings = load(config)

    async def main() -> ChainReport:
        targets = await prepare(settings)
        return await verify_chain(settings, targets, tenant_slug=tenant)

    report = run(main)
    broken = report.broken
    if broken is None:
        head = f" (head {report.head})" if report.head else ""
        out.print(Text(f"ok, {report.events} events{head}"), soft_wrap=True)
        return
    when = broken.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f UTC") if broken.created_at else "-"
    out.print(
        Text(
            f"broken at event {broken.id or '-'} (seq {broken.seq}, {when}): {broken.reason}; "
            f"{report.events} events before it verify"
        ),
        soft_wrap=True,
    )
    raise typer.Exit(1)

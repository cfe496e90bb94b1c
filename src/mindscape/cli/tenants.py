"""`mindscape tenant create|list|show|quota|disable|enable`, over the owner connection."""

from __future__ import annotations

from datetime import UTC
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Column, Table
from rich.text import Text

from mindscape.cli.common import ConfigOption, JsonOption, load, out, print_json, print_table, row, run
from mindscape.config.settings import is_slug
from mindscape.database.prepare import prepare
from mindscape.models.tenant import Tenant
from mindscape.ops import tenants as tenant_ops
from mindscape.quotas.limits import Limit, Limits

tenant_app = typer.Typer(help="Tenants: create, list, show, quota, disable, enable.", no_args_is_help=True)


def _slug(value: str) -> str:
    if not is_slug(value):
        raise typer.BadParameter(
            "a slug is lowercase letters, digits and '-', at most 64 characters", param_hint="SLUG"
        )
    return value


def _name(value: str) -> str:
    if not 1 <= len(value.strip()) <= 200:
        raise typer.BadParameter("a name is 1 to 200 characters", param_hint="--name")
    return value.strip()


@tenant_app.command("create")
def tenant_create(
    slug: str,
    name: Annotated[str, typer.Option(help="Display name.", show_default=False)],
    config: ConfigOption = None,
) -> None:
    """Create a tenant."""
    settings = load(config)
    slug, name = _slug(slug), _name(name)

    async def main() -> None:
        targets = await prepare(settings)
        tenant = await tenant_ops.create_tenant(targets, slug=slug, name=name)
        out.print(f"created tenant {tenant.slug} ({tenant.id})")

    run(main)


@tenant_app.command("list")
def tenant_list(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """List tenants: slug, name, status, id, creation time (UTC) and the limits of their own."""
    settings = load(config)

    async def main() -> None:
        targets = await prepare(settings)
        overrides = await tenant_ops.tenant_overrides(targets)
        found = await tenant_ops.list_tenants(targets)
        own = {t.slug: overrides[t.slug].model_dump(exclude_none=True) if t.slug in overrides else {} for t in found}
        if as_json:
            print_json([t.model_dump(mode="json") | {"own_limits": own[t.slug]} for t in found])
            return
        table = Table(
            Column("slug", no_wrap=True),
            "name",
            Column("status", no_wrap=True),
            Column("id", no_wrap=True),
            Column("created (UTC)", no_wrap=True),
            "own limits",
        )
        for t in found:
            limits = " ".join(f"{k}={v}" for k, v in own[t.slug].items())
            created = t.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M")
            table.add_row(*row(t.slug, t.name, t.status, str(t.id), created, limits or "-"))
        print_table(table)

    run(main)


def _limits_json(limits: Limits) -> dict[str, dict[str, object]]:
    return {
        limit.name: {"value": limit.value, "unlimited": _unlimited(limit), "source": limit.source}
        for limit in limits.all()
    }


def _unlimited(limit: Limit) -> bool:
    return limit.unlimited and limit.name != "max_content_bytes"  # there 0 is not a value anyone can set


def _limits_table(limits: Limits) -> Table:
    table = Table(Column("limit", no_wrap=True), Column("value", no_wrap=True), Column("from", no_wrap=True))
    for limit in limits.all():
        table.add_row(*row(limit.name, "unlimited" if _unlimited(limit) else str(limit.value), limit.source))
    return table


@tenant_app.command("show")
def tenant_show(slug: str, config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Show one tenant: id, name, status, creation time and the limits in effect, with where each comes from."""
    settings = load(config)

    async def main() -> tuple[Tenant, Limits]:
        targets = await prepare(settings)
        return await tenant_ops.get_tenant(settings, targets, slug=slug)

    tenant, limits = run(main)
    if as_json:
        print_json(tenant.model_dump(mode="json") | {"limits": _limits_json(limits)})
        return
    out.print(Text(f"tenant {tenant.slug}: {tenant.name}"), soft_wrap=True)
    out.print(Text(f"id       {tenant.id}"), soft_wrap=True)
    out.print(Text(f"status   {tenant.status}"), soft_wrap=True)
    out.print(Text(f"created  {tenant.created_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC"), soft_wrap=True)
    print_table(_limits_table(limits))


@tenant_app.command("quota")
def tenant_quota(
    slug: str,
    calls_per_minute: Annotated[
        int | None, typer.Option(help="Tool calls, resource reads and prompt gets per minute (0: unlimited).")
    ] = None,
    max_memories: Annotated[int | None, typer.Option(help="Memories the tenant may hold (0: unlimited).")] = None,
    max_content_bytes: Annotated[int | None, typer.Option(help="Largest memory, in UTF-8 bytes.")] = None,
    max_sessions: Annotated[
        int | None, typer.Option(help="Open HTTP sessions and SSE streams, per process (0: unlimited).")
    ] = None,
    max_concurrent_calls: Annotated[
        int | None, typer.Option(help="Calls running at once, per process (0: unlimited).")
    ] = None,
    db_ms_per_second: Annotated[
        int | None,
        typer.Option(help="Database time per second while other tenants are busy, in ms, per process (0: unlimited)."),
    ] = None,
    reset: Annotated[
        bool, typer.Option("--reset", help="Drop the tenant's own limits (back to the defaults).")
    ] = False,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show a tenant's limits and where each comes from; set or reset its own."""
    settings = load(config)
    given = {
        "calls_per_minute": calls_per_minute,
        "max_memories": max_memories,
        "max_content_bytes": max_content_bytes,
        "max_sessions": max_sessions,
        "max_concurrent_calls": max_concurrent_calls,
        "db_ms_per_second": db_ms_per_second,
    }
    changes = {k: v for k, v in given.items() if v is not None}

    async def main() -> None:
        targets = await prepare(settings)
        limits = await tenant_ops.tenant_quota(settings, targets, slug=slug, changes=changes, reset=reset)
        if as_json:
            print_json({"tenant": slug, "updated": bool(changes or reset), "limits": _limits_json(limits)})
            return
        out.print(Text(f"tenant {slug}" + (" (updated)" if changes or reset else "")), soft_wrap=True)
        print_table(_limits_table(limits))

    run(main)


def _set_status(slug: str, config: Path | None, status: str) -> None:
    settings = load(config)

    async def main() -> None:
        targets = await prepare(settings)
        tenant = await tenant_ops.set_tenant_status(targets, slug=slug, status=status)
        out.print(f"tenant {tenant.slug} is {tenant.status}")

    run(main)


@tenant_app.command("disable")
def tenant_disable(slug: str, config: ConfigOption = None) -> None:
    """Disable a tenant: its agents are refused from their next call on. Data is kept."""
    _set_status(slug, config, "disabled")


@tenant_app.command("enable")
def tenant_enable(slug: str, config: ConfigOption = None) -> None:
    """Re-enable a disabled tenant."""
    _set_status(slug, config, "active")

"""`mindscape tenant create|list|quota|disable|enable`, over the owner connection."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mindscape.cli.common import ConfigOption, load, out, row, run
from mindscape.config.settings import is_slug
from mindscape.database.prepare import prepare
from mindscape.ops import tenants as tenant_ops

tenant_app = typer.Typer(help="Tenants: create, list, disable, enable.", no_args_is_help=True)


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
def tenant_list(config: ConfigOption = None) -> None:
    """List tenants."""
    settings = load(config)

    async def main() -> None:
        targets = await prepare(settings)
        table = Table("slug", "name", "status", "id", "created", "own limits")
        overrides = await tenant_ops.tenant_overrides(targets)
        for t in await tenant_ops.list_tenants(targets):
            own = overrides.get(t.slug)
            limits = " ".join(f"{k}={v}" for k, v in own.model_dump(exclude_none=True).items()) if own else ""
            created = t.created_at.strftime("%Y-%m-%d %H:%M")
            table.add_row(*row(t.slug, t.name, t.status, str(t.id), created, limits or "-"))
        out.print(table)

    run(main)


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
    reset: Annotated[
        bool, typer.Option("--reset", help="Drop the tenant's own limits (back to the defaults).")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Show a tenant's limits and where each comes from; set or reset its own."""
    settings = load(config)
    given = {
        "calls_per_minute": calls_per_minute,
        "max_memories": max_memories,
        "max_content_bytes": max_content_bytes,
        "max_sessions": max_sessions,
        "max_concurrent_calls": max_concurrent_calls,
    }
    changes = {k: v for k, v in given.items() if v is not None}

    async def main() -> None:
        targets = await prepare(settings)
        limits = await tenant_ops.tenant_quota(settings, targets, slug=slug, changes=changes, reset=reset)
        table = Table("limit", "value", "from")
        for limit in limits.all():
            shown = "unlimited" if limit.unlimited and limit.name != "max_content_bytes" else str(limit.value)
            table.add_row(*row(limit.name, shown, limit.source))
        out.print(f"tenant {slug}" + (" (updated)" if changes or reset else ""))
        out.print(table)

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

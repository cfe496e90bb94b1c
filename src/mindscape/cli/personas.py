"""`mindscape persona import|list`: one tenant's personas, through its tenant transaction."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mindscape.cli.common import ConfigOption, TenantOption, load, out, row, run
from mindscape.database.prepare import prepare
from mindscape.ops import personas as persona_ops
from mindscape.ops.persona_files import read_persona_file

persona_app = typer.Typer(help="Personas of one tenant: import, list.", no_args_is_help=True)


@persona_app.command("import")
def persona_import(
    file: Annotated[Path, typer.Argument(help="YAML or JSON file with a list of personas.")],
    tenant: TenantOption,
    config: ConfigOption = None,
) -> None:
    """Create or update personas by slug, all or nothing."""
    settings = load(config)

    async def main() -> None:
        items = read_persona_file(file)
        targets = await prepare(settings)
        counts = await persona_ops.import_personas(settings, targets, tenant_slug=tenant, items=items, source=str(file))
        out.print(
            f"imported {len(items)} persona(s) into {tenant}: "
            f"{counts['created']} created, {counts['updated']} updated, {counts['unchanged']} unchanged"
        )

    run(main)


@persona_app.command("list")
def persona_list(tenant: TenantOption, config: ConfigOption = None) -> None:
    """List a tenant's personas."""
    settings = load(config)

    async def main() -> None:
        targets = await prepare(settings)
        table = Table("slug", "name", "tags", "summary")
        for p in await persona_ops.list_personas(settings, targets, tenant_slug=tenant):
            table.add_row(*row(p.slug, p.name, ", ".join(p.tags), p.summary[:60]))
        out.print(table)

    run(main)

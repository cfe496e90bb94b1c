"""`mindscape persona import|list|show`: one tenant's personas, through its tenant transaction."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.table import Column, Table
from rich.text import Text

from mindscape.cli.common import (
    ConfigOption,
    JsonOption,
    TenantOption,
    load,
    out,
    print_json,
    print_table,
    row,
    run,
)
from mindscape.database.prepare import prepare
from mindscape.models.persona import Persona, PersonaSummary
from mindscape.ops import personas as persona_ops
from mindscape.ops.persona_files import read_persona_file

persona_app = typer.Typer(help="Personas of one tenant: import, list, show.", no_args_is_help=True)


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
def persona_list(tenant: TenantOption, config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """List a tenant's personas: slug, name, tags and summary."""
    settings = load(config)

    async def main() -> list[PersonaSummary]:
        targets = await prepare(settings)
        return await persona_ops.list_personas(settings, targets, tenant_slug=tenant)

    found = run(main)
    if as_json:
        print_json([p.model_dump(mode="json") for p in found])
        return
    table = Table(Column("slug", no_wrap=True), "name", "tags", "summary")
    for p in found:
        table.add_row(*row(p.slug, p.name, ", ".join(p.tags), p.summary))
    print_table(table)
    if not found:
        out.print(Text(f"no personas in {tenant}; `mindscape persona import FILE --tenant {tenant}` adds them"))


@persona_app.command("show")
def persona_show(
    slug: Annotated[str, typer.Argument(help="Persona slug, from `mindscape persona list`.")],
    tenant: TenantOption,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show one persona whole: traits, instructions, tags, version and times (YAML, or JSON with --json)."""
    settings = load(config)

    async def main() -> Persona:
        targets = await prepare(settings)
        return await persona_ops.get_persona(settings, targets, tenant_slug=tenant, slug=slug)

    found = run(main).model_dump(mode="json")
    if as_json:
        print_json(found)
        return
    # YAML: the shape `mindscape persona import` reads, so a shown persona can be edited and re-imported.
    out.print(Text(yaml.safe_dump(found, sort_keys=False, allow_unicode=True).rstrip()), soft_wrap=True)

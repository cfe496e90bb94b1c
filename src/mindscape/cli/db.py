"""`mindscape db upgrade|downgrade|current`: schema migrations, over the owner connection."""

from __future__ import annotations

from typing import Annotated

import typer

from mindscape.cli.common import ConfigOption, load, out, run
from mindscape.database import migrate
from mindscape.database.prepare import prepare
from mindscape.ops import schema

db_app = typer.Typer(help="Schema migrations.", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade(config: ConfigOption = None, revision: str = "head") -> None:
    """Apply migrations up to REVISION (default: head)."""
    settings = load(config)

    async def main() -> None:
        targets = await prepare(settings, migrate_embedded=False)
        await schema.upgrade(settings, targets, revision)

    run(main)
    out.print(f"schema upgraded to {revision}")


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision, e.g. base.")], config: ConfigOption = None
) -> None:
    """Revert migrations down to REVISION ('base' removes every Mindscape object but the roles)."""
    settings = load(config)

    async def main() -> None:
        targets = await prepare(settings, migrate_embedded=False)
        await schema.downgrade(targets, revision)

    run(main)
    out.print(f"schema downgraded to {revision}")


@db_app.command("current")
def db_current(config: ConfigOption = None) -> None:
    """Show the database's schema revision and the one this Mindscape needs."""
    settings = load(config)

    async def main() -> str | None:
        targets = await prepare(settings, migrate_embedded=False)
        return await schema.current_revision(targets)

    current = run(main)
    head = migrate.head_revision()
    state = "up to date" if current == head else "outdated: run `mindscape db upgrade`"
    out.print(f"current: {current or 'none'}  head: {head}  ({state})")

"""The `mindscape` command: serve, demo, and operator tasks (database, tenants, personas, memories).

Every command prints failures as one line on stderr and exits 1; stdout stays clean for
`serve`, where it is the MCP wire. Progress bars go to stderr, and only when it is a terminal;
results go to stdout.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable, Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, TypeVar

import anyio
import asyncpg
import typer
from alembic.util import CommandError
from rich import filesize
from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from mindscape.cli.audit import audit_app
from mindscape.cli.doctor import doctor
from mindscape.cli.keys import key_app
from mindscape.cli.model import model_app
from mindscape.config.settings import Settings, is_slug, load_settings
from mindscape.database import migrate
from mindscape.database.pool import connect
from mindscape.database.prepare import ensure_vector_index, prepare
from mindscape.database.urls import Targets
from mindscape.embeddings.factory import configured_spec
from mindscape.errors import InvalidArgument, MindscapeError
from mindscape.ops import admin
from mindscape.ops.persona_files import read_persona_file

app = typer.Typer(
    help="Mindscape: a tenant-scoped PostgreSQL database for AI agents, over MCP.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals can hold database URLs with passwords
)
db_app = typer.Typer(help="Schema migrations.", no_args_is_help=True)
tenant_app = typer.Typer(help="Tenants: create, list, disable, enable.", no_args_is_help=True)
persona_app = typer.Typer(help="Personas of one tenant: import, list.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(tenant_app, name="tenant")
memory_app = typer.Typer(help="Memories of one tenant: import, backfill, reembed.", no_args_is_help=True)
app.add_typer(persona_app, name="persona")
app.add_typer(memory_app, name="memory")
app.add_typer(audit_app, name="audit")
app.add_typer(key_app, name="key")
app.add_typer(model_app, name="model")
app.command()(doctor)

out = Console()
err = Console(stderr=True)
T = TypeVar("T")

ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="TOML settings file (or MINDSCAPE_CONFIG).", show_default=False)
]
TenantOption = Annotated[str, typer.Option("--tenant", help="Tenant slug.", show_default=False)]


def _settings(config: Path | None, **flags: Any) -> Settings:
    try:
        settings = load_settings(config, **flags)
    except MindscapeError as exc:
        _fail(exc)
    logging.basicConfig(stream=sys.stderr, level=settings.log_level, format="%(levelname)s %(name)s: %(message)s")
    return settings


def _fail(exc: BaseException) -> NoReturn:
    # Text, not markup: messages echo user input (slugs, file contents, regex patterns with [...]).
    err.print(Text.assemble(("error:", "red"), " ", str(exc)), soft_wrap=True)
    raise typer.Exit(1)


def _row(*cells: str) -> list[Text]:
    """Table cells as plain text: names and tags are user data, not rich markup or emoji codes."""
    return [Text(cell) for cell in cells]


def _run(main: Callable[[], Awaitable[T]]) -> T:
    """Run an async command; anticipated failures become one line on stderr and exit code 1."""
    try:
        return anyio.run(main)
    except MindscapeError as exc:
        _fail(exc)
    except asyncpg.PostgresError as exc:  # the operator's own database said no: show what it said
        _fail(MindscapeError(f"database error ({exc.sqlstate}): {exc}"))
    except BaseExceptionGroup as group:  # raised from inside the server's task groups
        anticipated = group.subgroup(MindscapeError)
        if anticipated is None:
            raise
        first = anticipated.exceptions[0]
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        _fail(first)


@app.command()
def serve(
    config: ConfigOption = None,
    tenant: Annotated[str | None, typer.Option(help="Tenant slug to serve over stdio (or MINDSCAPE_TENANT).")] = None,
    transport: Annotated[
        Literal["stdio", "http", "sse"],
        typer.Option(help="stdio: one tenant. http: Streamable HTTP at /mcp, API keys. sse: legacy SSE at /sse."),
    ] = "stdio",
    host: Annotated[str, typer.Option(help="HTTP: address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="HTTP: port to listen on.")] = 8000,
    stateless: Annotated[
        bool, typer.Option("--stateless", help="HTTP: no server-side sessions (or http_stateless).")
    ] = False,
    workers: Annotated[
        int | None, typer.Option(min=1, max=64, help="HTTP: worker processes; > 1 needs --stateless.")
    ] = None,
) -> None:
    """Serve MCP over stdio for one tenant, or over HTTP for every tenant with an API key."""
    from mindscape.app.server import build_server
    from mindscape.app.state import open_state
    from mindscape.embeddings.factory import semantic
    from mindscape.transports.http.app import serve_http
    from mindscape.transports.stdio import serve_stdio

    settings = _settings(config, tenant=tenant, http_stateless=stateless or None, http_workers=workers)
    if settings.http_workers > 1:
        if transport != "http":
            _fail(MindscapeError(f"--workers > 1 needs --transport http: {transport} keeps its sessions in memory"))
        _serve_workers(settings, host=host, port=port)
        return

    async def main() -> None:
        targets = await prepare(settings)
        # The state is opened before serving so that a bad tenant or database stops the
        # process with one line instead of failing the client's first request.
        served_as = "stdio" if transport == "stdio" else "http"  # SSE, like HTTP, takes the tenant from the key
        owner = targets.owner if targets.embedded else None  # the embedded server builds tenants' indexes itself
        async with open_state(settings, targets.runtime, transport=served_as, owner_url=owner) as state:
            if transport != "stdio":
                await serve_http(state, host=host, port=port, transport=transport)
            else:
                await serve_stdio(build_server(lambda: nullcontext(state), semantic=semantic(state.settings)))

    _run(main)


def _serve_workers(settings: Settings, *, host: str, port: int) -> None:
    """Migrate and check the database once, here in the parent, then start the workers."""
    from mindscape.app.state import open_state
    from mindscape.queries import capacity
    from mindscape.transports.http.workers import run_workers

    async def check() -> str:
        targets = await prepare(settings)
        async with open_state(settings, targets.runtime, transport="http") as state, state.pool.acquire() as conn:
            usable = await capacity.usable_connections(conn)
        needed = settings.http_workers * settings.pool_max_size
        if needed > usable:
            # A warning, not a refusal: pools open connections only as load needs them.
            err.print(
                f"warning: {settings.http_workers} workers x pool_max_size {settings.pool_max_size} = {needed} "
                f"connections, but the database accepts {usable}; lower pool_max_size or max_connections will "
                "refuse some under load",
                soft_wrap=True,
            )
        return targets.runtime

    runtime = _run(check)
    run_workers(settings, runtime, host=host, port=port)


@app.command()
def demo(config: ConfigOption = None) -> None:
    """Start the embedded database, seed demo tenants and drive the real server over stdio."""
    from mindscape.cli.demo import run_demo

    settings = _settings(config)
    _run(lambda: run_demo(settings, out))


async def _migrate(step: Callable[[str, str], Awaitable[None]], owner_url: str, revision: str) -> None:
    """An Alembic step whose anticipated failures (no database, unknown revision) are one line, not a traceback."""
    conn = await connect(owner_url)  # a one-line StartupError without the password
    await conn.close()
    try:
        await step(owner_url, revision)
    except CommandError as exc:
        raise InvalidArgument(f"{exc}; `mindscape db current` shows the revisions") from exc


@db_app.command("upgrade")
def db_upgrade(config: ConfigOption = None, revision: str = "head") -> None:
    """Apply migrations up to REVISION (default: head)."""
    settings = _settings(config)

    async def main() -> None:
        targets = await prepare(settings, migrate_embedded=False)
        await _migrate(migrate.upgrade, targets.owner, revision)
        # Which model is in use is configuration, so its index is not a migration.
        await ensure_vector_index(targets.owner, configured_spec(settings))

    _run(main)
    out.print(f"schema upgraded to {revision}")


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision, e.g. base.")], config: ConfigOption = None
) -> None:
    """Revert migrations down to REVISION ('base' removes every Mindscape object but the roles)."""
    settings = _settings(config)

    async def main() -> None:
        targets = await prepare(settings, migrate_embedded=False)
        await _migrate(migrate.downgrade, targets.owner, revision)

    _run(main)
    out.print(f"schema downgraded to {revision}")


@db_app.command("current")
def db_current(config: ConfigOption = None) -> None:
    """Show the database's schema revision and the one this Mindscape needs."""
    settings = _settings(config)

    async def main() -> str | None:
        targets = await prepare(settings, migrate_embedded=False)
        conn = await connect(targets.owner)
        try:
            return await migrate.current_revision(conn)
        finally:
            await conn.close()

    current = _run(main)
    head = migrate.head_revision()
    state = "up to date" if current == head else "outdated: run `mindscape db upgrade`"
    out.print(f"current: {current or 'none'}  head: {head}  ({state})")


@tenant_app.command("create")
def tenant_create(
    slug: str,
    name: Annotated[str, typer.Option(help="Display name.", show_default=False)],
    config: ConfigOption = None,
) -> None:
    """Create a tenant."""
    settings = _settings(config)
    slug, name = _slug(slug), _name(name)

    async def main() -> None:
        targets = await prepare(settings)
        tenant = await admin.create_tenant(targets, slug=slug, name=name)
        out.print(f"created tenant {tenant.slug} ({tenant.id})")

    _run(main)


@tenant_app.command("list")
def tenant_list(config: ConfigOption = None) -> None:
    """List tenants."""
    settings = _settings(config)

    async def main() -> None:
        targets = await prepare(settings)
        table = Table("slug", "name", "status", "id", "created", "own limits")
        overrides = await admin.tenant_overrides(targets)
        for t in await admin.list_tenants(targets):
            own = overrides.get(t.slug)
            limits = " ".join(f"{k}={v}" for k, v in own.model_dump(exclude_none=True).items()) if own else ""
            created = t.created_at.strftime("%Y-%m-%d %H:%M")
            table.add_row(*_row(t.slug, t.name, t.status, str(t.id), created, limits or "-"))
        out.print(table)

    _run(main)


@tenant_app.command("quota")
def tenant_quota(
    slug: str,
    calls_per_minute: Annotated[
        int | None, typer.Option(help="Tool calls, resource reads and prompt gets per minute (0: unlimited).")
    ] = None,
    max_memories: Annotated[int | None, typer.Option(help="Memories the tenant may hold (0: unlimited).")] = None,
    max_content_bytes: Annotated[int | None, typer.Option(help="Largest memory, in UTF-8 bytes.")] = None,
    reset: Annotated[
        bool, typer.Option("--reset", help="Drop the tenant's own limits (back to the defaults).")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Show a tenant's limits and where each comes from; set or reset its own."""
    settings = _settings(config)
    given = {"calls_per_minute": calls_per_minute, "max_memories": max_memories, "max_content_bytes": max_content_bytes}
    changes = {k: v for k, v in given.items() if v is not None}

    async def main() -> None:
        targets = await prepare(settings)
        limits = await admin.tenant_quota(settings, targets, slug=slug, changes=changes, reset=reset)
        table = Table("limit", "value", "from")
        for limit in limits.all():
            shown = "unlimited" if limit.unlimited and limit.name != "max_content_bytes" else str(limit.value)
            table.add_row(*_row(limit.name, shown, limit.source))
        out.print(f"tenant {slug}" + (" (updated)" if changes or reset else ""))
        out.print(table)

    _run(main)


def _set_status(slug: str, config: Path | None, status: str) -> None:
    settings = _settings(config)

    async def main() -> None:
        targets = await prepare(settings)
        tenant = await admin.set_tenant_status(targets, slug=slug, status=status)
        out.print(f"tenant {tenant.slug} is {tenant.status}")

    _run(main)


@tenant_app.command("disable")
def tenant_disable(slug: str, config: ConfigOption = None) -> None:
    """Disable a tenant: its agents are refused from their next call on. Data is kept."""
    _set_status(slug, config, "disabled")


@tenant_app.command("enable")
def tenant_enable(slug: str, config: ConfigOption = None) -> None:
    """Re-enable a disabled tenant."""
    _set_status(slug, config, "active")


@persona_app.command("import")
def persona_import(
    file: Annotated[Path, typer.Argument(help="YAML or JSON file with a list of personas.")],
    tenant: TenantOption,
    config: ConfigOption = None,
) -> None:
    """Create or update personas by slug, all or nothing."""
    settings = _settings(config)

    async def main() -> None:
        items = read_persona_file(file)
        targets = await prepare(settings)
        counts = await admin.import_personas(settings, targets, tenant_slug=tenant, items=items)
        out.print(
            f"imported {len(items)} persona(s) into {tenant}: "
            f"{counts['created']} created, {counts['updated']} updated, {counts['unchanged']} unchanged"
        )

    _run(main)


@persona_app.command("list")
def persona_list(tenant: TenantOption, config: ConfigOption = None) -> None:
    """List a tenant's personas."""
    settings = _settings(config)

    async def main() -> None:
        targets = await prepare(settings)
        table = Table("slug", "name", "tags", "summary")
        for p in await admin.list_personas(settings, targets, tenant_slug=tenant):
            table.add_row(*_row(p.slug, p.name, ", ".join(p.tags), p.summary[:60]))
        out.print(table)

    _run(main)


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


class _Count(ProgressColumn):
    """Done/total: memories, or file sizes for tasks added with `bytes=True`."""

    def render(self, task: Task) -> Text:
        done, total = int(task.completed), int(task.total or 0)
        if task.fields.get("bytes"):
            return Text(f"{filesize.decimal(done)}/{filesize.decimal(total)}", style="progress.download")
        return Text(f"{done}/{total}", style="progress.download")


def _progress() -> Progress:
    """A progress bar on stderr; off when stderr is not a terminal (a log has no use for one)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        _Count(),
        TimeRemainingColumn(),
        console=err,
        disable=not err.is_terminal,
    )


def _interruptible(main: Callable[[], Awaitable[T]], interrupted: str) -> T:
    """`_run`, with Ctrl-C reported in one line (`interrupted`) instead of a traceback."""
    try:
        return _run(main)
    except KeyboardInterrupt:
        err.print(Text.assemble(("interrupted:", "red"), " ", interrupted), soft_wrap=True)
        raise typer.Exit(130) from None


BatchOption = Annotated[int, typer.Option("--batch", min=1, max=10_000, help="Memories per batch.")]


@memory_app.command("import")
def memory_import(
    file: Annotated[Path, typer.Argument(help="JSON Lines file: one memory (a JSON object) per line.")],
    tenant: TenantOption,
    batch: BatchOption = 1000,
    config: ConfigOption = None,
) -> None:
    """Import memories, all or nothing; a file with any problem is refused with every problem listed by line.

    Each line: {"content": "...", "persona": "slug", "kind": "fact|event|preference|instruction|note",
    "metadata": {...}, "created_at": "2024-05-01T09:30:00Z", "importance": 0.5, "embedding": [...]}; only
    content is required. created_at needs a timezone. embedding must have the tenant model's dimensions;
    lines without one are embedded by the provider (or left pending if it fails).
    """
    from mindscape.memory.bulk_import import import_memories

    settings = _settings(config)

    async def main() -> None:
        targets = await prepare(settings)
        with _progress() as progress:
            report = await import_memories(
                settings, targets, tenant_slug=tenant, path=file, batch=batch, progress=progress
            )
        out.print(
            Text(
                f"imported {report.imported} memories into {tenant}: {report.duplicates} duplicate(s) skipped, "
                f"{report.from_file} embedded from the file, {report.by_provider} embedded by the provider, "
                f"{report.pending} pending ({report.model})"
            ),
            soft_wrap=True,
        )
        if report.provider_error is not None and report.pending:
            out.print(
                Text(
                    f"the provider failed ({report.provider_error}); keyword recall finds the pending memories now, "
                    f"`mindscape memory backfill --tenant {tenant}` embeds them"
                ),
                soft_wrap=True,
            )
        await _index_after(settings, targets, tenant)

    _interruptible(main, "the import is one transaction, so nothing was written")


@memory_app.command("backfill")
def memory_backfill(tenant: TenantOption, batch: BatchOption = 64, config: ConfigOption = None) -> None:
    """Embed the tenant's memories that lack an embedding for its model (stored while the provider failed)."""
    from mindscape.memory.reembed import backfill

    settings = _settings(config)

    async def main() -> None:
        targets = await prepare(settings)
        with _progress() as progress:
            report = await backfill(settings, targets, tenant_slug=tenant, batch=batch, progress=progress)
        out.print(
            Text(f"embedded {report.embedded} pending memories of {tenant} with {report.model}; none left"),
            soft_wrap=True,
        )
        await _index_after(settings, targets, tenant)

    _interruptible(main, "the batches stored so far are kept; run the same command again to continue")


@memory_app.command("reembed")
def memory_reembed(
    tenant: TenantOption,
    model: Annotated[str, typer.Option("--model", help="Model name to embed with.", show_default=False)],
    provider: Annotated[
        Literal["local", "hashing", "openai"] | None,
        typer.Option("--provider", help="Embedding provider [default: the configured one]", show_default=False),
    ] = None,
    dimensions: Annotated[
        int | None,
        typer.Option(
            "--dimensions", min=16, max=2000, help="Vector size [default: the configured one]", show_default=False
        ),
    ] = None,
    batch: BatchOption = 64,
    config: ConfigOption = None,
) -> None:
    """Embed every memory with another model, then switch the tenant to it.

    Recall keeps using the current model until every memory has the new one's embedding. Resumable:
    after Ctrl-C or a provider failure, the same command continues with the memories still missing.
    """
    from mindscape.memory.reembed import reembed, target_spec

    settings = _settings(config)

    async def main() -> None:
        target = target_spec(settings, model=model, provider=provider, dimensions=dimensions)
        targets = await prepare(settings)
        with _progress() as progress:
            report = await reembed(settings, targets, tenant_slug=tenant, target=target, batch=batch, progress=progress)
        lines = [f"embedded {report.embedded} memories of {tenant} with {report.target}"]
        if report.index_built:
            lines.insert(0, f"built the HNSW index for {report.target}")
        if report.switched:
            lines.append(f"switched {tenant} from {report.previous} to {report.target}")
        else:
            lines.append(f"{tenant} already uses {report.target}: nothing to switch")
        out.print(Text("\n".join(lines)), soft_wrap=True)
        await _index_after(settings, targets, tenant)

    _interruptible(main, "the batches stored so far are kept; run the same command again to continue")


@memory_app.command("index")
def memory_index(
    tenant: Annotated[
        str | None, typer.Option("--tenant", help="Only this tenant [default: every tenant]", show_default=False)
    ] = None,
    check: Annotated[bool, typer.Option("--check", help="Report missing indexes without building them.")] = False,
    config: ConfigOption = None,
) -> None:
    """Give each tenant above memory_exact_max_rows an HNSW index of its own (recall@10 >= 0.95 needs it).

    Smaller tenants are ranked exactly and need none. Builds do not block writers (CONCURRENTLY);
    the server picks a new index up within a minute. Needs the owner connection.
    """
    from mindscape.memory.indexing import index_tenants

    settings = _settings(config)

    async def main() -> None:
        targets = await prepare(settings)
        report = await index_tenants(settings, targets, tenant_slug=tenant, build=not check)
        table = Table("tenant", "model", "embeddings", "own index", box=None)
        above = f"> {settings.memory_exact_max_rows:,}"
        for row in report:
            count = above if row.embeddings > settings.memory_exact_max_rows else f"{row.embeddings:,}"
            table.add_row(*_row(row.tenant, row.model, count if row.model else "", row.state))
        out.print(table)
        if any(r.state == "missing" for r in report):
            raise typer.Exit(1)

    _interruptible(main, "an interrupted build leaves nothing behind: the next run rebuilds it")


async def _index_after(settings: Settings, targets: Targets, tenant: str) -> None:
    """After a bulk change: the tenant's own index, if it has outgrown exact ranking."""
    from mindscape.memory.indexing import index_tenants

    for row in await index_tenants(settings, targets, tenant_slug=tenant):
        if row.state == "built":
            out.print(Text(f"built an HNSW index of its own for {tenant} ({row.model})"), soft_wrap=True)

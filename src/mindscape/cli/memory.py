"""`mindscape memory import|backfill|reembed|index`: one tenant's memories in bulk.

Progress bars go to stderr (only on a terminal); Ctrl-C is one line saying what was kept.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Literal

import typer
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
    progress,
    row,
    run_interruptible,
)
from mindscape.config.settings import Settings
from mindscape.database.prepare import prepare
from mindscape.database.targets import Targets


def bulk(settings: Settings) -> Settings:
    """Settings for a bulk command: thousands of texts to embed, so the local model gets one ONNX
    Runtime thread per core unless `embedding_threads` says otherwise (a server gets one)."""
    if settings.embedding_threads is not None:
        return settings
    return settings.model_copy(update={"embedding_threads": os.cpu_count() or 1})


memory_app = typer.Typer(help="Memories of one tenant: import, backfill, reembed.", no_args_is_help=True)

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

    settings = bulk(load(config))

    async def main() -> None:
        targets = await prepare(settings)
        with progress() as bar:
            report = await import_memories(settings, targets, tenant_slug=tenant, path=file, batch=batch, progress=bar)
        out.print(
            Text(
                f"imported {report.imported} memories into {tenant}: {report.duplicates} duplicate(s) skipped, "
                f"{report.from_file} embedded from the file, {report.by_provider} embedded by the provider, "
                f"{report.pending} pending ({report.model})"
            ),
            soft_wrap=True,
        )
        if report.by_provider:
            rate = report.by_provider / report.embedding_s if report.embedding_s > 0 else 0.0
            out.print(
                Text(f"embedding: {report.by_provider} memories in {report.embedding_s:.1f} s ({rate:.0f}/s)"),
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

    run_interruptible(main, "the import is one transaction, so nothing was written")


@memory_app.command("backfill")
def memory_backfill(tenant: TenantOption, batch: BatchOption = 64, config: ConfigOption = None) -> None:
    """Embed the tenant's memories that lack an embedding for its model (stored while the provider failed)."""
    from mindscape.memory.reembed import backfill

    settings = bulk(load(config))

    async def main() -> None:
        targets = await prepare(settings)
        with progress() as bar:
            report = await backfill(settings, targets, tenant_slug=tenant, batch=batch, progress=bar)
        out.print(
            Text(f"embedded {report.embedded} pending memories of {tenant} with {report.model}; none left"),
            soft_wrap=True,
        )
        await _index_after(settings, targets, tenant)

    run_interruptible(
        main, "the batches stored so far are kept; run the same command again to continue", between_batches=True
    )


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

    settings = bulk(load(config))

    async def main() -> None:
        target = target_spec(settings, model=model, provider=provider, dimensions=dimensions)
        targets = await prepare(settings)
        with progress() as bar:
            report = await reembed(settings, targets, tenant_slug=tenant, target=target, batch=batch, progress=bar)
        lines = [f"embedded {report.embedded} memories of {tenant} with {report.target}"]
        if report.index_built:
            lines.insert(0, f"built the HNSW index for {report.target}")
        if report.switched:
            lines.append(f"switched {tenant} from {report.previous} to {report.target}")
        else:
            lines.append(f"{tenant} already uses {report.target}: nothing to switch")
        out.print(Text("\n".join(lines)), soft_wrap=True)
        await _index_after(settings, targets, tenant)

    run_interruptible(
        main, "the batches stored so far are kept; run the same command again to continue", between_batches=True
    )


@memory_app.command("index")
def memory_index(
    tenant: Annotated[
        str | None, typer.Option("--tenant", help="Only this tenant [default: every tenant]", show_default=False)
    ] = None,
    check: Annotated[bool, typer.Option("--check", help="Report missing indexes without building them.")] = False,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Give each tenant above memory_exact_max_rows an HNSW index of its own (recall@10 >= 0.95 needs it).

    Smaller tenants are ranked exactly and need none. Builds do not block writers (CONCURRENTLY);
    the server picks a new index up within a minute. Needs the owner connection.
    """
    from mindscape.memory.indexing import index_tenants

    settings = load(config)

    async def main() -> None:
        targets = await prepare(settings)
        report = await index_tenants(settings, targets, tenant_slug=tenant, build=not check)
        if as_json:
            # embeddings: counted up to the threshold + 1, so `above_threshold` says what a larger count means.
            limit = settings.memory_exact_max_rows
            print_json([asdict(t) | {"above_threshold": t.embeddings > limit, "threshold": limit} for t in report])
        else:
            table = Table(*(Column(h, no_wrap=True) for h in ("tenant", "model", "embeddings", "own index")), box=None)
            above = f"> {settings.memory_exact_max_rows:,}"
            for t in report:
                count = above if t.embeddings > settings.memory_exact_max_rows else f"{t.embeddings:,}"
                table.add_row(*row(t.tenant, t.model, count if t.model else "", t.state))
            print_table(table)
        if any(r.state == "missing" for r in report):
            raise typer.Exit(1)

    run_interruptible(main, "an interrupted build leaves nothing behind: the next run rebuilds it")


async def _index_after(settings: Settings, targets: Targets, tenant: str) -> None:
    """After a bulk change: the tenant's own index, if it has outgrown exact ranking."""
    from mindscape.memory.indexing import index_tenants

    for t in await index_tenants(settings, targets, tenant_slug=tenant):
        if t.state == "built":
            out.print(Text(f"built an HNSW index of its own for {tenant} ({t.model})"), soft_wrap=True)

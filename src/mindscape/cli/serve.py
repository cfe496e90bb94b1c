"""`mindscape serve`: MCP over stdio for one tenant, or over HTTP (or legacy SSE) for every tenant."""

from __future__ import annotations

import socket
from contextlib import nullcontext
from typing import Annotated, Literal

import typer

from mindscape.cli.common import ConfigOption, err, fail, load, run
from mindscape.config.settings import Settings
from mindscape.database.prepare import prepare
from mindscape.errors import MindscapeError


def serve(
    config: ConfigOption = None,
    tenant: Annotated[str | None, typer.Option(help="Tenant slug to serve over stdio (or MINDSCAPE_TENANT).")] = None,
    persona: Annotated[
        str | None, typer.Option(help="stdio: the persona the agent acts as (or MINDSCAPE_PERSONA).")
    ] = None,
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
    # Imported here: the MCP SDK takes seconds to import, and only `serve` needs it.
    from mindscape.app.server import build_server
    from mindscape.app.state import freeze_startup_objects, open_state
    from mindscape.app.tracing import start as start_tracing
    from mindscape.embeddings.factory import semantic
    from mindscape.transports.http.app import serve_http
    from mindscape.transports.http.listen import bind
    from mindscape.transports.stdio import serve_stdio

    settings = load(config, tenant=tenant, persona=persona, http_stateless=stateless or None, http_workers=workers)
    if settings.http_workers > 1 and transport != "http":
        fail(MindscapeError(f"--workers > 1 needs --transport http: {transport} keeps its sessions in memory"))
    try:
        # Bound first: a busy port fails in one line before the database is started.
        sock = bind(host, port) if transport != "stdio" else None
    except MindscapeError as exc:
        fail(exc)
    if settings.http_workers > 1 and sock is not None:
        _serve_workers(settings, sock, host=host, port=port)
        return

    async def main() -> None:
        targets = await prepare(settings)
        # The state is opened before serving so that a bad tenant or database stops the
        # process with one line instead of failing the client's first request.
        served_as = "stdio" if transport == "stdio" else "http"  # SSE, like HTTP, takes the tenant from the key
        owner = targets.owner if targets.embedded else None  # the embedded server builds tenants' indexes itself
        async with open_state(settings, targets.runtime, transport=served_as, owner_url=owner) as state:
            freeze_startup_objects()
            if sock is not None and transport != "stdio":
                await serve_http(state, sock, host=host, port=port, transport=transport)
            else:
                start_tracing(state.settings)
                server = build_server(
                    lambda: nullcontext(state),
                    semantic=semantic(state.settings),
                    replica_reads=state.read_pool is not None,
                )
                await serve_stdio(server)

    run(main)


def _serve_workers(settings: Settings, sock: socket.socket, *, host: str, port: int) -> None:
    """Migrate and check the database once, here in the parent, then start the workers."""
    from mindscape.app.state import open_state
    from mindscape.ops.serving import workers_capacity_warning
    from mindscape.transports.http.workers import run_workers

    async def check() -> str:
        targets = await prepare(settings)
        async with open_state(settings, targets.runtime, transport="http") as state:
            warning = await workers_capacity_warning(settings, state.pool)
        if warning is not None:
            err.print(f"warning: {warning}", soft_wrap=True)
        return targets.runtime

    runtime = run(check)
    run_workers(settings, runtime, sock, host=host, port=port)

"""The `mindscape` command: the root app and its commands, one module per command group.

Shared helpers (consoles, options, settings, one-line failures) are in `common`; a new group is
a module exposing a typer app, registered below with one `app.add_typer(...)` line.
"""

from __future__ import annotations

import signal
from types import FrameType

import typer

from mindscape.cli.audit import audit_app
from mindscape.cli.db import db_app
from mindscape.cli.demo import demo
from mindscape.cli.doctor import doctor
from mindscape.cli.keys import key_app
from mindscape.cli.memory import memory_app
from mindscape.cli.model import model_app
from mindscape.cli.personas import persona_app
from mindscape.cli.serve import serve
from mindscape.cli.tenants import tenant_app
from mindscape.database.embedded import stop_embedded

app = typer.Typer(
    help="Mindscape: a tenant-scoped PostgreSQL database for AI agents, over MCP.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals can hold database URLs with passwords
)
# `mindscape --help` lists the commands (doctor, serve, demo) before the groups, each in this order.
app.add_typer(db_app, name="db")
app.add_typer(tenant_app, name="tenant")
app.add_typer(persona_app, name="persona")
app.add_typer(memory_app, name="memory")
app.add_typer(audit_app, name="audit")
app.add_typer(key_app, name="key")
app.add_typer(model_app, name="model")
app.command()(doctor)
app.command()(serve)
app.command()(demo)


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    """The `mindscape` command: `app`, with the embedded database stopped on every way out.

    SIGTERM unwinds the command like Ctrl-C does (every `finally` runs) instead of killing the
    process on the spot; `serve` catches both signals itself and stops cleanly with exit code 0.
    """
    signal.signal(signal.SIGTERM, _terminate)
    try:
        app(prog_name="mindscape")
    finally:
        stop_embedded()

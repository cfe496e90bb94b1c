"""Running the `mindscape` command in-process (Typer's runner) against the shared test cluster.

The cluster is seen as an external database: its runtime and owner URLs come from the
environment, as an operator would set them. Also: reading what the CLI wrote, as the owner.
"""

from __future__ import annotations

import json
import signal
import uuid
from pathlib import Path
from typing import Any

import anyio
from typer.testing import CliRunner, Result

from mindscape.cli import app
from mindscape.database.pool import connect
from mindscape.database.targets import Targets
from mindscape.tenancy.caller import Caller
from tests.support.external import inspect_url
from tests.support.tenants import pooler_env

runner = CliRunner()


def interruptible() -> None:
    """`preexec_fn` for a command a test sends Ctrl-C: SIGINT at its default and not blocked, as
    in a terminal, whatever the test process inherited or an earlier test left (a child inherits
    an ignored or blocked SIGINT, and would never see the Ctrl-C)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def cli_env(targets: Targets, **extra: str) -> dict[str, str]:
    # A wide console keeps rich tables on one line per row.
    return {
        "MINDSCAPE_DATABASE_URL": targets.runtime,
        "MINDSCAPE_OWNER_DATABASE_URL": targets.owner,
        **pooler_env(targets),
        "COLUMNS": "250",
        **extra,
    }


def mindscape(targets: Targets, *args: str | Path, **env: str) -> Result:
    return runner.invoke(app, [str(a) for a in args], env=cli_env(targets, **env))


def doctor(targets: Targets, **env: str) -> Result:
    return runner.invoke(app, ["doctor"], env=cli_env(targets, **env))


def unique_slug(prefix: str = "cli") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got: {text!r}"
    return lines[0]


def line_of(output: str, start: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip().startswith(start)]
    assert len(lines) == 1, f"no single line starting {start!r} in:\n{output}"
    return lines[0]


def row_of(table: str, slug: str) -> str:
    """The rendered table row whose first cell is `slug`."""
    rows = [line for line in table.splitlines() if line.strip("│ ").split(" ", 1)[0] == slug]
    assert len(rows) == 1, f"no single row for {slug!r} in:\n{table}"
    return rows[0]


def write_jsonl(path: Path, lines: list[dict[str, Any] | str]) -> Path:
    """Objects as JSON, strings verbatim (for lines that are not valid JSON)."""
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    return path


def owner_fetch(targets: Targets, statement: str, *args: Any) -> list[dict[str, Any]]:
    """As a superuser, outside row-level security: every row there is."""

    async def fetch() -> list[dict[str, Any]]:
        conn = await connect(inspect_url(targets))
        try:
            return [dict(r) for r in await conn.fetch(statement, *args)]
        finally:
            await conn.close()

    return anyio.run(fetch)


def stored_memories(targets: Targets, tenant: Caller) -> dict[str, dict[str, Any]]:
    rows = owner_fetch(
        targets,
        "SELECT m.content, p.slug AS persona, m.kind, m.metadata, m.importance, m.created_at "
        "FROM mindscape.memories m LEFT JOIN mindscape.personas p ON p.tenant_id = m.tenant_id AND p.id = m.persona_id "
        "WHERE m.tenant_id = $1",
        tenant.tenant_id,
    )
    return {f"{r['persona']}:{r['content']}": r for r in rows}

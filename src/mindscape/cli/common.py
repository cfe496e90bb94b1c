"""What every `mindscape` command shares: the consoles, the common options, settings, and failing in one line.

Every command prints failures as one line on stderr and exits 1; stdout stays clean for
`serve`, where it is the MCP wire. Progress bars go to stderr, and only when it is a terminal;
results go to stdout: a table (`print_table`, which never cuts an id) or, with `--json`, JSON
(`print_json`, full ids, ISO 8601 times).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import anyio
import asyncpg
import typer
from pydantic_core import to_jsonable_python
from rich import filesize
from rich.cells import cell_len
from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from mindscape.config.settings import Settings, load_settings
from mindscape.errors import MindscapeError

# uvloop where the platform has it (not Windows): a faster event loop under every command, the
# server's included (~50 us less per stdio call measured, docs/decisions.md). uvicorn's own
# workers pick it by themselves (loop="auto").
LOOP_OPTIONS: dict[str, Any] = {"use_uvloop": importlib.util.find_spec("uvloop") is not None}

out = Console()
err = Console(stderr=True)
T = TypeVar("T")

ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="TOML settings file (or MINDSCAPE_CONFIG).", show_default=False)
]
TenantOption = Annotated[str, typer.Option("--tenant", help="Tenant slug.", show_default=False)]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print JSON (full ids, ISO 8601 times in UTC) instead of a table.")
]


def fail(exc: BaseException) -> NoReturn:
    """One red line on stderr, exit code 1."""
    # Text, not markup: messages echo user input (slugs, file contents, regex patterns with [...]).
    err.print(Text.assemble(("error:", "red"), " ", str(exc)), soft_wrap=True)
    raise typer.Exit(1)


def load(config: Path | None, **flags: Any) -> Settings:
    """Settings from the config file, MINDSCAPE_* and the command's flags; logging to stderr at their level."""
    try:
        settings = load_settings(config, **flags)
    except MindscapeError as exc:
        fail(exc)
    logging.basicConfig(stream=sys.stderr, level=settings.log_level, format="%(levelname)s %(name)s: %(message)s")
    return settings


def run(main: Callable[[], Awaitable[T]]) -> T:
    """Run an async command; anticipated failures become one line on stderr and exit code 1."""
    try:
        return anyio.run(main, backend_options=LOOP_OPTIONS)
    except MindscapeError as exc:
        fail(exc)
    except asyncpg.PostgresError as exc:  # the operator's own database said no: show what it said
        fail(MindscapeError(f"database error ({exc.sqlstate}): {exc}"))
    except BaseExceptionGroup as group:  # raised from inside the server's task groups
        anticipated = group.subgroup(MindscapeError)
        if anticipated is None:
            raise
        first = anticipated.exceptions[0]
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        fail(first)


def run_interruptible(main: Callable[[], Awaitable[T]], interrupted: str, *, between_batches: bool = False) -> T:
    """`run`, with Ctrl-C reported in one line (`interrupted`) and exit code 130 instead of a traceback.

    `between_batches`: for commands whose work is a series of committed batches (backfill,
    reembed). Ctrl-C then raises KeyboardInterrupt where the program is, as Python does by default,
    instead of asyncio.Runner's cancellation of the main task, which a shielded section (a
    transaction's end) could absorb: under load a reembed went on to the end after Ctrl-C. What
    the batches committed stays; the batch in flight is not stored.
    """
    previous = signal.signal(signal.SIGINT, _keyboard_interrupt) if between_batches else None
    try:
        return run(main)
    except KeyboardInterrupt:
        _report_interrupt(interrupted)
    except BaseExceptionGroup as group:  # raised inside a task group
        if group.subgroup(KeyboardInterrupt) is None:
            raise
        _report_interrupt(interrupted)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _keyboard_interrupt(signum: int, frame: object) -> None:
    del signum, frame
    raise KeyboardInterrupt


def _report_interrupt(interrupted: str) -> NoReturn:
    err.print(Text.assemble(("interrupted:", "red"), " ", interrupted), soft_wrap=True)
    raise typer.Exit(130) from None


def row(*cells: str) -> list[Text]:
    """Table cells as plain text: names and tags are user data, not rich markup or emoji codes."""
    return [Text(cell) for cell in cells]


def print_json(value: object) -> None:
    """`value` (pydantic models, dataclasses, lists and dicts of them) as indented JSON on stdout."""
    sys.stdout.write(json.dumps(to_jsonable_python(value), indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def print_table(table: Table) -> None:
    """Print `table` without cutting a cell of its `no_wrap` columns (ids, slugs, times).

    Those columns get the width of their longest cell and the others wrap. When the console is
    narrower than that (80 columns, or a pipe), the table is printed wider rather than cut: the
    terminal wraps the long lines, and every id can still be copied whole.
    """
    for column in table.columns:
        if column.no_wrap:
            lines = [line for cell in (column.header, *column.cells) for line in str(cell).splitlines()]
            column.min_width = max((cell_len(line) for line in lines), default=1)
    needed = out.measure(table, options=out.options.update_width(1_000_000)).minimum
    width = out.width
    out.width = max(width, needed)
    try:
        out.print(table, crop=False)
    finally:
        out.width = width


class _Count(ProgressColumn):
    """Done/total: memories, or file sizes for tasks added with `bytes=True`."""

    def render(self, task: Task) -> Text:
        done, total = int(task.completed), int(task.total or 0)
        if task.fields.get("bytes"):
            return Text(f"{filesize.decimal(done)}/{filesize.decimal(total)}", style="progress.download")
        return Text(f"{done}/{total}", style="progress.download")


def progress() -> Progress:
    """A progress bar on stderr; off when stderr is not a terminal (a log has no use for one)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        _Count(),
        TimeRemainingColumn(),
        console=err,
        disable=not err.is_terminal,
    )

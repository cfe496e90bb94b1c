"""`mindscape model`: the local embedding model (fetch it ahead of time, for images, CI caches and air gaps)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from rich.text import Text

from mindscape.config.settings import load_settings
from mindscape.embeddings.base import ModelUnavailable
from mindscape.embeddings.factory import local_source
from mindscape.embeddings.local import ModelSource, describe_model, directory_size, download, find_model
from mindscape.errors import MindscapeError

model_app = typer.Typer(help="The local embedding model: pull.", no_args_is_help=True)
out = Console()
err = Console(stderr=True)
PULL_FIX = (
    "without the hub: copy the model directory from a machine that has it and set MINDSCAPE_EMBEDDING_MODEL_PATH "
    "to it (or set HF_ENDPOINT to a mirror)"
)


def _fail(message: str) -> NoReturn:
    err.print(Text.assemble(("error:", "red"), " ", message), soft_wrap=True)
    raise typer.Exit(1)


def pull_model(source: ModelSource, console: Console) -> Path:
    """The model's directory: found, or downloaded with a progress bar on `console` (when it is a terminal)."""
    found = find_model(source)
    if found is not None:
        return found
    if source.path is not None:  # an explicit directory is never downloaded into
        raise ModelUnavailable(
            f"embedding model {source.name} is not in {source.path} (embedding_model_path): copy the model "
            "there, or unset MINDSCAPE_EMBEDDING_MODEL_PATH to download it into the model cache"
        )
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not console.is_terminal,
        transient=True,
    ) as progress:
        task = progress.add_task(f"downloading {source.name}", total=None)
        try:
            return download(
                source.name,
                source.cache_dir,
                progress=lambda done, total: progress.update(task, completed=done, total=total),
            )
        except ModelUnavailable as exc:
            raise ModelUnavailable(f"{exc}; {PULL_FIX}") from None


@model_app.command("pull")
def pull(
    config: Annotated[
        Path | None, typer.Option("--config", help="TOML settings file (or MINDSCAPE_CONFIG).", show_default=False)
    ] = None,
) -> None:
    """Download the local embedding model into the model cache (<data_dir>/models), unless it is there."""
    try:
        settings = load_settings(config)
        source = local_source(settings)
        describe_model(source.name)  # an unknown model name fails here, before any network
        started = time.perf_counter()
        already = find_model(source)
        found = already or pull_model(source, err)
    except MindscapeError as exc:
        _fail(str(exc))
    size = directory_size(found) / 1e6
    if already is not None:
        out.print(Text(f"{source.name} is already in {found} ({size:.0f} MB)"), soft_wrap=True)
    else:
        elapsed = time.perf_counter() - started
        out.print(Text(f"downloaded {source.name} into {found} ({size:.0f} MB) in {elapsed:.1f} s"), soft_wrap=True)
    if settings.embedding_provider != "local":
        out.print(
            Text(f'embedding_provider is {settings.embedding_provider}: set it to "local" to use this model'),
            soft_wrap=True,
        )

"""Every `mindscape` command in the README and the docs runs as written from a clone: `uv run mindscape ...`.

A bare `mindscape` is not on PATH in a clone (it lives in the project's .venv). Checked: each
line of shell code blocks and each inline code span outside code blocks.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

FENCE = re.compile(r"^```(\w*)\s*$")
SPAN = re.compile(r"`([^`\n]+)`")
SHELL = {"sh", "bash", "shell", "console", ""}


def documents(repo_root: Path) -> list[Path]:
    return [
        repo_root / "README.md",
        repo_root / "benchmarks" / "README.md",
        repo_root / "config" / "clients" / "README.md",
        *sorted((repo_root / "docs").glob("*.md")),
    ]


def bare_commands(text: str) -> list[str]:
    """Commands that start with a bare `mindscape` (shell lines, and inline spans outside code blocks)."""
    found: list[str] = []
    language: str | None = None  # inside a code block: its language
    for line in text.splitlines():
        fence = FENCE.match(line.strip())
        if fence:
            language = None if language is not None else fence.group(1)
            continue
        if language is None:
            found += [span for span in SPAN.findall(line) if span.startswith("mindscape ")]
        elif language in SHELL:
            command = line.strip().removeprefix("$ ")
            if command.startswith("mindscape "):
                found.append(command)
    return found


def test_the_check_finds_bare_commands() -> None:
    text = (
        "run `mindscape db upgrade` or `uv run mindscape doctor`\n```sh\nmindscape serve\nuv run mindscape demo\n```\n"
    )
    assert bare_commands(text) == ["mindscape db upgrade", "mindscape serve"]


@pytest.mark.parametrize("name", ["README.md", "docs", "benchmarks/README.md", "config/clients/README.md"])
def test_commands_in_the_docs_start_with_uv_run(repo_root: Path, name: str) -> None:
    paths = [p for p in documents(repo_root) if p.relative_to(repo_root).as_posix().startswith(name)]
    assert paths
    bare = {p.name: found for p in paths if (found := bare_commands(p.read_text(encoding="utf-8")))}
    assert bare == {}

"""The pinned MCP Inspector CLI, shared by the stdio and HTTP tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

INSPECTOR = "@modelcontextprotocol/inspector@2.12.0"


def inspector_cli(repo_root: Path) -> list[str]:
    """The pinned Inspector, installed once into a cache dir (npm registry only, no binaries fetched)."""
    npm = shutil.which("npm")
    if shutil.which("npx") is None or npm is None:
        pytest.skip("npx is not installed: the MCP Inspector CLI test needs Node.js")
    prefix = repo_root / ".cache" / "inspector"
    launcher = prefix / "node_modules" / ".bin" / "mcp-inspector"
    if not launcher.exists():
        prefix.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--loglevel=error", INSPECTOR],
            check=True,
            timeout=600,
        )
    return [str(launcher), "--cli"]

"""Real MCP clients of other generations, installed from the registries into throwaway environments.

Each is installed once into `.cache/clients/` (reused by later runs) from PyPI or npm, by
version; uv's and npm's caches make a reinstall on a fresh checkout quick. The client programs
are `tests/support/clients/`: each lists tools, calls a read and a write tool, reads a resource
and prints what it saw as JSON.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.uv import uv_binary

CLIENTS = Path(__file__).resolve().parent / "clients"
PYTHON_OLDEST = "1.3.0"  # the oldest 1.x that still connects: 2024-11-05 protocol, SSE for HTTP
PYTHON_LATEST = "1.30.0"  # the last 1.x release
# Its dependencies as they were when it was current: mcp 1.3 breaks on pydantic >= 2.11.
ERA = {PYTHON_OLDEST: "2025-03-10"}
TS_SDK = "@modelcontextprotocol/sdk@1.32.2"


def _cache(repo_root: Path) -> Path:
    return repo_root / ".cache" / "clients"


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, f"{' '.join(command[:4])} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"


def python_client(repo_root: Path, version: str) -> list[str]:
    """`python mcp1_client.py` in a venv holding `mcp==version` and nothing of this project."""
    venv = _cache(repo_root) / f"python-mcp-{version}"
    python = venv / "bin" / "python"
    installed = venv / "installed.txt"
    if not installed.exists():
        shutil.rmtree(venv, ignore_errors=True)  # a half-made one from an interrupted run
        uv = uv_binary()
        _run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)])
        era = ["--exclude-newer", ERA[version]] if version in ERA else []
        _run([uv, "pip", "install", "--quiet", "--python", str(python), *era, f"mcp=={version}"])
        installed.write_text(f"mcp=={version}\n")
    return [str(python), str(CLIENTS / "mcp1_client.py")]


def typescript_client(repo_root: Path) -> list[str]:
    """`node ts_client.mjs` beside an npm install of the pinned TypeScript SDK."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("Node.js is not installed: the TypeScript SDK client needs it")
    prefix = _cache(repo_root) / f"ts-{TS_SDK.rsplit('@', 1)[1]}"
    if not (prefix / "node_modules" / "@modelcontextprotocol" / "sdk" / "package.json").exists():
        prefix.mkdir(parents=True, exist_ok=True)
        _run([npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--loglevel=error", TS_SDK])
    # Beside its node_modules, so that the ES module finds the SDK.
    script = prefix / "ts_client.mjs"
    shutil.copyfile(CLIENTS / "ts_client.mjs", script)
    return [node, str(script)]

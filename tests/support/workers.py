"""Talking to one chosen worker of `serve --stateless --workers N`: a kept-alive connection per worker.

The workers share one listening socket, so the kernel decides which one accepts a connection.
A connection is opened, the worker process that holds its other end is found (psutil), and it
is kept (HTTP/1.1 keep-alive) as the way to that worker; connections that landed on a worker
already covered are closed.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import time
from typing import Any

import psutil

MCP_HEADERS = {
    "Accept": "application/json, text/event-stream",
    "Content-Type": "application/json",
    "mcp-protocol-version": "2025-11-25",
}
TOOLS_LIST = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}})


def worker_pids(proc: subprocess.Popen[bytes]) -> list[int]:
    return [c.pid for c in psutil.Process(proc.pid).children() if "spawn_main" in " ".join(c.cmdline())]


def connection_per_worker(
    port: int, pids: list[int], *, within_s: float = 30.0
) -> dict[int, http.client.HTTPConnection]:
    """One open connection to each worker in `pids`, by worker pid."""
    found: dict[int, http.client.HTTPConnection] = {}
    deadline = time.monotonic() + within_s
    while len(found) < len(pids):
        assert time.monotonic() < deadline, f"connections reached only workers {sorted(found)} of {pids}"
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.connect()
        assert conn.sock is not None
        local_port = conn.sock.getsockname()[1]
        holder = _holder(pids, local_port)
        if holder is None or holder in found:
            conn.close()
            continue
        found[holder] = conn
    return found


def _holder(pids: list[int], local_port: int) -> int | None:
    """The worker that accepted the connection from `local_port` (it may take a moment to accept)."""
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        for pid in pids:
            for c in psutil.Process(pid).net_connections(kind="tcp"):
                if c.raddr and c.raddr.port == local_port:
                    return pid
        time.sleep(0.005)
    return None


def status(conn: http.client.HTTPConnection, key: str) -> int:
    """POST a tools/list with `key` on this worker's connection; the HTTP status."""
    conn.request("POST", "/mcp", body=TOOLS_LIST, headers={**MCP_HEADERS, "Authorization": f"Bearer {key}"})
    response = conn.getresponse()
    response.read()
    return response.status


def metrics(conn: http.client.HTTPConnection) -> dict[str, float]:
    """This worker's /metrics samples without labels, by name."""
    conn.request("GET", "/metrics")
    response = conn.getresponse()
    text = response.read().decode()
    samples: dict[str, Any] = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, value = line.split()
            samples[name] = float(value)
    return samples

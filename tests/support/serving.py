"""A real `mindscape serve` process on a loopback port, for tests over the network.

Shared by the SSE, Inspector and metrics tests; the server is started exactly as an operator
would start it, with the runtime role's URL, and is reachable once `/healthz` answers.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Generator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx2
import pytest

from mindscape.database.targets import Targets
from tests.support.tenants import pooler_env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(
    targets: Targets, transport: str, log: Path, extra_env: dict[str, str] | None = None
) -> Generator[str]:
    """Yield the base URL (http://127.0.0.1:PORT) of a `serve --transport TRANSPORT` process."""
    with server_process(targets, log, "--transport", transport, env=extra_env) as (_proc, url):
        yield url


@contextmanager
def server_process(
    targets: Targets, log: Path, *args: str, env: Mapping[str, str] | None = None
) -> Generator[tuple[subprocess.Popen[bytes], str]]:
    """`mindscape serve ARGS --port P` once /healthz answers: the process (to signal it) and its base URL."""
    port = free_port()
    env = {
        **os.environ,
        "MINDSCAPE_DATABASE_URL": targets.runtime,
        **pooler_env(targets),
        "MINDSCAPE_LOG_LEVEL": "INFO",
        **(env or {}),
    }
    with log.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mindscape", "serve", *args, "--port", str(port)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(proc, url, log)
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(timeout=60)


def _wait_until_up(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    # Polling, not timing: the deadline only bounds a server that never comes up.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx2.get(f"{url}/healthz").status_code == 200:
                return
        except httpx2.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"server did not come up:\n{log.read_text()}")

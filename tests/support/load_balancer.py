"""HAProxy (Debian's package) with the shipped config/examples/haproxy.cfg, in front of test replicas.

Only the addresses change, through the environment variables the file reads; everything else
(health checks on /readyz, retries, timeouts) is the file as operators get it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Generator
from contextlib import contextmanager
from pathlib import Path

import httpx2
import pytest

from tests.support.serving import free_port

CONFIG = Path(__file__).resolve().parents[2] / "config" / "examples" / "haproxy.cfg"


def haproxy_binary() -> str | None:
    return shutil.which("haproxy") or next((p for p in ("/usr/sbin/haproxy",) if os.access(p, os.X_OK)), None)


@contextmanager
def haproxy(replicas: list[str], log: Path) -> Generator[str]:
    """Yield the load balancer's base URL once it answers /readyz; `replicas` are base URLs of servers."""
    binary = haproxy_binary()
    if binary is None:
        pytest.skip("HAProxy is not installed (apt-get install haproxy); .ci/run installs it")
    port = free_port()
    env = {
        **os.environ,
        "MINDSCAPE_LB_BIND": f"127.0.0.1:{port}",
        **{f"MINDSCAPE_REPLICA_{n}": url.removeprefix("http://") for n, url in enumerate(replicas, start=1)},
    }
    with log.open("wb") as stderr:
        proc = subprocess.Popen([binary, "-db", "-f", str(CONFIG)], env=env, stdout=stderr, stderr=stderr, cwd="/")
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60  # a hang guard, not an assertion
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"haproxy exited with {proc.returncode}:\n{log.read_text()}")
            try:
                if httpx2.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            time.sleep(0.1)
        else:
            pytest.fail(f"haproxy did not come up:\n{log.read_text()}")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)

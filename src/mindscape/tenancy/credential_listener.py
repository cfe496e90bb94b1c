"""Keeps one process's credential cache fresh: LISTEN on one dedicated connection, evict on each notification.

Migration 0010's triggers notify `mindscape_credentials` whenever an API key or a tenant row
changes. This task holds its own connection (never one of the pools': a pooled connection is
handed to other work between requests), LISTENs there and evicts what each notification names,
so a revocation or a disabled tenant takes effect in every process as soon as it commits.

A notification sent while the connection is down is never delivered, so:
- the moment the connection is lost (asyncpg's termination callback, run synchronously on this
  event loop), the whole cache is dropped and serves nothing;
- a connection that died silently (no FIN, e.g. a network partition) is found by a `SELECT 1`
  every `check_s`, which must answer within `check_s`;
- once listening again the cache is dropped once more (what happened meanwhile is unknown) and
  starts filling afresh.
Whatever goes unnoticed, an entry is served for `credential_cache_ttl_s` at most: that is the bound.

The connection is a direct one to the primary: LISTEN does not work through a transaction-mode
pooler, and a hot standby sends no notifications (app.state picks the URL).
"""

from __future__ import annotations

import logging

import anyio
import asyncpg

from mindscape.database.pool import FAILURES, connect
from mindscape.database.targets import redact
from mindscape.errors import StartupError
from mindscape.tenancy.credential_cache import CHANNEL, CredentialCache

log = logging.getLogger(__name__)
APPLICATION_NAME = "mindscape-credentials"  # how pg_stat_activity names the listening connections
RETRY_S = 1.0  # between attempts to listen again


class CredentialListener:
    def __init__(self, url: str, cache: CredentialCache, *, check_s: float) -> None:
        self._url = url
        self._cache = cache
        self._check_s = check_s
        self.backend_pid: int | None = None  # the listening server process, while there is one

    async def run(self) -> None:
        """Listen until cancelled, reconnecting after every loss; the cache serves only while listening."""
        try:
            while True:
                try:
                    await self._listen()
                except (*FAILURES, StartupError, TimeoutError) as exc:
                    log.warning(
                        "credential cache off: lost or could not open its LISTEN connection to %s (%s); "
                        "credentials are checked in the database until it is back",
                        redact(self._url),
                        type(exc).__name__,
                    )
                await anyio.sleep(RETRY_S)
        finally:
            self._cache.stop_serving()

    async def _listen(self) -> None:
        conn = await connect(self._url, server_settings={"application_name": APPLICATION_NAME})
        lost = anyio.Event()

        def on_lost(_conn: object) -> None:
            self._cache.stop_serving()  # at once, before anything else runs on this loop
            self.backend_pid = None
            lost.set()

        def on_notification(_conn: object, _pid: int, _channel: str, payload: object) -> None:
            self._cache.notified(str(payload))

        try:
            conn.add_termination_listener(on_lost)
            await conn.add_listener(CHANNEL, on_notification)
            self._cache.start_serving()
            self.backend_pid = conn.get_server_pid()
            log.info("credential cache on: listening for credential changes at %s", redact(self._url))
            while not lost.is_set():
                with anyio.move_on_after(self._check_s):
                    await lost.wait()
                if not lost.is_set():
                    with anyio.fail_after(self._check_s):
                        await conn.fetchval("SELECT 1")
            raise asyncpg.ConnectionDoesNotExistError("the LISTEN connection was closed")
        finally:
            self._cache.stop_serving()
            self.backend_pid = None
            conn.terminate()

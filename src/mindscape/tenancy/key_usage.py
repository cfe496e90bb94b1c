"""When each API key was last used: noted in memory on every request, written in batches off the request path.

Verifying a key only reads (api_key_lookup), so it works on a hot standby and costs the request
no write. The keys this process verified are kept here with the time of their last use, and
`flush` writes them all in one statement (api_keys.touch_many) every `api_key_usage_flush_s` and
once more when the server stops. A stamp is the time of use, on the database's clock, so it is
exact however late it is written. On a standby nothing can be written: the stamps are dropped
there (the primary's own servers stamp the keys they see). A flush that fails keeps its stamps
for the next one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from uuid import UUID

import anyio
import asyncpg

from mindscape.database.pool import Pool
from mindscape.queries import api_keys

log = logging.getLogger(__name__)
FLUSH_TIMEOUT_S = 10.0
MAX_PENDING = 100_000  # keys held between flushes, at most (a flood of distinct keys cannot grow memory)


class KeyUsage:
    def __init__(self, pool: Pool, *, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        """`pool`: the credential pool (on the primary)."""
        self._pool = pool
        self._interval_s = interval_s
        self._clock = clock
        self._pending: dict[UUID, float] = {}  # key id -> when it was last used (self._clock)

    def note(self, key_id: UUID) -> None:
        """Remember that `key_id` was used now (synchronous: no I/O on the request path)."""
        if key_id in self._pending or len(self._pending) < MAX_PENDING:
            self._pending[key_id] = self._clock()

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def flush(self) -> int | None:
        """Write every pending stamp; how many keys changed, or None when the database is a standby."""
        if not self._pending:
            return 0
        batch, self._pending = self._pending, {}
        now = self._clock()
        try:
            with anyio.fail_after(FLUSH_TIMEOUT_S):
                async with self._pool.acquire() as conn:
                    return await api_keys.touch_many(
                        conn, key_ids=list(batch), seconds_ago=[now - used for used in batch.values()]
                    )
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            log.warning("could not stamp the last use of %d API key(s) (%s); retrying later", len(batch), exc)
            for key_id, used in batch.items():  # newer uses noted meanwhile win
                self._pending.setdefault(key_id, used)
            return 0

    async def run(self) -> None:
        """Flush every interval until cancelled, then once more (shielded) so no stamp is lost at shutdown."""
        try:
            while True:
                await anyio.sleep(self._interval_s)
                await self.flush()
        finally:
            with anyio.CancelScope(shield=True):
                await self.flush()

"""uvicorn's Server, but a graceful shutdown on SIGTERM/SIGINT ends the process with exit code 0.

uvicorn already stops listening first, lets in-flight requests finish (up to
`http_shutdown_timeout_s`, then cancels them) and then runs the lifespan shutdown (the pool
closes last). Afterwards it re-raises the signal it caught, so the process would die *by* that
signal; a supervisor would count an orderly stop as a crash.
"""

from __future__ import annotations

import signal
from collections.abc import Generator
from contextlib import contextmanager

import uvicorn

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class GracefulServer(uvicorn.Server):
    @contextmanager
    def capture_signals(self) -> Generator[None]:
        originals = {sig: signal.signal(sig, self.handle_exit) for sig in SIGNALS}
        try:
            yield
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)

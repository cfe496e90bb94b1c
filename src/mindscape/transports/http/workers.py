"""`serve --transport http --stateless --workers N`: N uvicorn worker processes on one port.

The parent has already migrated (and started the embedded database) and checked that the
database serves; it binds the socket and supervises. Each worker is a spawned process that
opens its own AppState (its own pools and credential listener, so at most N x
Settings.http_connections connections in all) in the ASGI lifespan, and closes it there on
shutdown. Workers share nothing, which is why this needs stateless HTTP: a session would live
in one worker's memory only.
"""

from __future__ import annotations

import logging
import socket
import sys
from contextlib import AsyncExitStack

import uvicorn
from starlette.applications import Starlette
from starlette.types import Receive, Scope, Send
from uvicorn.supervisors.multiprocess import Multiprocess

from mindscape.app.state import freeze_startup_objects, open_state
from mindscape.config.settings import Settings
from mindscape.errors import MindscapeError
from mindscape.transports.http.app import build_http_app

log = logging.getLogger(__name__)


class WorkerApp:
    """One worker's ASGI app. It is pickled into each spawned worker, so until its lifespan
    starts it holds only settings and addresses, no pool or event-loop objects."""

    def __init__(self, settings: Settings, runtime_url: str, *, host: str, port: int) -> None:
        self._settings = settings
        self._runtime_url = runtime_url
        self._host = host
        self._port = port
        self._app: Starlette | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        assert self._app is not None, "uvicorn serves requests only after the lifespan started"
        await self._app(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        # A spawned process starts with unconfigured logging: stderr, like the parent.
        logging.basicConfig(
            stream=sys.stderr, level=self._settings.log_level, format="%(levelname)s %(name)s: %(message)s"
        )
        await receive()  # lifespan.startup
        async with AsyncExitStack() as stack:
            try:
                state = await stack.enter_async_context(open_state(self._settings, self._runtime_url, transport="http"))
                app = build_http_app(state, host=self._host, port=self._port)
                await stack.enter_async_context(app.router.lifespan_context(app))
                freeze_startup_objects()
            except MindscapeError as exc:  # anticipated (e.g. the database went away): one line
                log.error("worker could not start: %s", exc)
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
            except Exception as exc:
                log.exception("worker could not start")
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
            self._app = app
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown: uvicorn sends it after in-flight requests finished
        await send({"type": "lifespan.shutdown.complete"})


class Supervisor(Multiprocess):
    """uvicorn's supervisor, which also closes its own copy of the listening socket on SIGTERM/SIGINT.

    The workers stop listening when told to stop, but while the parent still holds the socket the
    kernel keeps queueing new connections that nobody will answer; closed, they are refused.
    """

    def handle_term(self) -> None:
        self._stop_listening()
        super().handle_term()

    def handle_int(self) -> None:
        self._stop_listening()
        super().handle_int()

    def _stop_listening(self) -> None:
        for sock in self.sockets:
            sock.close()


def run_workers(settings: Settings, runtime_url: str, sock: socket.socket, *, host: str, port: int) -> None:
    """Serve on `sock` (transports.http.listen.bind) until SIGTERM/SIGINT; each worker then finishes its
    in-flight requests and exits."""
    config = uvicorn.Config(
        WorkerApp(settings, runtime_url, host=host, port=port),
        host=host,
        port=port,
        workers=settings.http_workers,
        log_config=None,
        lifespan="on",
        timeout_graceful_shutdown=settings.http_shutdown_timeout_s,
        # A worker answers health pings only once it has imported everything; on a busy machine
        # that takes longer than uvicorn's 5 s, and the supervisor would kill it as hung.
        timeout_worker_healthcheck=60,
    )
    total = settings.http_workers * settings.http_connections
    log.info(
        "serving MCP over Streamable HTTP at http://%s:%d/mcp (stateless, %d workers, up to %d database connections)",
        host,
        port,
        settings.http_workers,
        total,
    )
    Supervisor(config, sockets=[sock]).run()

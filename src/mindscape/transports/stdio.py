"""stdio transport on asyncio pipes.

The SDK's stock transport reads and writes through worker threads (anyio.wrap_file); reading
the pipes directly on the event loop removes two thread hops per message (about 0.5 ms per call
here). fd 0 and 1 are moved aside while serving so stray prints cannot corrupt the wire.

SIGTERM and SIGINT end serving like the client closing stdin does: cleanly, exit code 0, with
the state (pool, embedded database) closed on the way out.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import stat
from typing import Any, cast

import anyio
from mcp.server import MCPServer
from mcp.server.stdio import stdio_server

log = logging.getLogger(__name__)
MAX_LINE = 32 * 1024 * 1024


class _Lines:
    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader

    def __aiter__(self) -> _Lines:
        return self

    async def __anext__(self) -> str:
        while True:
            try:
                line = await self._reader.readline()
            except ValueError:
                log.warning("dropped an incoming message longer than %d bytes", MAX_LINE)
                continue
            if not line:
                raise StopAsyncIteration
            return line.decode("utf-8", errors="replace")


class _Writer:
    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer

    async def write(self, text: str) -> None:
        self._writer.write(text.encode("utf-8"))

    async def flush(self) -> None:
        await self._writer.drain()


def _pipes_usable() -> bool:
    # asyncio pipes cannot watch regular files (e.g. `< requests.jsonl`).
    return not any(stat.S_ISREG(os.fstat(fd).st_mode) for fd in (0, 1))


async def serve_stdio(server: MCPServer[Any]) -> None:
    """Serve until the client closes stdin or the process gets SIGTERM or SIGINT."""
    async with anyio.create_task_group() as group:
        group.start_soon(_stop_on_signal, group.cancel_scope)
        await _serve(server)
        group.cancel_scope.cancel()


_SIGNALS = (signal.SIGTERM, signal.SIGINT)


async def _stop_on_signal(scope: anyio.CancelScope) -> None:
    # asyncio resets a signal it watched to the default on the way out, and SIGTERM's default
    # kills at once: the handlers from before come back, for the shutdown that follows.
    previous = {signum: signal.getsignal(signum) for signum in _SIGNALS}
    try:
        with anyio.open_signal_receiver(*_SIGNALS) as signals:
            async for signum in signals:
                log.info("%s: stopping", signal.Signals(signum).name)
                scope.cancel()
                return
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


async def _serve(server: MCPServer[Any]) -> None:
    if not _pipes_usable():
        await server.run_stdio_async()
        return
    loop = asyncio.get_running_loop()
    wire_in, wire_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    os.close(devnull)
    reader = asyncio.StreamReader(limit=MAX_LINE)
    read_transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(wire_in, "rb", buffering=0)
    )
    write_transport, write_protocol = await loop.connect_write_pipe(
        lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader()), os.fdopen(wire_out, "wb", buffering=0)
    )
    writer = asyncio.StreamWriter(write_transport, write_protocol, None, loop)
    try:
        async with stdio_server(stdin=cast(Any, _Lines(reader)), stdout=cast(Any, _Writer(writer))) as (rs, ws):
            lowlevel = server._lowlevel_server  # pyright: ignore[reportPrivateUsage]  # no public run(streams) on MCPServer
            await lowlevel.run(rs, ws, lowlevel.create_initialization_options())
    finally:
        read_transport.close()
        write_transport.close()

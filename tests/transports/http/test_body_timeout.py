"""BodyTimeout as an ASGI layer: the deadline covers the body, never what comes after it."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from starlette.types import Message, Receive, Scope, Send

from mindscape.transports.http.middleware.body_timeout import BodyTimeout

pytestmark = pytest.mark.anyio
SCOPE: Scope = {"type": "http", "method": "POST", "path": "/mcp", "headers": []}


def feeder(chunks: list[tuple[float, Message]]) -> Receive:
    """A client: each message after its delay; then nothing until the test ends (a quiet connection)."""
    pending = list(chunks)

    async def receive() -> Message:
        if not pending:
            await anyio.sleep_forever()
        delay, message = pending.pop(0)
        await anyio.sleep(delay)
        return message

    return receive


def body(data: bytes, more: bool) -> Message:
    return {"type": "http.request", "body": data, "more_body": more}


class Recorder:
    def __init__(self) -> None:
        self.sent: list[Message] = []

    async def __call__(self, message: Message) -> None:
        self.sent.append(message)

    def status(self) -> int | None:
        starts = [m for m in self.sent if m["type"] == "http.response.start"]
        return starts[0]["status"] if starts else None


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    """Reads the whole body, then answers 200 with its length."""
    data = b""
    while True:
        message = await receive()
        data += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(len(data)).encode()})


async def test_a_body_arriving_too_slowly_gets_408() -> None:
    sent = Recorder()
    trickle = [(0.0, body(b"{", True))] + [(0.2, body(b"x", True)) for _ in range(50)]
    with anyio.fail_after(5):
        await BodyTimeout(echo, timeout_s=0.5)(SCOPE, feeder(trickle), sent)
    assert sent.status() == 408
    start = sent.sent[0]
    assert (b"connection", b"close") in start["headers"]
    error = json.loads(sent.sent[1]["body"])["error"]
    assert error["code"] == -32600
    assert "did not arrive within 0.5 s (http_body_timeout_s)" in error["message"]


async def test_a_body_in_time_reaches_the_app_whole() -> None:
    sent = Recorder()
    pieces = [(0.0, body(b"ab", True)), (0.1, body(b"cd", True)), (0.1, body(b"e", False))]
    await BodyTimeout(echo, timeout_s=1)(SCOPE, feeder(pieces), sent)
    assert sent.status() == 200
    assert sent.sent[1]["body"] == b"5"


async def test_after_the_body_the_request_may_take_as_long_as_it_needs() -> None:
    """An event stream (or a long call) keeps waiting on receive once its body is in."""
    seen: dict[str, Any] = {}

    async def streaming(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()  # the (empty) body
        await send({"type": "http.response.start", "status": 200, "headers": []})
        with anyio.move_on_after(0.6):  # longer than the body deadline
            seen["after_body"] = await receive()
        seen["waited"] = True
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    sent = Recorder()
    await BodyTimeout(streaming, timeout_s=0.2)(SCOPE, feeder([(0.0, body(b"", False))]), sent)
    assert seen == {"waited": True}  # no message, and no 408: the receive was just quiet
    assert sent.status() == 200


async def test_lifespan_and_websocket_scopes_pass_through() -> None:
    calls: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        calls.append(scope["type"])

    async def never() -> Message:
        raise AssertionError("not read")

    await BodyTimeout(app, timeout_s=0.01)({"type": "lifespan"}, never, Recorder())
    assert calls == ["lifespan"]

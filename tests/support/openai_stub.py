"""A real OpenAI-compatible embeddings server on a loopback port, for tests of the openai provider."""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import cast

import pytest

from mindscape.embeddings.hashing import HashingEmbedder


@dataclass
class Reply:
    """How the stub answers one request; the default is a correct OpenAI response."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict[str, str])
    body: object = None  # sent as JSON instead of embeddings when set
    raw: bytes | None = None  # sent verbatim (not JSON) when set
    delay_s: float = 0.0
    dimensions: int | None = None  # vector length; default: the request's `dimensions`, else 8
    shuffle: bool = False
    scale: float = 1.0
    drop_last: bool = False


@dataclass
class Seen:
    path: str
    authorization: str | None
    body: dict[str, object]


@dataclass
class Stub:
    url: str
    script: list[Reply] = field(default_factory=list[Reply])  # one per request, then `default`
    default: Reply = field(default_factory=Reply)
    seen: list[Seen] = field(default_factory=list[Seen])
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_reply(self) -> Reply:
        with self.lock:
            return self.script.pop(0) if self.script else self.default


def stub_vector(text: str, dimensions: int) -> list[float]:
    """What the stub embeds a text as: distinct per text, so order mistakes show."""
    return HashingEmbedder("stub", dimensions).embed_one(text)


def make_handler(stub: Stub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            request = json.loads(self.rfile.read(length) or b"{}")
            with stub.lock:
                stub.seen.append(Seen(self.path, self.headers.get("Authorization"), request))
            reply = stub.next_reply()
            if reply.delay_s:
                stub.release.wait(reply.delay_s)
            if reply.raw is not None:
                payload = reply.raw
            elif reply.body is not None or reply.status != 200:
                payload = json.dumps(reply.body or {"error": {"message": "stub error"}}).encode()
            else:
                payload = json.dumps(self.embeddings(request, reply)).encode()
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", "text/plain" if reply.raw is not None else "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                pass

        def embeddings(self, request: dict[str, object], reply: Reply) -> dict[str, object]:
            texts = cast("list[str]", request["input"])
            requested = request.get("dimensions")
            dimensions = reply.dimensions or (requested if isinstance(requested, int) else 8)
            order = list(range(len(texts)))
            if reply.shuffle:
                random.Random(0).shuffle(order)
                if order == sorted(order):
                    order.reverse()  # never the identity, even for two items
            if reply.drop_last:
                order.pop()
            vectors = [[x * reply.scale for x in stub_vector(text, dimensions)] for text in texts]
            data = [{"object": "embedding", "index": i, "embedding": vectors[i]} for i in order]
            return {
                "object": "list",
                "data": data,
                "model": request["model"],
                "usage": {"prompt_tokens": len(data), "total_tokens": len(data)},
            }

        def log_message(self, format: str, *args: object) -> None:  # keep test output clean
            pass

    return Handler


@pytest.fixture
def stub() -> Iterator[Stub]:
    result = Stub(url="")
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(result))
    server.daemon_threads = True  # a handler still sleeping for the timeout test must not block teardown
    result.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield result
    result.release.set()
    server.shutdown()
    server.server_close()
    thread.join()

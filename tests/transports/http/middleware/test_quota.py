"""What the quota middleware reads of a request body: each message's method, id and, for a tool
call or prompt get only, its name (the kind its database time is learned under, quotas.db_time)."""

from __future__ import annotations

import json

from mindscape.transports.http.middleware.quota import _requests  # pyright: ignore[reportPrivateUsage]


def test_only_tool_calls_and_prompt_gets_name_their_kind() -> None:
    body = json.dumps(
        [
            {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "recall", "arguments": {}}},
            {"jsonrpc": "2.0", "id": 2, "method": "prompts/get", "params": {"name": "persona"}},
            # A name on a resource read is ignored by the SDK: it must not choose the read's kind.
            {"jsonrpc": "2.0", "id": 3, "method": "resources/read", "params": {"uri": "persona://ada", "name": "x"}},
            {"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": 7}},
            {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": ["recall"]},
        ]
    ).encode()
    assert _requests(body) == [
        ("tools/call", 1, "recall"),
        ("prompts/get", 2, "persona"),
        ("resources/read", 3, ""),
        ("tools/call", 4, ""),
        ("tools/call", 5, ""),
    ]
    assert _requests(b"{not json") == []

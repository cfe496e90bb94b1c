"""The HTTP client snippets: well-formed and pointing at /mcp with a bearer header."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def test_http_client_snippets_point_at_mcp_with_a_bearer_header(repo_root: Path) -> None:
    clients = repo_root / "config" / "clients"
    vscode = load(clients / "vscode_http.json")["servers"]["mindscape"]
    cursor = load(clients / "cursor_http.json")["mcpServers"]["mindscape"]
    desktop = load(clients / "claude_desktop_http.json")["mcpServers"]["mindscape"]

    assert vscode["type"] == "http"
    for snippet in (vscode, cursor):
        assert snippet["url"].endswith("/mcp")
        assert snippet["headers"]["Authorization"].startswith("Bearer ${")
    assert "http://127.0.0.1:8000/mcp" in desktop["args"]
    assert desktop["env"]["MINDSCAPE_AUTH"].startswith("Bearer msk_")
    assert "/mcp --header" in (clients / "claude_code_http.sh").read_text(encoding="utf-8")

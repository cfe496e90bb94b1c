"""The registry's server.json and the HTTP client snippets: well-formed and in step with the package."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def test_server_json_matches_the_package(repo_root: Path) -> None:
    project = tomllib.loads((repo_root / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    server = load(repo_root / "server.json")

    assert server["version"] == project["version"]
    assert len(server["description"]) <= 100  # the registry's limit
    (package,) = server["packages"]
    assert package["registryType"] == "pypi"
    assert package["identifier"] == project["name"]
    assert package["version"] == project["version"]
    assert package["transport"] == {"type": "stdio"}
    assert [a["value"] for a in package["packageArguments"]] == ["serve"]
    env = {v["name"]: v for v in package["environmentVariables"]}
    assert env["MINDSCAPE_TENANT"]["isRequired"] is True
    assert env["MINDSCAPE_DATABASE_URL"]["isSecret"] is True
    assert env["MINDSCAPE_EMBEDDING_API_KEY"]["isSecret"] is True


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

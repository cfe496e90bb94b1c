"""The client snippets and the README's Inspector line run as written.

Every stdio snippet's from-clone command runs here with its placeholders filled (this checkout,
a data dir of the test's own, tenant acme with the sample personas) and lists the tools through
it. The PyPI form cannot run before the package is published: its shape is checked and its
arguments are parsed by the real CLI. The HTTP snippets are checked for the endpoint and header.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from typer.testing import CliRunner, Result

from mindscape.cli import app
from tests.support.embedded import postmaster, run_mindscape
from tests.support.inspector import INSPECTOR, inspector_cli
from tests.support.results import data
from tests.support.uv import uv_binary

runner = CliRunner()

CLONE = "/absolute/path/to/mindscape-clone"
DATA_DIR = "/absolute/path/to/mindscape-data"
TENANT = "acme"
CLIENTS = ["claude_desktop", "cursor", "vscode", "claude_code"]


@dataclass(frozen=True)
class Launch:
    """How a client starts the server: command, arguments and the environment the snippet sets."""

    command: str
    args: list[str]
    env: dict[str, str]


def load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


def launch_of(clients: Path, name: str) -> Launch:
    """The launch a snippet configures: a JSON config (mcpServers / servers) or a `claude mcp add` line."""
    json_path = clients / f"{name}.json"
    if json_path.exists():
        config = load(json_path)
        server = (config.get("mcpServers") or config["servers"])["mindscape"]
        return Launch(server["command"], list(server["args"]), dict(server.get("env", {})))
    (line,) = [x for x in (clients / f"{name}.sh").read_text(encoding="utf-8").splitlines() if x.startswith("claude")]
    words = shlex.split(line)
    assert words[:4] == ["claude", "mcp", "add", "mindscape"], line
    split = words.index("--")
    options, command = words[4:split], words[split + 1 :]
    env = dict(options[i + 1].split("=", 1) for i, o in enumerate(options) if o in ("-e", "--env"))
    return Launch(command[0], command[1:], env)


def parse_with_the_cli(args: list[str]) -> Result:
    """`mindscape ARGS --help`: click parses every option first (a wrong one exits 2), then prints the help."""
    return runner.invoke(app, [*args, "--help"], prog_name="mindscape")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory, repo_root: Path) -> Path:
    """A data dir set up as the README says: tenant acme with the sample personas."""
    found = tmp_path_factory.mktemp("snippets")
    created = run_mindscape(found, "tenant", "create", TENANT, "--name", "Acme Inc")
    assert created.returncode == 0, created.stderr
    imported = run_mindscape(
        found, "persona", "import", str(repo_root / "config/examples/personas.yaml"), "--tenant", TENANT
    )
    assert imported.returncode == 0, imported.stderr
    assert "3 created" in imported.stdout
    return found


@pytest.mark.parametrize("client", CLIENTS)
def test_each_client_has_a_pypi_and_a_clone_snippet_naming_data_dir_and_tenant(repo_root: Path, client: str) -> None:
    clients = repo_root / "config" / "clients"
    pypi, clone = launch_of(clients, client), launch_of(clients, f"{client}_clone")

    assert pypi.command == "uvx"
    assert pypi.args[0] == "mindscape-mcp"  # the package's script of the same name
    assert clone.command == "uv"
    assert clone.args[:4] == ["run", "--directory", CLONE, "mindscape"]
    for launch in (pypi, clone):
        assert launch.env == {"MINDSCAPE_DATA_DIR": DATA_DIR}
        served = launch.args[1:] if launch is pypi else launch.args[4:]
        assert served == ["serve", "--tenant", TENANT]
        parsed = parse_with_the_cli(served)
        assert parsed.exit_code == 0, parsed.output
        assert "Usage: mindscape serve" in parsed.stdout


def test_the_cli_parse_check_refuses_a_wrong_option() -> None:
    assert parse_with_the_cli(["serve", "--tennant", TENANT]).exit_code == 2
    assert parse_with_the_cli(["server", "--tenant", TENANT]).exit_code == 2


def _filled(launch: Launch, repo_root: Path, data_dir: Path) -> Launch:
    def fill(text: str) -> str:
        return text.replace(CLONE, str(repo_root)).replace(DATA_DIR, str(data_dir))

    assert launch.command == "uv"
    return Launch(uv_binary(), [fill(a) for a in launch.args], {k: fill(v) for k, v in launch.env.items()})


def _hygiene() -> dict[str, str]:
    """Not part of any snippet: the test machine's model copy, and no reaching for the model hub."""
    model = os.environ.get("MINDSCAPE_EMBEDDING_MODEL_PATH")
    return {"HF_HUB_OFFLINE": "1"} | ({"MINDSCAPE_EMBEDDING_MODEL_PATH": model} if model else {})


@pytest.mark.parametrize("client", CLIENTS)
def test_the_clone_snippet_runs_and_lists_tools(repo_root: Path, data_dir: Path, client: str) -> None:
    launch = _filled(launch_of(repo_root / "config" / "clients", f"{client}_clone"), repo_root, data_dir)

    async def main() -> tuple[list[str], dict[str, Any]]:
        # Like a client: the snippet's env on top of a minimal default one (HOME, PATH, ...).
        params = StdioServerParameters(command=launch.command, args=launch.args, env=launch.env | _hygiene())
        async with Client(params) as client_session:
            tools = sorted(t.name for t in (await client_session.list_tools()).tools)
            ada = data(await client_session.call_tool("get_persona", {"slug": "ada"}))
        return tools, ada

    tools, ada = anyio.run(main)
    assert {"get_persona", "list_personas", "remember", "recall"} <= set(tools)
    assert ada["name"] == "Ada the Analyst"  # the sample personas: the snippet reached the data dir it names
    assert postmaster(data_dir) is None  # and the server stopped the embedded database when the client left


def _readme_inspector_lines(readme: str) -> list[str]:
    joined = readme.replace("\\\n", " ")
    return [
        line.strip() for line in joined.splitlines() if line.strip().startswith("npx @modelcontextprotocol/inspector")
    ]


def test_the_readme_inspector_line_passes_every_setting_and_lists_tools(repo_root: Path, data_dir: Path) -> None:
    (line,) = _readme_inspector_lines((repo_root / "README.md").read_text(encoding="utf-8"))
    words = shlex.split(line)
    assert words[:3] == ["npx", INSPECTOR, "--cli"], "the README's Inspector is not the pinned one the tests use"
    passed = {words[i + 1].split("=", 1)[0] for i, w in enumerate(words) if w == "-e"}
    assert {"MINDSCAPE_DATA_DIR", "MINDSCAPE_TENANT"} <= passed
    # The shell would expand these; the test fills them with its own checkout and data dir.
    values = {"$MINDSCAPE_DATA_DIR": str(data_dir), "$PWD": str(repo_root)}
    filled = [re.sub(r"\$[A-Z_]+", lambda m: values[m.group(0)], w) for w in words[3:]]
    filled = [uv_binary() if w == "uv" else w for w in filled]
    hygiene = [flag for k, v in _hygiene().items() for flag in ("-e", f"{k}={v}")]
    where = filled.index("--method")
    command = [*inspector_cli(repo_root), *filled[:where], *hygiene, "--format", "json", *filled[where:]]
    listed = subprocess.run(
        command, capture_output=True, text=True, timeout=240, env={**os.environ, "MINDSCAPE_TENANT": "not-this"}
    )
    assert listed.returncode == 0, listed.stderr
    names = {t["name"] for t in json.loads(listed.stdout)["result"]["tools"]}
    assert {"get_persona", "list_personas"} <= names
    assert postmaster(data_dir) is None


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

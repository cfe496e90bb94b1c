"""What the MCP registry checks before it lists the package: server.json, the mcp-name line, the licence."""

from __future__ import annotations

import json
import re
import tomllib
import typing
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from mindscape.config.settings import Settings

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "support" / "registry"


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def problems(schema: dict[str, Any], instance: dict[str, Any]) -> list[str]:
    """Every schema violation, as `path: message`; formats (uri) are checked too."""
    validator = jsonschema.Draft7Validator(schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)
    errors: list[jsonschema.ValidationError] = list(validator.iter_errors(instance))  # pyright: ignore[reportUnknownMemberType]
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]


@pytest.fixture(scope="module")
def server(repo_root: Path) -> dict[str, Any]:
    return load(repo_root / "server.json")


@pytest.fixture(scope="module")
def project(repo_root: Path) -> dict[str, Any]:
    data: dict[str, Any] = tomllib.loads((repo_root / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return data


def test_server_json_is_valid_against_the_registry_schema(server: dict[str, Any]) -> None:
    schema = load(SCHEMA_DIR / "server.schema.json")
    assert server["$schema"] == schema["$id"], "server.json names another schema version than the vendored one"
    assert problems(schema, server) == []


def test_the_schema_check_catches_a_broken_server_json(server: dict[str, Any]) -> None:
    """The vendored schema really constrains: a too-long description and a bad name are refused."""
    schema = load(SCHEMA_DIR / "server.schema.json")
    broken = server | {"description": "x" * 101, "name": "no-slash"}
    broken["remotes"] = [{"type": "streamable-http", "url": "not a url"}]
    found = problems(schema, broken)
    assert len(found) == 3, found


def test_server_json_matches_the_package(server: dict[str, Any], project: dict[str, Any]) -> None:
    assert server["version"] == project["version"]
    (package,) = server["packages"]
    assert package["registryType"] == "pypi"
    assert package["identifier"] == project["name"]
    assert package["version"] == project["version"]
    assert package["transport"] == {"type": "stdio"}
    assert [a["value"] for a in package["packageArguments"]] == ["serve"]
    # `uvx mindscape-mcp serve` runs the script named like the package.
    assert project["scripts"][project["name"]] == "mindscape.cli:main"
    assert server["repository"]["source"] == "github"
    assert server["repository"]["url"].startswith("https://github.com/")


def test_environment_variables_are_settings_with_their_real_defaults(server: dict[str, Any]) -> None:
    (package,) = server["packages"]
    env = {v["name"]: v for v in package["environmentVariables"]}
    assert env["MINDSCAPE_TENANT"]["isRequired"] is True
    assert {"MINDSCAPE_TENANT", "MINDSCAPE_DATA_DIR", "MINDSCAPE_DATABASE_URL"} <= env.keys()
    fields = Settings.model_fields
    for name, variable in env.items():
        if name == "MINDSCAPE_CONFIG":
            continue  # the settings file itself, not a field
        field = name.removeprefix("MINDSCAPE_").lower()
        assert field in fields, f"{name} is not a setting"
        if "default" in variable:
            assert variable["default"] == fields[field].default, name
        if "choices" in variable:
            assert variable["choices"] == list(typing.get_args(fields[field].annotation)), name
    for secret in ("MINDSCAPE_DATABASE_URL", "MINDSCAPE_EMBEDDING_API_KEY"):
        assert env[secret]["isSecret"] is True


def test_remotes_describe_an_http_deployment_with_a_secret_bearer_header(server: dict[str, Any]) -> None:
    (remote,) = server["remotes"]
    assert remote["type"] == "streamable-http"
    assert remote["url"].endswith("/mcp")
    for name in re.findall(r"{(\w+)}", remote["url"]):
        assert name in remote["variables"]
    (header,) = remote["headers"]
    assert header["name"] == "Authorization"
    assert header["isSecret"] is True
    assert header["value"].startswith("Bearer {")


def test_the_readme_carries_the_mcp_name_line(repo_root: Path, server: dict[str, Any]) -> None:
    """The registry proves PyPI ownership by finding `mcp-name: <name>` in the package's README."""
    readme = (repo_root / "README.md").read_text(encoding="utf-8")
    assert f"mcp-name: {server['name']}" in readme


def test_the_license_file_matches_pyproject(repo_root: Path, project: dict[str, Any]) -> None:
    assert project["license"] == "MIT"
    text = (repo_root / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License")
    assert "Permission is hereby granted, free of charge" in text

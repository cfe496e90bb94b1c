"""The MCP conformance suite (pinned) against a real `mindscape serve --transport http`.

Only the scenarios that apply to a server without the suite's fixtures run: the others call tools,
prompts and resources named `test_*` (or `test://...`) that only the suite's reference server has,
so they say nothing about Mindscape. Known failures are listed with their reasons in
`conformance_expected_failures.txt`; a new failure fails the test, and so does a listed scenario
that now passes, so the list stays true.

The suite cannot send an Authorization header, so it talks to the server through a loopback proxy
that adds a write key (tests/support/auth_proxy.py); the server itself runs unmodified, auth on.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx2
import pytest

from mindscape.database.targets import Targets
from tests.support.auth_proxy import bearer_proxy
from tests.support.conformance import EXPECTED_FAILURES, conformance_cli
from tests.support.http import new_key
from tests.support.serving import running_server
from tests.support.tenants import PERSONAS_A, make_tenant

APPLICABLE = [
    "server-initialize",
    "ping",
    "tools-list",
    "resources-list",
    "prompts-list",
    "logging-set-level",
    "completion-complete",  # names a fixture prompt, but an empty completion would pass
    "resources-subscribe",  # names a fixture URI, but only checks that subscribing is accepted
    "resources-unsubscribe",
    "server-sse-multiple-streams",
    "dns-rebinding-protection",
]


def expected_failures() -> dict[str, str]:
    """scenario -> reason, from the checked-in list."""
    listed: dict[str, str] = {}
    for line in EXPECTED_FAILURES.read_text().splitlines():
        scenario, _, reason = line.partition("#")
        if scenario.strip():
            listed[scenario.strip()] = reason.strip()
    return listed


@pytest.fixture(scope="module")
def proxied_url(targets: Targets, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(server URL, URL of the proxy that adds a write key to every request)."""

    async def seed() -> str:
        tenant = await make_tenant(targets, PERSONAS_A, "cf")
        return await new_key(targets, tenant.tenant_slug, "write")

    key = anyio.run(seed)
    log = tmp_path_factory.mktemp("conformance") / "server.log"
    with running_server(targets, "http", log) as url, bearer_proxy(url, key) as proxy:
        yield url, proxy


def failed_checks(results: Path, scenario: str) -> list[str]:
    """The failed checks of one scenario's run, from the suite's checks.json."""
    runs = list(results.glob(f"server-{scenario}-*/checks.json"))
    assert len(runs) == 1, f"{scenario}: expected one result, found {runs}"
    checks = json.loads(runs[0].read_text())
    assert checks, f"{scenario}: the suite recorded no checks"
    return [f"{c['id']}: {c.get('errorMessage', '')}" for c in checks if c["status"] == "FAILURE"]


def test_the_server_refuses_the_suite_without_the_proxy(proxied_url: tuple[str, str]) -> None:
    # The proxy, not a weakened server, is what lets the suite in.
    url, _ = proxied_url
    response = httpx2.post(
        f"{url}/mcp",
        json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
        headers={"Accept": "application/json, text/event-stream"},
    )
    assert response.status_code == 401


def test_conformance_suite_matches_the_expected_failures(
    proxied_url: tuple[str, str], repo_root: Path, tmp_path: Path
) -> None:
    cli = conformance_cli(repo_root)
    _, proxy = proxied_url
    listed = expected_failures()
    assert set(listed) <= set(APPLICABLE), f"listed but never run: {set(listed) - set(APPLICABLE)}"
    failures: dict[str, list[str]] = {}
    for scenario in APPLICABLE:
        # The suite's own exit code is not used: it is 1 for any failure, listed or not.
        run = subprocess.run(
            [*cli, "server", "--url", f"{proxy}/mcp", "--scenario", scenario, "-o", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert "Results saved" in run.stdout, f"{scenario} did not run:\n{run.stdout}\n{run.stderr}"
        if failed := failed_checks(tmp_path, scenario):
            failures[scenario] = failed
    new = {s: f for s, f in failures.items() if s not in listed}
    fixed = sorted(s for s in listed if s not in failures)
    report = {"new failures": new, f"listed in {EXPECTED_FAILURES.name} but now passing, remove": fixed}
    assert (new, fixed) == ({}, []), json.dumps(report, indent=2)

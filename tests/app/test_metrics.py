"""`/metrics` on a real HTTP server: make calls, then scrape the Prometheus text."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx2
import pytest

from mindscape.app.metrics import BUCKETS, ToolMetrics
from mindscape.database.targets import Targets
from tests.support.http import mcp_client, new_key
from tests.support.serving import running_server
from tests.support.tenants import PERSONAS_A, TenantFactory


@pytest.fixture(scope="module")
def metrics_url(targets: Targets, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # A server of its own: counts from other test modules' calls would blur the expected numbers.
    with running_server(targets, "http", tmp_path_factory.mktemp("metrics") / "server.log") as url:
        yield url


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one series, e.g. sample(text, "mindscape_tool_calls_total", tool="get_persona")."""
    rendered = ",".join(f'{k}="{v}"' for k, v in labels.items())
    series = f"{name}{{{rendered}}}" if labels else name
    values = [line.rsplit(" ", 1)[1] for line in text.splitlines() if line.rsplit(" ", 1)[0] == series]
    assert len(values) == 1, f"no single {series} in:\n{text}"
    return float(values[0])


@pytest.mark.anyio
async def test_calls_errors_and_latency_are_counted_per_tool(
    metrics_url: str, targets: Targets, tenant_factory: TenantFactory
) -> None:
    tenant = await tenant_factory(PERSONAS_A, "me")
    key = await new_key(targets, tenant.tenant_slug, "write")
    async with mcp_client(metrics_url, key, "auto") as client:
        for _ in range(3):
            assert not (await client.call_tool("get_persona", {"slug": "ada"})).is_error
        assert (await client.call_tool("get_persona", {"slug": "nobody"})).is_error
        assert not (await client.call_tool("list_personas", {})).is_error
        assert (await client.call_tool("no_such_tool", {})).is_error

    async with httpx2.AsyncClient() as http:
        response = await http.get(f"{metrics_url}/metrics")  # no key: like /healthz

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    assert sample(text, "mindscape_tool_calls_total", tool="get_persona") == 4
    assert sample(text, "mindscape_tool_errors_total", tool="get_persona") == 1
    assert sample(text, "mindscape_tool_calls_total", tool="list_personas") == 1
    assert sample(text, "mindscape_tool_errors_total", tool="list_personas") == 0
    assert sample(text, "mindscape_tool_calls_total", tool="(unknown)") == 1
    assert "no_such_tool" not in text
    assert sample(text, "mindscape_tool_duration_seconds_count", tool="get_persona") == 4
    assert sample(text, "mindscape_tool_duration_seconds_bucket", tool="get_persona", le="+Inf") == 4
    assert sample(text, "mindscape_tool_duration_seconds_sum", tool="get_persona") > 0
    in_use = sample(text, "mindscape_pool_connections", state="in_use")
    idle = sample(text, "mindscape_pool_connections", state="idle")
    assert in_use >= 0
    assert in_use + idle >= 1
    assert sample(text, "mindscape_pool_max_connections") == 10
    assert key not in text


def test_histogram_buckets_are_cumulative() -> None:
    metrics = ToolMetrics()
    metrics.observe("recall", 0.004, error=False)
    metrics.observe("recall", 0.2, error=True)
    metrics.observe("recall", 60.0, error=False)

    text = metrics.render()

    counts = [sample(text, "mindscape_tool_duration_seconds_bucket", tool="recall", le=f"{b:g}") for b in BUCKETS]
    assert counts == sorted(counts)
    assert counts[0] == 1
    assert sample(text, "mindscape_tool_duration_seconds_bucket", tool="recall", le="0.25") == 2
    assert counts[-1] == 2  # 60 s is above every finite bucket
    assert sample(text, "mindscape_tool_duration_seconds_bucket", tool="recall", le="+Inf") == 3
    assert sample(text, "mindscape_tool_errors_total", tool="recall") == 1
    assert re.search(r"^# TYPE mindscape_tool_duration_seconds histogram$", text, re.M)


def test_round_trips_are_a_histogram_per_tool() -> None:
    metrics = ToolMetrics()
    metrics.observe_trips("get_persona", 4)
    metrics.observe_trips("get_persona", 6)

    text = metrics.render()

    assert "# TYPE mindscape_tool_db_round_trips histogram" in text
    assert sample(text, "mindscape_tool_db_round_trips_bucket", tool="get_persona", le="3") == 0
    assert sample(text, "mindscape_tool_db_round_trips_bucket", tool="get_persona", le="4") == 1
    assert sample(text, "mindscape_tool_db_round_trips_bucket", tool="get_persona", le="6") == 2
    assert sample(text, "mindscape_tool_db_round_trips_bucket", tool="get_persona", le="+Inf") == 2
    assert sample(text, "mindscape_tool_db_round_trips_sum", tool="get_persona") == 10
    assert sample(text, "mindscape_tool_db_round_trips_count", tool="get_persona") == 2

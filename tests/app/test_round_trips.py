"""Database round trips per tool call: exact counts, so a regression in the call path shows."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import pytest
from mcp import Client

from mindscape.app.server import MindscapeServer, build_server
from mindscape.app.state import open_state
from mindscape.database.targets import Targets
from tests.support.results import data
from tests.support.tenants import PERSONAS_A, TenantFactory, settings_for

pytestmark = pytest.mark.anyio
NO_MEMORY = "00000000-0000-4000-8000-000000000000"


Call = Callable[[Client], Awaitable[None]]


async def _counted(targets: Targets, tenant_slug: str, tool: str, call: Call, calls: int = 3) -> list[int]:
    """The round trips of `calls` calls, each once all are counted (a read's end comes after its reply)."""
    # One connection: every call after the first finds its statements prepared (a statement
    # cache miss is a round trip too, and a pool would spread the misses over calls).
    settings = settings_for(targets, tenant_slug, pool_min_size=1, pool_max_size=1)
    server: MindscapeServer = build_server(lambda: open_state(settings, targets.runtime))
    seen: list[int] = []
    all_in = anyio.Event()
    observe = server.metrics.observe_trips

    def record(name: str, trips: int) -> None:
        observe(name, trips)
        if name == tool:
            seen.append(trips)
            if len(seen) == calls:
                all_in.set()

    server.metrics.observe_trips = record  # pyright: ignore[reportAttributeAccessIssue]
    async with Client(server, raise_exceptions=False) as client:  # pyright: ignore[reportArgumentType]
        for _ in range(calls):
            await call(client)
        with anyio.fail_after(30):
            await all_in.wait()
    return seen


async def test_get_persona_takes_one_round_trip(targets: Targets, tenant_factory: TenantFactory) -> None:
    tenant = await tenant_factory(PERSONAS_A, "trips")

    async def get(client: Client) -> None:
        assert data(await client.call_tool("get_persona", {"slug": "ada"}))["slug"] == "ada"

    counted = await _counted(targets, tenant.tenant_slug, "get_persona", get)
    # One statement: the query's function sets the context and runs it (tenancy.one_statement).
    # Through PgBouncer, as a transaction: BEGIN READ ONLY, the context statement, the query and,
    # after the reply, ROLLBACK; the statement cache is off, so each statement with parameters is
    # prepared (one round trip) before it runs.
    warm = 6 if targets.pooled else 1
    assert counted[1:] == [warm, warm]
    assert counted[0] >= warm  # the first call prepares its statements


async def test_a_write_takes_four_round_trips(targets: Targets, tenant_factory: TenantFactory) -> None:
    tenant = await tenant_factory(PERSONAS_A, "tripw")

    async def forget(client: Client) -> None:
        # No such memory: an error for the agent, after the whole transaction has run.
        assert (await client.call_tool("forget", {"id": NO_MEMORY})).is_error

    written = [0]

    async def forget_versions(client: Client) -> None:
        written[0] += 1
        first = data(await client.call_tool("remember", {"content": f"Ada likes tea, take {written[0]}"}))
        second = {"content": f"Ada likes coffee, take {written[0]}", "supersedes": first["id"]}
        newest = data(await client.call_tool("remember", second))
        assert data(await client.call_tool("forget", {"id": newest["id"]}))["versions"] == 2

    async def correct(client: Client) -> None:
        written[0] += 1
        made = data(await client.call_tool("remember", {"content": f"Ada likes tea, note {written[0]}"}))
        change = {"id": made["id"], "expected_version": 1, "importance": 0.9, "metadata": {"topic": "drinks"}}
        assert data(await client.call_tool("update_memory", change))["version"] == 2

    counted = await _counted(targets, tenant.tenant_slug, "forget", forget)
    versions = await _counted(targets, tenant.tenant_slug, "forget", forget_versions)
    corrected = await _counted(targets, tenant.tenant_slug, "update_memory", correct)
    # BEGIN, the context statement, the delete (which finds the version chain itself), COMMIT with
    # the session's reset.
    warm = 6 if targets.pooled else 4
    assert counted[1:] == [warm, warm]
    assert versions[1:] == [warm, warm]
    assert corrected[1:] == [warm, warm]  # the change and the memory read back in one statement


async def test_list_tasks_is_one_round_trip_and_looks_a_persona_up_only_for_an_empty_page(
    targets: Targets, tenant_factory: TenantFactory
) -> None:
    tenant = await tenant_factory(PERSONAS_A, "tripl")

    async def unfiltered(client: Client) -> None:
        assert data(await client.call_tool("list_tasks", {"status": "pending"}))["tasks"] == []

    async def by_persona(client: Client) -> None:
        if not data(await client.call_tool("list_tasks", {"persona": "ada"}))["tasks"]:
            assert not (await client.call_tool("create_task", {"title": "t", "persona": "ada"})).is_error
            assert data(await client.call_tool("list_tasks", {"persona": "ada"}))["tasks"]

    async def empty(client: Client) -> None:
        assert data(await client.call_tool("list_tasks", {"persona": "basil"}))["tasks"] == []

    async def unknown(client: Client) -> None:
        failed = await client.call_tool("list_tasks", {"persona": "nobody"})
        assert failed.is_error
        assert "no persona with slug 'nobody'" in str(failed.content)

    plain = await _counted(targets, tenant.tenant_slug, "list_tasks", unfiltered)
    found = await _counted(targets, tenant.tenant_slug, "list_tasks", by_persona)
    nothing = await _counted(targets, tenant.tenant_slug, "list_tasks", empty)
    refused = await _counted(targets, tenant.tenant_slug, "list_tasks", unknown)
    # The persona's slug is resolved in the query itself; only an empty page looks it up, to tell
    # an unknown slug (NotFound) from a persona without tasks. Through PgBouncer each read is a
    # transaction: BEGIN READ ONLY, the context, the query (prepared first), ROLLBACK.
    one = 6 if targets.pooled else 1
    assert plain[1:] == [one, one]
    assert found[-2:] == [one, one]  # (the first call found an empty page and created the task)
    assert nothing[1:] == [2 * one, 2 * one]
    assert refused[1:] == [2 * one, 2 * one]


async def test_create_task_and_claim_next_task_take_four_round_trips(
    targets: Targets, tenant_factory: TenantFactory
) -> None:
    tenant = await tenant_factory(PERSONAS_A, "tripc")

    async def create(client: Client) -> None:
        assert data(await client.call_tool("create_task", {"title": "t"}))["status"] == "pending"

    async def claim(client: Client) -> None:
        assert data(await client.call_tool("claim_next_task", {}))["task"]["status"] == "in_progress"

    async def create_for(client: Client) -> None:
        assert data(await client.call_tool("create_task", {"title": "t", "persona": "ada"}))["persona"] == "ada"

    async def claim_for(client: Client) -> None:
        assert data(await client.call_tool("claim_next_task", {"persona": "ada"}))["task"]["persona"] == "ada"

    created = await _counted(targets, tenant.tenant_slug, "create_task", create)
    claimed = await _counted(targets, tenant.tenant_slug, "claim_next_task", claim)
    created_for = await _counted(targets, tenant.tenant_slug, "create_task", create_for)
    claimed_for = await _counted(targets, tenant.tenant_slug, "claim_next_task", claim_for)
    # BEGIN, the context statement, the write that also reads the task back, COMMIT with the reset;
    # a persona's slug is resolved in the write itself.
    warm = [6, 6] if targets.pooled else [4, 4]
    assert created[1:] == warm
    assert claimed[1:] == warm
    assert created_for[1:] == warm
    assert claimed_for[1:] == warm


async def test_list_tasks_by_campaign_looks_the_campaign_up_only_for_an_empty_page(
    targets: Targets, tenant_factory: TenantFactory
) -> None:
    tenant = await tenant_factory(PERSONAS_A, "tripk")
    made: dict[str, str] = {}

    async def by_campaign(client: Client) -> None:
        if not made:
            made["id"] = data(await client.call_tool("create_campaign", {"name": "c"}))["id"]
            made["empty"] = data(await client.call_tool("create_campaign", {"name": "e"}))["id"]
            await client.call_tool("create_task", {"title": "t", "campaign": made["id"]})
        assert len(data(await client.call_tool("list_tasks", {"campaign": made["id"]}))["tasks"]) == 1

    async def empty(client: Client) -> None:
        assert data(await client.call_tool("list_tasks", {"campaign": made["empty"]}))["tasks"] == []

    with_tasks = await _counted(targets, tenant.tenant_slug, "list_tasks", by_campaign)
    without = await _counted(targets, tenant.tenant_slug, "list_tasks", empty)
    one = 6 if targets.pooled else 1
    assert with_tasks[1:] == [one, one]
    assert without[1:] == [2 * one, 2 * one]  # the page, then the campaign's existence


async def test_update_task_takes_four_round_trips_unless_it_is_refused(
    targets: Targets, tenant_factory: TenantFactory
) -> None:
    tenant = await tenant_factory(PERSONAS_A, "tripu")

    async def finish(client: Client) -> None:
        made = data(await client.call_tool("create_task", {"title": "t"}))
        started = {"id": made["id"], "expected_version": 1, "status": "in_progress", "persona": "ada"}
        assert data(await client.call_tool("update_task", started))["claimed_by"]
        done = {"id": made["id"], "expected_version": 2, "status": "done", "result": {"ok": True}}
        assert data(await client.call_tool("update_task", done))["status"] == "done"

    async def stale(client: Client) -> None:
        made = data(await client.call_tool("create_task", {"title": "t"}))
        refused = await client.call_tool("update_task", {"id": made["id"], "expected_version": 7, "priority": 0})
        assert "version conflict" in str(refused.content)

    finished = await _counted(targets, tenant.tenant_slug, "update_task", finish)
    refusals = await _counted(targets, tenant.tenant_slug, "update_task", stale)
    # BEGIN, the context, the update (every rule in its WHERE, the persona's slug resolved in it,
    # the task read back), COMMIT. Refused: the task is read to say which rule refused it.
    assert finished[1:] == ([6] * 5 if targets.pooled else [4] * 5)  # (the first prepares its statements)
    assert refusals[1:] == ([8, 8] if targets.pooled else [5, 5])


async def test_create_campaign_and_update_campaign_take_four_round_trips(
    targets: Targets, tenant_factory: TenantFactory
) -> None:
    tenant = await tenant_factory(PERSONAS_A, "tripn")

    async def create(client: Client) -> None:
        made = data(await client.call_tool("create_campaign", {"name": "c", "personas": ["basil", "ada"]}))
        assert made["personas"] == ["ada", "basil"]

    async def start(client: Client) -> None:
        made = data(await client.call_tool("create_campaign", {"name": "c"}))
        change = {"id": made["id"], "expected_version": 1, "status": "active", "objective": "o"}
        assert data(await client.call_tool("update_campaign", change))["status"] == "active"

    counted = await _counted(targets, tenant.tenant_slug, "create_campaign", create)
    updated = await _counted(targets, tenant.tenant_slug, "update_campaign", start)
    # BEGIN, the context, the insert (with the personas' assignments, the campaign read back), COMMIT;
    # an update checks every rule in its WHERE and reads the campaign back in the same statement.
    assert counted[1:] == ([6, 6] if targets.pooled else [4, 4])
    assert updated[1:] == ([6, 6] if targets.pooled else [4, 4])


async def test_claim_by_campaign_looks_the_campaign_up_only_when_nothing_was_claimed(
    targets: Targets, tenant_factory: TenantFactory
) -> None:
    tenant = await tenant_factory(PERSONAS_A, "tripm")
    made: dict[str, str] = {}

    async def claim(client: Client) -> None:
        if not made:
            made["id"] = data(await client.call_tool("create_campaign", {"name": "c", "status": "active"}))["id"]
            for n in range(3):
                await client.call_tool("create_task", {"title": f"t{n}", "campaign": made["id"]})
        assert data(await client.call_tool("claim_next_task", {"campaign": made["id"]}))["task"] is not None

    async def nothing(client: Client) -> None:
        assert data(await client.call_tool("claim_next_task", {"campaign": made["id"]}))["task"] is None

    claimed = await _counted(targets, tenant.tenant_slug, "claim_next_task", claim)
    empty = await _counted(targets, tenant.tenant_slug, "claim_next_task", nothing)
    # BEGIN, context, the claim, COMMIT; with nothing claimed, the campaign's status after the claim.
    assert claimed[1:] == ([6, 6] if targets.pooled else [4, 4])
    assert empty[1:] == ([8, 8] if targets.pooled else [5, 5])


async def test_create_task_in_a_campaign_checks_it_in_the_insert(
    targets: Targets, tenant_factory: TenantFactory
) -> None:
    tenant = await tenant_factory(PERSONAS_A, "tripn")
    made: dict[str, str] = {}

    async def create(client: Client) -> None:
        if not made:
            made["id"] = data(await client.call_tool("create_campaign", {"name": "c"}))["id"]
        created = data(await client.call_tool("create_task", {"title": "t", "campaign": made["id"]}))
        assert created["status"] == "pending"

    counted = await _counted(targets, tenant.tenant_slug, "create_task", create)
    # BEGIN, the context statement, the insert (which checks the campaign is open), COMMIT.
    assert counted[1:] == ([6, 6] if targets.pooled else [4, 4])


async def test_recall_is_one_round_trip_once_the_tenant_is_known(
    targets: Targets, tenant_factory: TenantFactory
) -> None:
    tenant = await tenant_factory(PERSONAS_A, "tripr")

    async def remember(client: Client) -> None:
        assert not (await client.call_tool("remember", {"content": "Ada likes hiking in the Alps"})).is_error

    async def recall(client: Client) -> None:
        found = data(await client.call_tool("recall", {"query": "mountain walks"}))["memories"]
        assert [m["content"] for m in found] == ["Ada likes hiking in the Alps"]

    async def by_persona(client: Client) -> None:
        assert data(await client.call_tool("recall", {"query": "mountain walks", "persona": "ada"}))["memories"] == []

    async def of_persona(client: Client) -> None:
        found = data(await client.call_tool("recall", {"query": "tea", "persona": "basil"}))["memories"]
        assert [m["content"] for m in found] == ["Basil drinks tea"]

    async def remember_of_persona(client: Client) -> None:
        arguments = {"content": "Basil drinks tea", "persona": "basil"}
        assert not (await client.call_tool("remember", arguments)).is_error

    await _counted(targets, tenant.tenant_slug, "remember", remember)
    plain = await _counted(targets, tenant.tenant_slug, "recall", recall, calls=4)
    looked_up = await _counted(targets, tenant.tenant_slug, "recall", by_persona, calls=4)
    await _counted(targets, tenant.tenant_slug, "remember", remember_of_persona, calls=1)
    of_one = await _counted(targets, tenant.tenant_slug, "recall", of_persona, calls=4)
    # The first call learns the tenant's model and size in a transaction, the second makes the
    # query's function; from then on semantic and keyword candidates, their fusion and the rows
    # are one statement, with the persona's slug resolved in it. Through PgBouncer: BEGIN READ
    # ONLY, the context, the plan settings, the query, ROLLBACK, each statement with parameters
    # prepared first. A persona whose filter found nothing is looked up after (an unknown slug is
    # an error): one more read.
    assert plain[2:] == ([8, 8] if targets.pooled else [1, 1])
    assert of_one[2:] == ([8, 8] if targets.pooled else [1, 1])
    assert looked_up[2:] == ([14, 14] if targets.pooled else [2, 2])


async def test_remember_is_one_round_trip_and_counts_against_the_quota(
    targets: Targets, tenant_factory: TenantFactory
) -> None:
    tenant = await tenant_factory(PERSONAS_A, "tripe")
    written = [0]

    async def fresh(client: Client) -> None:
        written[0] += 1
        assert not (await client.call_tool("remember", {"content": f"Ada likes hiking, day {written[0]}"})).is_error

    async def again(client: Client) -> None:
        assert data(await client.call_tool("remember", {"content": "Ada likes hiking, day 1"}))["duplicate"]

    async def new_version(client: Client) -> None:
        written[0] += 1
        old = data(await client.call_tool("remember", {"content": f"The release is on day {written[0]}"}))
        version = {"content": f"The release moved to day {written[0] + 1}", "supersedes": old["id"]}
        assert not data(await client.call_tool("remember", version))["duplicate"]

    new = await _counted(targets, tenant.tenant_slug, "remember", fresh)
    duplicate = await _counted(targets, tenant.tenant_slug, "remember", again)
    versions = await _counted(targets, tenant.tenant_slug, "remember", new_version, calls=6)
    # One statement: the context, the insert under the quota's lock, the embedding and the count
    # over every memory, committed as it ends (queries/memories.py REMEMBER). Through PgBouncer a
    # transaction: BEGIN, the context, the insert, the embedding, the count (two: see them all,
    # then count and see only one's own again), COMMIT, each statement prepared first; a duplicate
    # adds nothing, so nothing is counted. (A server's first remember also starts a backfill of
    # pending embeddings after its reply, counted as one more remember, in any order with the
    # next calls: the two warm calls are the two cheapest.)
    assert sorted(new)[:2] == ([12, 12] if targets.pooled else [1, 1])
    assert sorted(duplicate)[:2] == ([8, 8] if targets.pooled else [1, 1])
    if not targets.pooled:
        # A new version too: the old one's state and its closing are in the script. Six calls
        # remember twice each; the first two are cold (in a transaction: the server has not yet
        # read the tenant's settings), and the backfill after the first adds one more. In a
        # transaction a new version would take 9.
        assert versions.count(1) >= 9

"""The claimant rule: while its lease lasts, only the principal holding an in-progress task may update it.

Two API keys of one tenant (tests/support/principals.py) play two agents: alice claims, bob tries.
"""

from __future__ import annotations

from typing import Any

import pytest

from mindscape.database.targets import Targets
from mindscape.tenancy.caller import Caller
from tests.support.memory import sql
from tests.support.principals import KeyClient, client_as
from tests.support.results import data, error_text
from tests.support.tenant_snapshot import snapshot
from tests.support.tenants import ClientFactory

pytestmark = [pytest.mark.anyio, pytest.mark.office("ada", prefix="claims")]


async def call(client: KeyClient, tool: str, **args: Any) -> dict[str, Any]:
    return data(await client.call_tool(tool, args))


async def expire_lease(targets: Targets, office: Caller, task_id: str) -> None:
    await sql(
        targets,
        office,
        "UPDATE mindscape.tasks SET lease_expires_at = now() - interval '1 second' WHERE id = $1",
        task_id,
    )


@pytest.mark.parametrize(
    "change",
    [
        {"status": "done", "result": {"ok": True}},
        {"status": "failed"},
        {"status": "blocked"},
        {"result": {"partial": 1}},
        {"lease_seconds": 600},
        {"title": "renamed"},
        {"priority": 0},
        {"clear": ["persona"]},
    ],
)
async def test_only_the_claimant_may_change_a_task_in_progress(
    office: Caller, client_for: ClientFactory, targets: Targets, change: dict[str, Any]
) -> None:
    async with client_as(client_for, office, "alice") as alice, client_as(client_for, office, "bob") as bob:
        task = await call(alice, "create_task", title="Write the report", persona="ada")
        claimed = (await call(alice, "claim_next_task", lease_seconds=300))["task"]
        assert (claimed["id"], claimed["claimed_by"]) == (task["id"], "key:alice")
        before = await snapshot(targets, office.tenant_id)
        refused = error_text(
            await bob.call_tool("update_task", {"id": task["id"], "expected_version": claimed["version"], **change})
        )
        assert await snapshot(targets, office.tenant_id) == before
        allowed = await call(alice, "update_task", id=task["id"], expected_version=claimed["version"], **change)
    assert refused.startswith(f"task {task['id']} is in progress, claimed by key:alice until ")
    assert "only its claimant may update it" in refused
    assert "Ask the claimant" in refused
    assert "lease expires" in refused
    assert allowed["version"] == claimed["version"] + 1


async def test_after_the_lease_expires_anyone_may_update_and_takes_the_claim(
    office: Caller, client_for: ClientFactory, targets: Targets
) -> None:
    async with client_as(client_for, office, "alice") as alice, client_as(client_for, office, "bob") as bob:
        task = await call(alice, "create_task", title="Abandoned")
        claimed = (await call(alice, "claim_next_task"))["task"]
        await expire_lease(targets, office, task["id"])
        renewed = await call(bob, "update_task", id=task["id"], expected_version=claimed["version"], lease_seconds=120)
        refused = error_text(
            await alice.call_tool(
                "update_task", {"id": task["id"], "expected_version": renewed["version"], "title": "x"}
            )
        )
        done = await call(bob, "update_task", id=task["id"], expected_version=renewed["version"], status="done")
    assert (renewed["claimed_by"], renewed["status"]) == ("key:bob", "in_progress")
    assert "claimed by key:bob" in refused
    assert (done["status"], done["claimed_by"]) == ("done", "key:bob")


async def test_an_expired_task_may_be_failed_by_someone_else(
    office: Caller, client_for: ClientFactory, targets: Targets
) -> None:
    async with client_as(client_for, office, "alice") as alice, client_as(client_for, office, "bob") as bob:
        task = await call(alice, "create_task", title="Stuck")
        claimed = (await call(alice, "claim_next_task"))["task"]
        await expire_lease(targets, office, task["id"])
        failed = await call(
            bob, "update_task", id=task["id"], expected_version=claimed["version"], status="failed", result={"why": "x"}
        )
    assert failed["status"] == "failed"
    assert failed["lease_expires_at"] is None


async def test_tasks_not_in_progress_are_anyones_to_update(office: Caller, client_for: ClientFactory) -> None:
    async with client_as(client_for, office, "alice") as alice, client_as(client_for, office, "bob") as bob:
        task = await call(alice, "create_task", title="Queue item")
        renamed = await call(bob, "update_task", id=task["id"], expected_version=1, title="Renamed by bob")
        started = await call(bob, "update_task", id=task["id"], expected_version=2, status="in_progress")
        blocked = await call(bob, "update_task", id=task["id"], expected_version=3, status="blocked")
        resumed = await call(alice, "update_task", id=task["id"], expected_version=4, status="in_progress")
    assert renamed["title"] == "Renamed by bob"
    assert started["claimed_by"] == "key:bob"
    assert blocked["status"] == "blocked"
    assert resumed["claimed_by"] == "key:alice"  # resuming a blocked task claims it

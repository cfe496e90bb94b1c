"""Visibility (migration 0009): a private memory is its writer's, a persona memory its persona's.

Two API keys of one tenant (in-memory clients carrying the token the key verifier builds) go
through every path that can show a memory: the memory tools, memory://, the `persona` prompt
with recall, bulk import's duplicate check, and SQL as the runtime role with the other key's
context. Row-level security, not a WHERE clause, is what hides the rows.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from mcp.shared.exceptions import MCPError
from mcp.types import TextContent, TextResourceContents

from mindscape.app.state import open_state
from mindscape.config.settings import Settings
from mindscape.database.pool import Pool
from mindscape.database.targets import Targets
from mindscape.errors import StartupError
from mindscape.memory.bulk_import import import_memories
from mindscape.memory.jsonl import MemoryFileError
from mindscape.tenancy.caller import Caller
from mindscape.tenancy.transaction import tenant_transaction
from tests.support.memory import client_with
from tests.support.principals import KeyClient, client_as
from tests.support.results import data, error_text
from tests.support.tenants import ClientFactory, settings_for

pytestmark = [pytest.mark.anyio, pytest.mark.office("ada", "basil", prefix="vis")]

A, B, C = "aaaaaaaaaaaa", "bbbbbbbbbbbb", "cccccccccccc"
SECRET = "The vault combination is 7-4-1-9"


async def _ids(client: KeyClient, tool: str, args: dict[str, Any]) -> set[str]:
    return {m["id"] for m in data(await client.call_tool(tool, args))["memories"]}


async def _seen_by(client: KeyClient, memory_id: str, marker: str = "7-4-1-9") -> dict[str, bool]:
    """Whether `memory_id` (whose content holds `marker`) shows up through each read path."""
    seen: dict[str, bool] = {}
    for mode in ("hybrid", "semantic", "keyword"):
        found = await _ids(client, "recall", {"query": "vault combination", "mode": mode})
        seen[f"recall {mode}"] = memory_id in found
    seen["recall history"] = memory_id in await _ids(
        client, "recall", {"query": "vault combination", "include_superseded": True}
    )
    seen["list_memories"] = memory_id in await _ids(client, "list_memories", {"include_superseded": True})
    try:
        await client.read_resource(f"memory://{memory_id}")
        seen["memory://"] = True
    except MCPError:
        seen["memory://"] = False
    for args in ({"slug": "ada", "recall": "5"}, {"slug": "ada", "recall": "5", "task": "vault combination"}):
        prompt = await client.get_prompt("persona", args)
        text = "".join(m.content.text for m in prompt.messages if isinstance(m.content, TextContent))
        seen[f"prompt {'task' if 'task' in args else 'recent'}"] = marker in text
    return seen


def _refusal(text: str, memory_id: str) -> str:
    return text.replace(memory_id, "X")


async def test_private_memory_is_its_writers_alone(office: Caller, client_for: ClientFactory) -> None:
    async with client_as(client_for, office, A) as a, client_as(client_for, office, B) as b:
        private = data(await a.call_tool("remember", {"content": SECRET, "persona": "ada", "visibility": "private"}))[
            "id"
        ]
        shared = data(
            await a.call_tool("remember", {"content": "The vault combination opens at nine", "persona": "ada"})
        )["id"]
        assert all((await _seen_by(a, private)).values())
        assert not any((await _seen_by(b, private)).values()), await _seen_by(b, private)
        assert all((await _seen_by(b, shared, "opens at nine")).values())

        # Writes that name it fail exactly as for an id that does not exist.
        unknown = str(uuid.uuid4())
        for tool, args in (
            ("forget", {}),
            ("update_memory", {"expected_version": 1, "importance": 0.1}),
        ):
            mine = error_text(await b.call_tool(tool, {"id": private, **args}))
            none = error_text(await b.call_tool(tool, {"id": unknown, **args}))
            assert _refusal(mine, private) == _refusal(none, unknown)
        mine = error_text(await b.call_tool("remember", {"content": "new combination", "supersedes": private}))
        none = error_text(await b.call_tool("remember", {"content": "new combination", "supersedes": unknown}))
        assert _refusal(mine, private) == _refusal(none, unknown)

        # The same text stored by B is B's own memory, not a "duplicate" of A's.
        again = data(await b.call_tool("remember", {"content": SECRET, "persona": "ada", "visibility": "private"}))
        assert again["duplicate"] is False
        assert again["id"] != private
        still = data(await a.call_tool("list_memories", {}))["memories"]
        assert private in {m["id"] for m in still}
        assert again["id"] not in {m["id"] for m in still}


async def test_persona_memory_is_for_callers_acting_as_it(office: Caller, client_for: ClientFactory) -> None:
    async with (
        client_as(client_for, office, A, persona="ada") as ada,
        client_as(client_for, office, C, persona="ada") as other_ada,
        client_as(client_for, office, B, persona="basil") as basil,
        client_as(client_for, office, "dddddddddddd") as unbound,
    ):
        # No persona argument: the caller's own persona.
        stored = data(await ada.call_tool("remember", {"content": SECRET, "visibility": "persona"}))["id"]
        assert all((await _seen_by(other_ada, stored)).values())
        assert not any((await _seen_by(basil, stored)).values())
        assert not any((await _seen_by(unbound, stored)).values())
        # A persona argument cannot widen the binding: basil cannot write as ada, nor unbound callers.
        assert "your own persona 'basil'" in error_text(
            await basil.call_tool("remember", {"content": "x", "persona": "ada", "visibility": "persona"})
        )
        assert "needs a persona binding" in error_text(
            await unbound.call_tool("remember", {"content": "x", "persona": "ada", "visibility": "persona"})
        )


async def test_update_memory_to_persona_visibility_is_for_callers_acting_as_it(
    office: Caller, client_for: ClientFactory
) -> None:
    async with (
        client_as(client_for, office, A, persona="ada") as ada,
        client_as(client_for, office, B, persona="basil") as basil,
        client_as(client_for, office, "dddddddddddd") as unbound,
    ):
        made = data(await unbound.call_tool("remember", {"content": SECRET, "persona": "ada"}))
        change = {"id": made["id"], "expected_version": 1, "visibility": "persona"}
        assert "needs a persona binding" in error_text(await unbound.call_tool("update_memory", change))
        assert "your own persona 'basil'" in error_text(await basil.call_tool("update_memory", change))
        changed = data(await ada.call_tool("update_memory", change))
        assert (changed["visibility"], changed["version"]) == ("persona", 2)
        assert not any((await _seen_by(basil, made["id"])).values())


async def test_sql_as_the_runtime_role_with_the_other_keys_context(
    office: Caller, client_for: ClientFactory, pool: Pool
) -> None:
    """A query that forgets every filter still cannot see another principal's private memory."""
    async with client_as(client_for, office, A) as a:
        private = uuid.UUID(data(await a.call_tool("remember", {"content": SECRET, "visibility": "private"}))["id"])
    statement = (
        "SELECT (SELECT count(*) FROM mindscape.memories WHERE id = $1) AS m,"
        " (SELECT count(*) FROM mindscape.memory_embeddings WHERE memory_id = $1) AS e,"
        " (SELECT count(*) FROM mindscape.memories WHERE content LIKE '%vault%') AS scan"
    )
    seen: dict[str, dict[str, int]] = {}
    for prefix in (A, B):
        caller = Caller(office.tenant_id, office.tenant_slug, f"key:{prefix}")
        async with tenant_transaction(pool, caller, read_only=False, statement_timeout_ms=5000) as tx:
            seen[prefix] = dict(await tx.conn.fetchrow(statement, private) or {})
            if prefix == B:
                changed = await tx.conn.fetch(
                    "UPDATE mindscape.memories SET visibility = 'tenant' WHERE id = $1 RETURNING id", private
                )
                assert changed == []
    assert seen[A] == {"m": 1, "e": 1, "scan": 1}
    assert seen[B] == {"m": 0, "e": 0, "scan": 0}


async def test_bulk_import_neither_sees_nor_collides_with_private_memories(
    office: Caller, client_for: ClientFactory, targets: Targets, tmp_path: Path
) -> None:
    async with client_as(client_for, office, A) as a:
        private = data(await a.call_tool("remember", {"content": SECRET, "visibility": "private"}))["id"]
    lines = tmp_path / "m.jsonl"
    lines.write_text(json.dumps({"content": SECRET}) + "\n")
    report = await import_memories(
        Settings(database_url=None), targets, tenant_slug=office.tenant_slug, path=lines, batch=10, progress=_quiet()
    )
    assert (report.imported, report.duplicates) == (1, 0)
    async with client_as(client_for, office, B) as b:
        found = data(await b.call_tool("list_memories", {}))["memories"]
        read = await b.read_resource(f"memory://{found[0]['id']}")
    assert [(m["content"], m["source"], m["visibility"]) for m in found] == [(SECRET, "import", "tenant")]
    assert found[0]["id"] != private
    text = read.contents[0]
    assert isinstance(text, TextResourceContents)
    assert private not in text.text


async def test_bulk_import_writes_persona_memories_for_that_persona_only(
    office: Caller, client_for: ClientFactory, targets: Targets, tmp_path: Path
) -> None:
    async def imported(*lines: dict[str, str]) -> tuple[int, int]:
        path = tmp_path / "m.jsonl"
        path.write_text("".join(json.dumps(line) + "\n" for line in lines))
        report = await import_memories(
            Settings(database_url=None), targets, tenant_slug=office.tenant_slug, path=path, batch=10, progress=_quiet()
        )
        return report.imported, report.duplicates

    persona_line = {"content": SECRET, "persona": "ada", "visibility": "persona"}
    assert await imported(persona_line, persona_line) == (1, 1)
    async with client_as(client_for, office, A, persona="ada") as ada, client_as(client_for, office, B) as unbound:
        [persona_only] = data(await ada.call_tool("list_memories", {}))["memories"]
        assert all((await _seen_by(ada, persona_only["id"])).values())
        assert not any((await _seen_by(unbound, persona_only["id"])).values())
    # The same text for the whole tenant is another memory, not a duplicate; a re-run adds nothing.
    assert await imported(persona_line, {"content": SECRET, "persona": "ada"}) == (1, 1)
    assert await imported(persona_line, {"content": SECRET, "persona": "ada"}) == (0, 2)
    async with client_as(client_for, office, A, persona="ada") as ada, client_as(client_for, office, B) as unbound:
        mine = data(await ada.call_tool("list_memories", {}))["memories"]
        theirs = data(await unbound.call_tool("list_memories", {}))["memories"]
    assert sorted((m["visibility"], m["persona"], m["source"]) for m in mine) == [
        ("persona", "ada", "import"),
        ("tenant", "ada", "import"),
    ]
    assert [m["visibility"] for m in theirs] == ["tenant"]


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (
            {"content": SECRET, "visibility": "private"},
            "visibility: must be tenant or persona; a private memory belongs",
        ),
        ({"content": SECRET, "visibility": "persona"}, "visibility: 'persona' needs `persona`"),
    ],
)
async def test_bulk_import_refuses_visibility_it_cannot_write(
    office: Caller, targets: Targets, tmp_path: Path, line: dict[str, str], problem: str
) -> None:
    lines = tmp_path / "m.jsonl"
    lines.write_text(json.dumps({"content": "a fine line"}) + "\n" + json.dumps(line) + "\n")
    with pytest.raises(MemoryFileError) as refused:
        await import_memories(
            Settings(database_url=None),
            targets,
            tenant_slug=office.tenant_slug,
            path=lines,
            batch=10,
            progress=_quiet(),
        )
    assert f"line 2: {problem}" in str(refused.value)
    assert "nothing was written" in str(refused.value)


def _quiet() -> Any:
    from rich.progress import Progress

    return Progress(disable=True)


async def test_stdio_persona_binding(office: Caller, targets: Targets) -> None:
    """`serve --persona` binds a stdio agent; a persona the tenant lacks stops the server at startup."""
    async with client_with(targets, office.tenant_slug, persona="basil") as basil:
        stored = data(await basil.call_tool("remember", {"content": "Basil's queue notes", "visibility": "persona"}))
        mine = data(await basil.call_tool("list_memories", {}))["memories"]
    async with client_with(targets, office.tenant_slug) as unbound:
        theirs = data(await unbound.call_tool("list_memories", {}))["memories"]
    assert [(m["id"], m["persona"], m["visibility"]) for m in mine] == [(stored["id"], "basil", "persona")]
    assert theirs == []
    with pytest.raises(StartupError, match="no such persona"):
        async with open_state(settings_for(targets, office.tenant_slug, persona="nobody"), targets.runtime):
            pass


async def test_embeddings_follow_a_change_of_visibility(office: Caller, client_for: ClientFactory, pool: Pool) -> None:
    async with client_as(client_for, office, A) as a:
        stored = data(await a.call_tool("remember", {"content": SECRET}))["id"]
        data(await a.call_tool("update_memory", {"id": stored, "expected_version": 1, "visibility": "private"}))
    b = Caller(office.tenant_id, office.tenant_slug, f"key:{B}")
    async with tenant_transaction(pool, b, read_only=True, statement_timeout_ms=5000) as tx:
        seen = await tx.conn.fetchval(
            "SELECT count(*) FROM mindscape.memory_embeddings WHERE memory_id = $1", uuid.UUID(stored)
        )
    assert seen == 0

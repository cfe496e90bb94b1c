"""`mindscape memory import | backfill | reembed` and the per-model vector index, through the CLI.

Commands run in-process through Typer's runner against the shared test cluster, seen as an
external database. Results are checked in the database (as the owner, to see every row) and
through recall over an in-memory MCP client, which is what agents would see. Unless a test
names another provider, the model is the lexical hashing one: its vectors are deterministic and
cheap, so a test can compute them (test_local_model covers the local model).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

import anyio
import numpy as np
import pytest
from mcp import Client
from typer.testing import Result

from mindscape.app.server import build_server
from mindscape.app.state import open_state
from mindscape.config.settings import Settings
from mindscape.database import vector_index
from mindscape.database.pool import connect
from mindscape.database.prepare import prepare
from mindscape.database.targets import Targets
from mindscape.embeddings.base import ModelSpec
from mindscape.embeddings.hashing import HashingEmbedder
from mindscape.memory.context import CONTEXT_WEIGHT
from mindscape.tenancy.caller import Caller
from tests.support.cli import cli_env, interruptible, one_line, owner_fetch, stored_memories, write_jsonl
from tests.support.cli import mindscape as run_cli
from tests.support.openai_stub import Reply, Stub, stub_vector
from tests.support.tenants import World, settings_for

# A fresh tenant per test (the office fixture), with personas basil and cora.
pytestmark = pytest.mark.office("basil", "cora", prefix="mcli")
DEFAULT_KEY = "hashing:mindscape-hash-v1:384"
HASHING = {"embedding_provider": "hashing"}


def mindscape(targets: Targets, *args: str | Path, **env: str) -> Result:
    """The CLI with the hashing provider, unless a test names another."""
    return run_cli(targets, *args, **{**as_env(HASHING), **env})


def embeddings_by_model(targets: Targets, tenant: Caller) -> dict[tuple[str, int], int]:
    rows = owner_fetch(
        targets,
        "SELECT model, vector_dims(embedding) AS dims, count(*) AS n FROM mindscape.memory_embeddings "
        "WHERE tenant_id = $1 GROUP BY 1, 2",
        tenant.tenant_id,
    )
    return {(r["model"], r["dims"]): r["n"] for r in rows}


def embedded_contents(targets: Targets, tenant: Caller, model: str) -> set[str]:
    rows = owner_fetch(
        targets,
        "SELECT m.content FROM mindscape.memory_embeddings e "
        "JOIN mindscape.memories m ON m.tenant_id = e.tenant_id AND m.id = e.memory_id "
        "WHERE e.tenant_id = $1 AND e.model = $2",
        tenant.tenant_id,
        model,
    )
    return {r["content"] for r in rows}


def tenant_settings(targets: Targets, tenant: Caller) -> dict[str, Any]:
    rows = owner_fetch(targets, "SELECT settings::text AS s FROM mindscape.tenants WHERE id = $1", tenant.tenant_id)
    return json.loads(rows[0]["s"])


def has_index(targets: Targets, spec: ModelSpec) -> bool:
    async def check() -> bool:
        conn = await connect(targets.owner)
        try:
            return await vector_index.has_index(conn, spec)
        finally:
            await conn.close()

    return anyio.run(check)


def call(targets: Targets, tenant: Caller, tool: str, arguments: dict[str, Any], **settings: Any) -> dict[str, Any]:
    """One tool call over an in-memory MCP client whose server has `settings`."""

    async def run() -> dict[str, Any]:
        configured = settings_for(targets, tenant.tenant_slug, **{**HASHING, **settings})
        async with Client(build_server(lambda: open_state(configured, targets.runtime))) as client:
            result = await client.call_tool(tool, arguments)
        assert not result.is_error, result.content
        assert result.structured_content is not None
        return result.structured_content

    return anyio.run(run)


def recall(targets: Targets, tenant: Caller, query: str, mode: str = "hybrid", **settings: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = call(targets, tenant, "recall", {"query": query, "mode": mode}, **settings)[
        "memories"
    ]
    return found


def dead_url() -> str:
    """An endpoint nobody listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def openai_settings(url: str, *, model: str = "stub-embed", dimensions: int = 64) -> dict[str, Any]:
    return {
        "embedding_provider": "openai",
        "embedding_model": model,
        "embedding_dimensions": dimensions,
        "embedding_base_url": url,
        "embedding_max_retries": 0,
        "embedding_timeout_s": 10,
    }


def as_env(settings: dict[str, Any]) -> dict[str, str]:
    return {f"MINDSCAPE_{k.upper()}": str(v) for k, v in settings.items()}


def texts_sent(stub: Stub, since: int = 0) -> list[str]:
    return [text for seen in stub.seen[since:] for text in seen.body["input"]]  # pyright: ignore[reportGeneralTypeIssues, reportUnknownVariableType]


# --- import --------------------------------------------------------------------------------------

ZEBRA = "zebra migration across the savanna"


def test_import_stores_every_field_uses_file_embeddings_and_skips_duplicates(
    targets: Targets, office: Caller, tmp_path: Path
) -> None:
    # The file's vector for this memory is the embedding of an unrelated text: only a stored
    # file vector can make semantic recall for that text find it.
    file_vector = HashingEmbedder().embed_one(ZEBRA)
    file = write_jsonl(
        tmp_path / "memories.jsonl",
        [
            {
                "content": "The customer prefers email over phone calls",
                "persona": "basil",
                "kind": "preference",
                "metadata": {"topic": "contact", "tags": ["a", "b"]},
                "created_at": "2024-05-01T09:30:00+02:00",
                "importance": 0.75,
                "embedding": file_vector,
            },
            {"content": "Invoices go out on the first of each month"},
            "",
            {"content": "Invoices go out on the first of each month", "kind": "fact"},  # repeats line 2
            {"content": "The customer prefers email over phone calls", "persona": "cora"},  # another persona
        ],
    )

    result = mindscape(targets, "memory", "import", file, "--tenant", office.tenant_slug)

    assert result.exit_code == 0, result.output
    summary, timing = result.stdout.strip().splitlines()
    assert summary == (
        f"imported 3 memories into {office.tenant_slug}: 1 duplicate(s) skipped, 1 embedded from the file, "
        f"2 embedded by the provider, 0 pending ({DEFAULT_KEY})"
    )
    assert re.fullmatch(r"embedding: 2 memories in [0-9.]+ s \([0-9]+/s\)", timing)
    stored = stored_memories(targets, office)
    assert set(stored) == {
        "basil:The customer prefers email over phone calls",
        "None:Invoices go out on the first of each month",
        "cora:The customer prefers email over phone calls",
    }
    basil = stored["basil:The customer prefers email over phone calls"]
    assert basil["kind"] == "preference"
    assert json.loads(basil["metadata"]) == {"topic": "contact", "tags": ["a", "b"]}
    assert basil["importance"] == pytest.approx(0.75)
    assert basil["created_at"].isoformat() == "2024-05-01T07:30:00+00:00"
    assert stored["None:Invoices go out on the first of each month"]["kind"] == "note"  # the first line wins
    assert embeddings_by_model(targets, office) == {(DEFAULT_KEY, 384): 3}

    zebra = recall(targets, office, ZEBRA, mode="semantic")
    assert zebra[0]["content"] == "The customer prefers email over phone calls"
    assert zebra[0]["persona"] == "basil"
    assert zebra[0]["semantic_rank"] == 1
    invoices = recall(targets, office, "invoices first of the month", mode="semantic")
    assert invoices[0]["content"] == "Invoices go out on the first of each month"

    again = mindscape(targets, "memory", "import", file, "--tenant", office.tenant_slug)
    assert again.exit_code == 0, again.output
    assert "imported 0 memories" in again.stdout
    assert "4 duplicate(s) skipped" in again.stdout
    assert len(stored_memories(targets, office)) == 3


def test_import_embeds_with_the_provider_in_batches_and_never_twice(
    targets: Targets, office: Caller, tmp_path: Path, stub: Stub
) -> None:
    configured = openai_settings(stub.url)
    contents = [f"Provider-embedded memory number {i} about quarterly planning" for i in range(5)]
    file = write_jsonl(tmp_path / "m.jsonl", [{"content": c} for c in contents])
    env = as_env({**configured, "embedding_batch_size": 2})

    first = mindscape(targets, "memory", "import", file, "--tenant", office.tenant_slug, **env)
    second = mindscape(targets, "memory", "import", file, "--tenant", office.tenant_slug, **env)

    assert first.exit_code == 0, first.output
    assert "5 embedded by the provider, 0 pending (openai:stub-embed:64)" in first.stdout
    assert second.exit_code == 0, second.output
    assert "imported 0 memories" in second.stdout
    assert "5 duplicate(s) skipped" in second.stdout
    assert texts_sent(stub) == contents  # each text once: the second run asked for nothing
    assert [len(s.body["input"]) for s in stub.seen] == [2, 2, 1]  # pyright: ignore[reportArgumentType]
    assert embeddings_by_model(targets, office) == {("openai:stub-embed:64", 64): 5}
    found = recall(targets, office, "memory number 3 quarterly planning", mode="semantic", **configured)
    assert found[0]["content"] == contents[3]


def test_import_with_the_provider_down_stores_pending_memories(
    targets: Targets, office: Caller, tmp_path: Path
) -> None:
    down = openai_settings(dead_url())
    file = write_jsonl(
        tmp_path / "m.jsonl",
        [
            {"content": "Pending memory about the warehouse inventory"},
            {"content": "Pending memory about the shipping labels"},
            {"content": "Memory that brings its own vector", "embedding": HashingEmbedder("x", 64).embed_one("x")},
        ],
    )

    result = mindscape(targets, "memory", "import", file, "--tenant", office.tenant_slug, **as_env(down))

    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0] == (
        f"imported 3 memories into {office.tenant_slug}: 0 duplicate(s) skipped, 1 embedded from the file, "
        "0 embedded by the provider, 2 pending (openai:stub-embed:64)"
    )
    assert "could not connect" in lines[1]
    assert f"`mindscape memory backfill --tenant {office.tenant_slug}` embeds them" in lines[1]
    assert len(stored_memories(targets, office)) == 3
    assert embeddings_by_model(targets, office) == {("openai:stub-embed:64", 64): 1}
    found = recall(targets, office, "warehouse inventory", mode="keyword", **down)
    assert [m["content"] for m in found] == ["Pending memory about the warehouse inventory"]


VALID = {"content": "A valid memory that must not be written either"}
BAD_LINES: list[tuple[str, dict[str, Any] | str, str]] = [
    ("bad-json", '{"content": "no closing quote', "line 2: invalid JSON: EOF while parsing a string at column"),
    ("not-an-object", '["content"]', "line 2: expected a JSON object"),
    ("missing-content", {"kind": "fact"}, "line 2: content: missing; every line needs it"),
    ("blank-content", {"content": "   "}, "line 2: content: is blank"),
    ("content-not-text", {"content": 42}, "line 2: content: Input should be a valid string"),
    ("oversize-content", {"content": "é" * 8193}, "line 2: content: is 16386 bytes, over the 16384-byte limit"),
    ("nul-in-content", {"content": "a\u0000b"}, "line 2: content: contains a NUL character"),
    ("unknown-persona", {"content": "x", "persona": "nobody"}, "line 2: persona: no persona 'nobody' in this tenant"),
    ("other-tenants-persona", {"content": "x", "persona": "zed"}, "line 2: persona: no persona 'zed' in this tenant"),
    ("bad-persona-slug", {"content": "x", "persona": "Not A Slug"}, "line 2: persona: String should match pattern"),
    ("bad-kind", {"content": "x", "kind": "opinion"}, "line 2: kind: Input should be 'fact', 'event'"),
    (
        "naive-created-at",
        {"content": "x", "created_at": "2024-05-01T09:30:00"},
        "line 2: created_at: Input should have timezone info",
    ),
    (
        "bad-created-at",
        {"content": "x", "created_at": "yesterday"},
        "line 2: created_at: Input should be a valid datetime",
    ),
    (
        "epoch-created-at",
        {"content": "x", "created_at": 1714555800},
        "line 2: created_at: Input should be a valid datetime",
    ),
    (
        "importance-too-high",
        {"content": "x", "importance": 1.5},
        "line 2: importance: Input should be less than or equal to 1",
    ),
    (
        "metadata-nested",
        {"content": "x", "metadata": {"a": {"b": 1}}},
        "line 2: metadata.a: must be text, a number, true/false, null or a list of those",
    ),
    (
        "metadata-too-many-keys",
        {"content": "x", "metadata": {f"k{i}": i for i in range(33)}},
        "line 2: metadata: Dictionary should have at most 32 items",
    ),
    ("metadata-nul", {"content": "x", "metadata": {"k": "a\u0000"}}, "line 2: metadata: contains a NUL character"),
    ("metadata-not-object", {"content": "x", "metadata": [1]}, "line 2: metadata: Input should be an object"),
    ("unknown-field", {"content": "x", "tags": ["a"]}, "line 2: tags: unknown field; the fields are content, persona"),
    (
        "embedding-383",
        {"content": "x", "embedding": [0.1] * 383},
        f"line 2: embedding: has 383 numbers, but the tenant's model {DEFAULT_KEY} makes 384",
    ),
    (
        "embedding-nan",
        '{"content": "x", "embedding": [NaN' + ", 0.1" * 383 + "]}",
        "line 2: embedding.0: Input should be a finite number",
    ),
    (
        "embedding-infinity",
        '{"content": "x", "embedding": [0.1, 1e400' + ", 0.1" * 382 + "]}",
        "line 2: embedding.1: Input should be a finite number",
    ),
    (
        "embedding-beyond-float32",
        {"content": "x", "embedding": [1e39] + [0.1] * 383},
        "line 2: embedding: has a number beyond the float32 range",
    ),
    ("embedding-zero", {"content": "x", "embedding": [0.0] * 384}, "line 2: embedding: is all zeros"),
    (
        "embedding-not-numbers",
        {"content": "x", "embedding": ["0.1"] * 384},
        "line 2: embedding.0: Input should be a valid number (and 383 more numbers)",
    ),
]


@pytest.mark.parametrize(
    ("line", "expected"), [(line, expected) for _, line, expected in BAD_LINES], ids=[i for i, _, _ in BAD_LINES]
)
def test_import_refuses_a_file_with_one_bad_line_and_writes_nothing(
    targets: Targets, world: World, office: Caller, tmp_path: Path, line: dict[str, Any] | str, expected: str
) -> None:
    assert world.b  # tenant B has a persona "zed"; this tenant must not see it
    file = write_jsonl(tmp_path / "m.jsonl", [VALID, line, {"content": "Another valid memory"}])

    result = mindscape(targets, "memory", "import", file, "--tenant", office.tenant_slug)

    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert lines[0] == f"error: {file} was not imported (1 problem(s)); nothing was written:"
    assert len(lines) == 2
    assert lines[1].strip().startswith(expected), lines[1]
    assert stored_memories(targets, office) == {}


def test_import_lists_every_problem_in_line_order(targets: Targets, office: Caller, tmp_path: Path) -> None:
    file = write_jsonl(
        tmp_path / "m.jsonl",
        [
            VALID,
            {"content": "x", "persona": "nobody"},
            "{oops",
            {"kind": "opinion", "importance": -1},
            {"content": "y", "persona": "basil"},
            {"content": "z", "persona": "ghost", "embedding": [1.0]},
        ],
    )

    result = mindscape(targets, "memory", "import", file, "--tenant", office.tenant_slug)

    assert result.exit_code == 1
    problems = [line.strip() for line in result.stderr.strip().splitlines()[1:]]
    assert [p.split(":")[0] for p in problems] == ["line 2", "line 3", "line 4", "line 4", "line 4", "line 6", "line 6"]
    assert problems[0].startswith("line 2: persona: no persona 'nobody'")
    assert problems[1].startswith("line 3: invalid JSON")
    assert {p.split(":")[1].strip() for p in problems[2:5]} == {"content", "kind", "importance"}
    assert problems[5].startswith("line 6: embedding: has 1 numbers")
    assert problems[6].startswith("line 6: persona: no persona 'ghost'")
    assert "(7 problem(s))" in result.stderr
    assert stored_memories(targets, office) == {}


def test_import_lists_fifty_problems_and_counts_the_rest(targets: Targets, office: Caller, tmp_path: Path) -> None:
    file = write_jsonl(tmp_path / "m.jsonl", [{"kind": "fact"}] * 60)

    result = mindscape(targets, "memory", "import", file, "--tenant", office.tenant_slug)

    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert lines[0] == f"error: {file} was not imported (60 problem(s)); nothing was written:"
    assert lines[1].strip() == "line 1: content: missing; every line needs it"
    assert lines[50].strip() == "line 50: content: missing; every line needs it"
    assert lines[51].strip() == "... and 10 more"
    assert len(lines) == 52


def test_import_of_a_missing_file_or_into_an_unknown_tenant_fails_in_one_line(
    targets: Targets, office: Caller, tmp_path: Path
) -> None:
    missing = mindscape(targets, "memory", "import", tmp_path / "nope.jsonl", "--tenant", office.tenant_slug)
    file = write_jsonl(tmp_path / "m.jsonl", [VALID])
    unknown = mindscape(targets, "memory", "import", file, "--tenant", "no-such-tenant-here")

    assert missing.exit_code == 1
    assert "file: cannot read: No such file or directory" in missing.stderr
    assert unknown.exit_code == 1
    assert "tenant 'no-such-tenant-here' does not exist" in one_line(unknown.stderr)


# --- backfill ------------------------------------------------------------------------------------


def test_backfill_embeds_what_was_stored_during_a_provider_outage(targets: Targets, office: Caller, stub: Stub) -> None:
    down, up = openai_settings(dead_url()), openai_settings(stub.url)
    contents = [f"Outage memory {i}: the billing export failed on night {i}" for i in range(5)]
    for content in contents:
        stored = call(targets, office, "remember", {"content": content}, **down)
        assert stored["embedding"] == "pending"
    assert recall(targets, office, "night 3", mode="keyword", **down)[0]["content"] == contents[3]

    failed = mindscape(targets, "memory", "backfill", "--tenant", office.tenant_slug, **as_env(down))

    assert failed.exit_code == 1
    line = one_line(failed.stderr)
    assert "could not connect" in line
    assert "0 embedded now, 5 memories still lack a openai:stub-embed:64 embedding" in line
    assert f"run `mindscape memory backfill --tenant {office.tenant_slug}` again" in line
    assert embeddings_by_model(targets, office) == {}

    done = mindscape(targets, "memory", "backfill", "--tenant", office.tenant_slug, "--batch", "2", **as_env(up))

    assert done.exit_code == 0, done.output
    assert one_line(done.stdout) == (
        f"embedded 5 pending memories of {office.tenant_slug} with openai:stub-embed:64; none left"
    )
    assert embeddings_by_model(targets, office) == {("openai:stub-embed:64", 64): 5}
    assert sorted(texts_sent(stub)) == sorted(contents)
    found = recall(targets, office, "billing export night 3", mode="semantic", **up)
    assert found[0]["content"] == contents[3]
    assert found[0]["semantic_rank"] == 1

    again = mindscape(targets, "memory", "backfill", "--tenant", office.tenant_slug, **as_env(up))
    assert again.exit_code == 0, again.output
    assert "embedded 0 pending memories" in again.stdout


# --- reembed -------------------------------------------------------------------------------------

CONTENTS = [f"Reembed memory {i}: the {colour} dashboard shows {i * 7} alerts" for i, colour in enumerate(
    ["red", "blue", "green", "amber", "violet"]
)]  # fmt: skip


def import_contents(targets: Targets, tenant: Caller, tmp_path: Path) -> None:
    file = write_jsonl(tmp_path / "seed.jsonl", [{"content": c} for c in CONTENTS])
    result = mindscape(targets, "memory", "import", file, "--tenant", tenant.tenant_slug)
    assert result.exit_code == 0, result.output
    assert embeddings_by_model(targets, tenant) == {(DEFAULT_KEY, 384): len(CONTENTS)}


def test_reembed_to_another_dimension_switches_only_when_complete(
    targets: Targets, office: Caller, tmp_path: Path
) -> None:
    import_contents(targets, office, tmp_path)
    target = ModelSpec("hashing", "alt", 256)

    result = mindscape(
        targets,
        "memory",
        "reembed",
        "--tenant",
        office.tenant_slug,
        "--model",
        "alt",
        "--dimensions",
        "256",
        "--batch",
        "2",
    )

    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert f"embedded 5 memories of {office.tenant_slug} with hashing:alt:256" in lines
    assert lines[-1] == f"switched {office.tenant_slug} from {DEFAULT_KEY} to hashing:alt:256"
    assert tenant_settings(targets, office) == {"embedding_model": "hashing:alt:256"}
    assert embeddings_by_model(targets, office) == {(DEFAULT_KEY, 384): 5, ("hashing:alt:256", 256): 5}
    assert has_index(targets, target)

    # With the old model's vectors gone, only the new model can still find anything.
    owner_fetch(
        targets,
        "DELETE FROM mindscape.memory_embeddings WHERE tenant_id = $1 AND model = $2",
        office.tenant_id,
        DEFAULT_KEY,
    )
    found = recall(targets, office, "green dashboard alerts", mode="semantic")
    assert found[0]["content"] == CONTENTS[2]
    assert found[0]["semantic_rank"] == 1

    again = mindscape(
        targets, "memory", "reembed", "--tenant", office.tenant_slug, "--model", "alt", "--dimensions", "256"
    )
    assert again.exit_code == 0, again.output
    assert again.stdout.strip().splitlines() == [
        f"embedded 0 memories of {office.tenant_slug} with hashing:alt:256",
        f"{office.tenant_slug} already uses hashing:alt:256: nothing to switch",
    ]


def test_reembed_with_the_active_model_switches_nothing_but_fills_gaps(
    targets: Targets, office: Caller, tmp_path: Path
) -> None:
    import_contents(targets, office, tmp_path)
    owner_fetch(
        targets,
        "DELETE FROM mindscape.memory_embeddings e USING mindscape.memories m "
        "WHERE e.tenant_id = $1 AND m.tenant_id = e.tenant_id AND m.id = e.memory_id AND m.content = $2",
        office.tenant_id,
        CONTENTS[1],
    )

    result = mindscape(targets, "memory", "reembed", "--tenant", office.tenant_slug, "--model", "mindscape-hash-v1")

    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[-2:] == [
        f"embedded 1 memories of {office.tenant_slug} with {DEFAULT_KEY}",
        f"{office.tenant_slug} already uses {DEFAULT_KEY}: nothing to switch",
    ]
    assert tenant_settings(targets, office) == {}
    assert embeddings_by_model(targets, office) == {(DEFAULT_KEY, 384): 5}


def reembed_to_stub(targets: Targets, tenant: Caller, stub: Stub) -> Result:
    return mindscape(
        targets,
        "memory", "reembed", "--tenant", tenant.tenant_slug,
        "--provider", "openai", "--model", "stub-embed", "--dimensions", "256", "--batch", "2",
        MINDSCAPE_EMBEDDING_BASE_URL=stub.url,
        MINDSCAPE_EMBEDDING_MAX_RETRIES="0",
    )  # fmt: skip


def test_reembed_interrupted_by_a_provider_failure_resumes_and_recall_works_throughout(
    targets: Targets, office: Caller, tmp_path: Path, stub: Stub
) -> None:
    import_contents(targets, office, tmp_path)
    target = "openai:stub-embed:256"
    # The server's configured model stays the default; the stub is only reachable for the new model.
    server = {"embedding_base_url": stub.url, "embedding_max_retries": 0}
    stub.script = [Reply()]  # the first batch, then every request fails
    stub.default = Reply(500)

    failed = reembed_to_stub(targets, office, stub)

    assert failed.exit_code == 1
    line = one_line(failed.stderr)
    assert "HTTP 500" in line
    assert f"2 embedded now, 3 memories still lack a {target} embedding" in line
    assert "run `mindscape memory reembed --tenant" in line
    first_batch = set(texts_sent(stub)[:2])
    assert embedded_contents(targets, office, target) == first_batch
    assert tenant_settings(targets, office) == {}

    # Mid-way, recall still uses the old model: it finds memories the new one has not embedded
    # yet, by vector, and never asks the new model's provider.
    requests = len(stub.seen)
    not_yet = next(c for c in CONTENTS if c not in first_batch)
    found = recall(targets, office, not_yet, mode="semantic", **server)
    assert found[0]["content"] == not_yet
    assert found[0]["semantic_rank"] == 1
    assert len(stub.seen) == requests

    stub.default = Reply()
    resumed_from = len(stub.seen)
    resumed = reembed_to_stub(targets, office, stub)

    assert resumed.exit_code == 0, resumed.output
    assert f"embedded 3 memories of {office.tenant_slug} with {target}" in resumed.stdout
    assert f"switched {office.tenant_slug} from {DEFAULT_KEY} to {target}" in resumed.stdout
    assert sorted(texts_sent(stub, resumed_from)) == sorted(set(CONTENTS) - first_batch)  # only the missing ones
    assert tenant_settings(targets, office) == {"embedding_model": target}
    assert embeddings_by_model(targets, office) == {(DEFAULT_KEY, 384): 5, (target, 256): 5}
    assert has_index(targets, ModelSpec.parse(target))

    before_recall = len(stub.seen)
    found = recall(targets, office, "amber dashboard alerts", mode="semantic", **server)
    assert found[0]["content"] == CONTENTS[3]
    assert texts_sent(stub, before_recall) == ["amber dashboard alerts"]  # the query, embedded by the new model


@pytest.fixture
def held_stub(stub: Stub) -> Stub:
    """The stub answers the first request, then holds the second one until the test ends."""
    stub.script = [Reply(), Reply(delay_s=120)]
    return stub


def test_reembed_interrupted_with_ctrl_c_keeps_stored_batches_and_resumes(
    targets: Targets, office: Caller, tmp_path: Path, held_stub: Stub
) -> None:
    import_contents(targets, office, tmp_path)
    target = "openai:stub-embed:256"
    args = ["--provider", "openai", "--model", "stub-embed", "--dimensions", "256", "--batch", "2"]
    env = {**os.environ, **cli_env(targets), "MINDSCAPE_EMBEDDING_BASE_URL": held_stub.url}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mindscape", "memory", "reembed", "--tenant", office.tenant_slug, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=interruptible,
    )
    try:
        deadline = time.monotonic() + 120  # a hang guard, not an assertion
        while len(held_stub.seen) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(held_stub.seen) == 2, "the second batch never reached the provider"
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    assert proc.returncode == 130, stderr
    assert stdout == ""
    assert "interrupted: the batches stored so far are kept" in one_line(stderr)
    first_batch = set(texts_sent(held_stub)[:2])
    assert embedded_contents(targets, office, target) == first_batch
    assert tenant_settings(targets, office) == {}

    resumed_from = len(held_stub.seen)
    resumed = mindscape(
        targets, "memory", "reembed", "--tenant", office.tenant_slug, *args, MINDSCAPE_EMBEDDING_BASE_URL=held_stub.url
    )

    assert resumed.exit_code == 0, resumed.output
    assert sorted(texts_sent(held_stub, resumed_from)) == sorted(set(CONTENTS) - first_batch)
    assert tenant_settings(targets, office) == {"embedding_model": target}


def test_reembed_refuses_a_bad_model_name_in_one_line(targets: Targets, office: Caller) -> None:
    result = mindscape(targets, "memory", "reembed", "--tenant", office.tenant_slug, "--model", "bad name!")

    assert result.exit_code == 1
    assert "'bad name!' is not a model name" in one_line(result.stderr)
    assert tenant_settings(targets, office) == {}


# --- the per-model index -------------------------------------------------------------------------


def unique_model() -> str:
    return f"idx-{os.urandom(5).hex()}"


def test_db_upgrade_builds_the_configured_models_index(targets: Targets) -> None:
    spec = ModelSpec("hashing", unique_model(), 128)
    assert not has_index(targets, spec)
    env = as_env({"embedding_model": spec.model, "embedding_dimensions": spec.dimensions})

    result = mindscape(targets, "db", "upgrade", **env)

    assert result.exit_code == 0, result.output
    assert one_line(result.stdout) == "schema upgraded to head"
    assert has_index(targets, spec)
    assert mindscape(targets, "db", "upgrade", **env).exit_code == 0  # already there: nothing to do


def test_prepare_builds_the_configured_models_index_on_the_embedded_database(targets: Targets) -> None:
    pgdata = owner_fetch(targets, "SELECT current_setting('data_directory') AS d")[0]["d"]
    spec = ModelSpec("hashing", unique_model(), 64)
    settings = Settings.model_validate(
        {
            "data_dir": str(Path(pgdata).parent),
            **HASHING,
            "embedding_model": spec.model,
            "embedding_dimensions": spec.dimensions,
        }
    )
    assert not has_index(targets, spec)

    prepared = anyio.run(prepare, settings)

    assert prepared.embedded
    assert has_index(targets, spec)


# Context: metadata.context is embedded with the memory (memory/context.py).
REPLY = "Yes, every Sunday since May"
QUESTION = "Do you still go hiking in the mountains?"
TWIN = "Sure, every Saturday after work"


def stored_vectors(targets: Targets, tenant: Caller) -> dict[str, np.ndarray[Any, Any]]:
    rows = owner_fetch(
        targets,
        "SELECT m.content, e.embedding::text AS v FROM mindscape.memory_embeddings e "
        "JOIN mindscape.memories m ON m.tenant_id = e.tenant_id AND m.id = e.memory_id WHERE e.tenant_id = $1",
        tenant.tenant_id,
    )
    return {r["content"]: np.array(json.loads(r["v"])) for r in rows}


def mixed(embed: Any, content: str, context: str) -> np.ndarray[Any, Any]:
    v = np.array(embed(content)) + CONTEXT_WEIGHT * np.array(embed(context))
    return v / np.linalg.norm(v)


def test_remember_embeds_the_context_and_recall_finds_the_reply_by_it(targets: Targets, office: Caller) -> None:
    call(targets, office, "remember", {"content": REPLY, "metadata": {"context": QUESTION}})
    call(targets, office, "remember", {"content": TWIN})
    hashing = HashingEmbedder()
    vectors = stored_vectors(targets, office)
    assert np.allclose(vectors[REPLY], mixed(hashing.embed_one, REPLY, QUESTION), atol=1e-6)
    assert np.allclose(vectors[TWIN], hashing.embed_one(TWIN), atol=1e-6)

    semantic = recall(targets, office, "hiking mountains", mode="semantic", memory_min_similarity=0.1)
    keyword = recall(targets, office, "hiking mountains", mode="keyword")
    assert [m["content"] for m in semantic] == [REPLY]  # found by what it answers
    assert [m["content"] for m in keyword] == [REPLY]  # by its context's words too (migration 0007)
    assert keyword[0]["score"] == pytest.approx(0.5)  # which count half


def test_import_and_backfill_embed_the_context(targets: Targets, office: Caller, stub: Stub, tmp_path: Path) -> None:
    file = write_jsonl(
        tmp_path / "m.jsonl",
        [
            {"content": QUESTION},
            {"content": REPLY, "metadata": {"context": QUESTION}},
            {"content": TWIN, "metadata": {"context": 42}},  # not a string: no context
        ],
    )
    up = openai_settings(stub.url)
    result = mindscape(targets, "memory", "import", file, "--tenant", office.tenant_slug, **as_env(up))
    assert result.exit_code == 0, result.output

    def embed(text: str) -> list[float]:
        return stub_vector(text, 64)

    vectors = stored_vectors(targets, office)
    assert np.allclose(vectors[REPLY], mixed(embed, REPLY, QUESTION), atol=1e-6)
    assert np.allclose(vectors[TWIN], embed(TWIN), atol=1e-6)
    sent = [t for s in stub.seen for t in cast(list[str], s.body["input"])]
    assert sorted(sent) == sorted([QUESTION, REPLY, TWIN])  # the context was another line: embedded once

    later = "Only on dry days"
    stored = call(
        targets, office, "remember", {"content": later, "metadata": {"context": REPLY}}, **openai_settings(dead_url())
    )
    assert stored["embedding"] == "pending"
    done = mindscape(targets, "memory", "backfill", "--tenant", office.tenant_slug, **as_env(up))
    assert done.exit_code == 0, done.output
    assert np.allclose(stored_vectors(targets, office)[later], mixed(embed, later, REPLY), atol=1e-6)

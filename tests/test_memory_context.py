"""metadata.context: the text a memory follows is embedded with it (memory/context.py), in
`remember`, `mindscape memory import` and the backfill of pending memories; keyword search and
what recall returns stay the content alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import anyio
import numpy as np
import pytest

from mindscape.app.identity import Caller
from mindscape.database.urls import Targets
from mindscape.embeddings.hashing import HashingEmbedder
from mindscape.memory.context import CONTEXT_WEIGHT
from tests.conftest import make_tenant
from tests.openai_stub import Stub, stub_vector
from tests.test_memory_cli import (
    as_env,
    call,
    dead_url,
    mindscape,
    openai_settings,
    owner_fetch,
    recall,
    write_jsonl,
)

REPLY = "Yes, every Sunday since May"
QUESTION = "Do you still go hiking in the mountains?"
TWIN = "Sure, every Saturday after work"


@pytest.fixture
def office(targets: Targets) -> Caller:
    return anyio.run(lambda: make_tenant(targets, [], "ctx"))


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
    assert keyword == []  # the context is not searchable text: only the vector carries it


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

"""The `local` embedding provider (the default): the real model from ../shared/models, never the hub.

What is checked: the default is semantic; the vectors (384-d, unit length, batched = one by one);
paraphrases found by meaning; the worker thread (a query is not held up by an import, the event
loop keeps serving); a missing model (the server starts, memories are stored pending, recall
matches words with a note, the backlog is embedded once the model is there, one log line and no
traceback); a hub out of reach fails at once; `model pull`, `doctor` and honest descriptions.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from pathlib import Path

import anyio
import numpy as np
import pytest
from typer.testing import CliRunner

from mindscape.app.server import build_server
from mindscape.app.state import open_state
from mindscape.cli import app
from mindscape.cli.memory import bulk
from mindscape.config.settings import Settings, load_settings
from mindscape.database.pool import connect
from mindscape.database.targets import Targets
from mindscape.embeddings.base import ModelSpec, ModelUnavailable
from mindscape.embeddings.factory import configured_spec, local_source, make_embedder, semantic
from mindscape.embeddings.hashing import HashingEmbedder
from mindscape.embeddings.local import (
    DEFAULT_DESCRIPTION,
    DEFAULT_MODEL,
    LocalEmbedder,
    LocalModel,
    catalogue_entry,
    download,
    shared_model,
)
from mindscape.errors import StartupError
from mindscape.queries import tenants
from mindscape.tenancy.caller import Caller
from tests.support.cli import cli_env
from tests.support.memory import client_with, remember, wait_until_embedded
from tests.support.results import data, error_text
from tests.support.tenants import SHARED_MODEL, make_tenant, persona, settings_for

pytestmark = pytest.mark.anyio
KEY = f"local:{DEFAULT_MODEL}:384"
runner = CliRunner()

# Each fact with a question that shares no content word with it (checked below), and unrelated facts.
PARAPHRASES = [
    ("The customer prefers email over phone calls", "how should I contact them?"),
    ("Invoices are issued on the first business day of each month", "when do we send bills?"),
    ("The office is closed on public holidays", "is the building open at Christmas?"),
    ("Dana is allergic to peanuts", "what food should be avoided for her?"),
    ("The production database is backed up every night at 2am", "how often is data saved?"),
    ("Our flight to Berlin leaves at 7 in the morning", "when does the plane depart?"),
    ("He drives a red Toyota", "what car does he own?"),
    ("The wifi password is on the fridge", "where can I find the network credentials?"),
    ("My sister lives in Lisbon", "where is her home city?"),
]
FUNCTION_WORDS = {"the", "is", "at", "a", "on", "in", "of", "to", "do", "we", "he", "her", "my", "our"}
UNRELATED = ["The cat sat on the mat", "Quarterly report drafts are due two weeks before the board meeting"]


def embedder(settings: Settings | None = None) -> LocalEmbedder:
    settings = settings or Settings()
    made = make_embedder(configured_spec(settings), settings)
    assert isinstance(made, LocalEmbedder)
    return made


def cosine_ranks(vectors: list[list[float]], query: list[float]) -> list[int]:
    scores = np.array(vectors) @ np.array(query)
    return [int(i) for i in np.argsort(-scores)]


def test_the_default_provider_is_the_local_model_not_hashing() -> None:
    settings = Settings()
    assert settings.embedding_provider == "local"
    assert configured_spec(settings).key == KEY
    assert semantic(settings)
    assert SHARED_MODEL.is_dir(), "the tests need ../shared/models/all-MiniLM-L6-v2"
    assert local_source(settings).path == SHARED_MODEL  # conftest: never the hub
    hashing = Settings(embedding_provider="hashing")  # chosen: its own default model
    assert configured_spec(hashing) == ModelSpec("hashing", "mindscape-hash-v1", 384)
    assert not semantic(hashing)


def test_the_built_in_description_is_fastembeds() -> None:
    assert catalogue_entry(DEFAULT_MODEL) == DEFAULT_DESCRIPTION


def test_a_server_embeds_with_one_thread_and_bulk_commands_with_one_per_core() -> None:
    # One query at a time: a second ONNX Runtime thread only spins (embeddings/factory.py).
    default, chosen = load_settings(), load_settings(embedding_threads=3)
    assert local_source(default).threads == 1
    assert local_source(bulk(default)).threads == (os.cpu_count() or 1)
    assert local_source(chosen).threads == 3
    assert local_source(bulk(chosen)).threads == 3


def test_the_local_model_has_its_own_dimensions() -> None:
    with pytest.raises(StartupError, match="makes 384-dimensional vectors"):
        load_settings(embedding_dimensions=768)


async def test_vectors_are_384_dimensional_unit_length_and_batching_changes_nothing() -> None:
    local = embedder()
    texts = ["short", "The customer prefers email over phone calls " * 8, "Ünïcödé ✓ and emoji 🙂", "a b c d e f g"]
    batched = await local.embed(texts)
    one_by_one = [(await local.embed([t]))[0] for t in texts]
    concurrent = [v[0] for v in await asyncio.gather(*(local.embed([t]) for t in texts))]
    assert [len(v) for v in batched] == [384] * len(texts)
    assert np.allclose(np.linalg.norm(np.array(batched), axis=1), 1.0, atol=1e-6)
    assert np.allclose(np.array(batched), np.array(one_by_one), atol=1e-5)  # padding in a batch is masked
    assert np.allclose(np.array(concurrent), np.array(one_by_one), atol=1e-5)


@pytest.mark.parametrize("model", ["local", "hashing"])
async def test_paraphrases_rank_above_unrelated_text(model: str) -> None:
    facts = [fact for fact, _ in PARAPHRASES] + UNRELATED
    for fact, question in PARAPHRASES:
        shared = set(fact.lower().split()) & set(question.lower().strip("?").split())
        assert shared <= FUNCTION_WORDS, (fact, question)
    local, hashing = embedder(), HashingEmbedder()
    fact_vectors = await local.embed(facts) if model == "local" else hashing.embed_sync(facts)
    firsts = 0
    for index, (_, question) in enumerate(PARAPHRASES):
        query = (await local.embed([question]))[0] if model == "local" else hashing.embed_one(question)
        firsts += cosine_ranks(fact_vectors, query)[0] == index
    if model == "local":
        assert firsts == len(PARAPHRASES)
    else:  # the lexical model, for contrast: what the local model is for
        assert firsts <= len(PARAPHRASES) // 2


async def test_a_request_is_embedded_shortest_text_first(monkeypatch: pytest.MonkeyPatch) -> None:
    # A batch is padded to its longest text: texts of similar length share one (benchmarks/README.md).
    batches: list[list[str]] = []
    real = LocalModel._embed  # pyright: ignore[reportPrivateUsage]

    def recording(session: object, batch: list[str]) -> list[list[float]]:
        batches.append(batch)
        return real(session, batch)  # pyright: ignore[reportArgumentType]

    monkeypatch.setattr(LocalModel, "_embed", staticmethod(recording))
    texts = [("word " * (n * 7 % 40 + 1)).strip() + f" {n}" for n in range(40)]
    vectors = await embedder().embed(texts)
    one_by_one = [(await embedder().embed([t]))[0] for t in texts[:3]]
    assert batches[0] == sorted(texts, key=len)[: len(batches[0])]
    assert [t for batch in batches[:2] for t in batch] == sorted(texts, key=len)
    assert np.allclose(np.array(vectors[:3]), np.array(one_by_one), atol=1e-5)  # back in the request's order


async def test_a_query_does_not_wait_for_a_large_request() -> None:
    model = embedder().model
    large = model.submit([f"memory number {i} of a large import" for i in range(640)])
    query = model.submit(["a query behind it"])
    assert len(await asyncio.wrap_future(query)) == 1
    assert not large.done()  # shortest first: the query took the next batch
    assert len(await asyncio.wrap_future(large)) == 640


async def test_embedding_runs_off_the_event_loop(targets: Targets, office: Caller) -> None:
    other = await make_tenant(targets, [persona("ada", "Ada")], "loc")
    local = embedder()
    await local.embed(["warm"])
    async with client_with(targets, other.tenant_slug) as client:
        embedding = asyncio.ensure_future(local.embed([f"text {i} for a slow embed" for i in range(1500)]))
        listed = data(await client.call_tool("list_personas", {}))
        assert not embedding.done()  # another tenant's read was answered while the model worked
    assert [p["slug"] for p in listed["personas"]] == ["ada"]
    assert len(await embedding) == 1500


async def test_semantic_recall_through_the_server(office: Caller, targets: Targets) -> None:
    async with client_with(targets, office.tenant_slug) as client:
        stored = await remember(client, "The customer prefers email over phone calls")
        await remember(client, "Customers in Japan are billed in yen")
        found = data(
            await client.call_tool("recall", {"query": "is it better to ring or to write to this client?", "k": 2})
        )
    assert stored["embedding"] == "ready"
    assert found["memories"][0]["id"] == stored["id"]
    assert found["note"] is None


@pytest.fixture
async def office(targets: Targets) -> Caller:
    return await make_tenant(targets, [], "loc")


async def test_missing_model_stores_pending_recalls_by_words_and_backfills_once_it_is_there(
    office: Caller, targets: Targets, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    async with client_with(targets, office.tenant_slug, embedding_model_path=str(model_dir)) as client:
        stored = await remember(client, "The customer prefers email over phone calls")
        hybrid = data(await client.call_tool("recall", {"query": "customer email"}))
        paraphrase = data(
            await client.call_tool("recall", {"query": "is it better to ring or to write to this client?"})
        )
        refused = error_text(await client.call_tool("recall", {"query": "customer email", "mode": "semantic"}))
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]

        for path in SHARED_MODEL.iterdir():  # the model arrives (as `model pull` or a copy would bring it)
            (model_dir / path.name).symlink_to(path)
        fresh = await remember(client, "Invoices go out on the first of each month")
        await wait_until_embedded(targets, office, KEY)  # the backlog, after the reply
        found = data(
            await client.call_tool(
                "recall", {"query": "is it better to ring or to write to this client?", "mode": "semantic"}
            )
        )

    assert stored["embedding"] == "pending"
    assert "keyword recall finds it now" in (stored["note"] or "")
    assert [m["id"] for m in hybrid["memories"]] == [stored["id"]]
    unavailable = "semantic search unavailable (the embedding model is not installed on this server)"
    assert hybrid["note"] == f"{unavailable}; keyword matches only"
    assert paraphrase["memories"] == []
    assert (paraphrase["note"] or "").startswith(unavailable)
    assert "mode='keyword'" in refused
    assert str(model_dir) not in refused  # agents get the reason, operators the path
    assert len(warnings) == 1, warnings  # said once, in one line, with the fix
    assert str(model_dir) in warnings[0]
    assert "uv run mindscape model pull" in warnings[0]
    assert "MINDSCAPE_EMBEDDING_MODEL_PATH" in warnings[0]
    assert "\n" not in warnings[0]
    assert fresh["embedding"] == "ready"
    assert found["memories"][0]["id"] == stored["id"]
    assert all(r.exc_info is None for r in caplog.records)
    assert "Traceback" not in caplog.text


async def test_an_unreachable_hub_fails_at_once_and_the_server_still_serves(
    office: Caller, targets: Targets, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("MINDSCAPE_EMBEDDING_MODEL_PATH")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: refused
    with pytest.raises(ModelUnavailable, match="cannot reach the model hub"):
        download(DEFAULT_MODEL, tmp_path / "direct")

    caplog.set_level(logging.WARNING)
    async with client_with(targets, office.tenant_slug, data_dir=str(tmp_path)) as client:
        stored = await remember(client, "Stored while the hub is out of reach")
        model = shared_model(local_source(settings_for(targets, office.tenant_slug, data_dir=str(tmp_path))))
        assert model.source.cache_dir == tmp_path / "models"
        for _ in range(600):  # the background attempt: bounded, and refused here at once
            if model.problem is not None and "cannot reach" in model.problem:
                break
            await asyncio.sleep(0.05)
        found = data(await client.call_tool("recall", {"query": "hub out of reach"}))
    assert stored["embedding"] == "pending"
    assert [m["id"] for m in found["memories"]] == [stored["id"]]
    assert "semantic search unavailable" in (found["note"] or "")
    assert model.problem is not None
    assert "uv run mindscape model pull" in model.problem
    assert not (tmp_path / "models" / "models--Qdrant--all-MiniLM-L6-v2-onnx" / "snapshots").exists()
    assert "Traceback" not in caplog.text


def test_model_pull_finds_the_model_or_says_how_to_get_it(targets: Targets, tmp_path: Path) -> None:
    present = runner.invoke(app, ["model", "pull"], env=cli_env(targets))
    offline = runner.invoke(
        app,
        ["model", "pull"],
        env=cli_env(targets, MINDSCAPE_DATA_DIR=str(tmp_path), MINDSCAPE_EMBEDDING_MODEL_PATH=""),
    )
    empty = runner.invoke(app, ["model", "pull"], env=cli_env(targets, MINDSCAPE_EMBEDDING_MODEL_PATH=str(tmp_path)))

    assert present.exit_code == 0, present.output
    assert f"{DEFAULT_MODEL} is already in {SHARED_MODEL} (91 MB)" in present.stdout
    assert offline.exit_code == 1
    assert "HF_HUB_OFFLINE is set" in offline.output
    assert "MINDSCAPE_EMBEDDING_MODEL_PATH" in offline.output
    assert empty.exit_code == 1
    assert f"is not in {tmp_path}" in empty.output
    for result in (offline, empty):
        assert "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1


def test_doctor_shows_where_the_model_is_and_when_it_is_missing(targets: Targets, tmp_path: Path) -> None:
    present = runner.invoke(app, ["doctor"], env=cli_env(targets))
    missing = runner.invoke(app, ["doctor"], env=cli_env(targets, MINDSCAPE_EMBEDDING_MODEL_PATH=str(tmp_path)))

    assert present.exit_code == 0, present.output
    assert f"ok    embeddings: {KEY} (semantic, in this process): model in {SHARED_MODEL} (91 MB)" in present.stdout
    assert missing.exit_code == 0, missing.output  # degraded, not broken
    assert f"warn  embeddings: {KEY}: the model is not in {tmp_path} (embedding_model_path)" in missing.stdout
    assert "recall matches words" in missing.stdout
    assert "MINDSCAPE_EMBEDDING_MODEL_PATH" in missing.stdout


async def test_doctor_lists_tenants_still_on_the_lexical_model(targets: Targets) -> None:
    from mindscape.ops.doctor import lexical_tenants_check

    async def lexical() -> tuple[int, str]:
        conn = await connect(targets.owner)  # listing tenants needs the owner (migration 0006)
        try:
            check = await lexical_tenants_check(conn, Settings())
        finally:
            await conn.close()
        count = int(check.detail.split()[0]) if check.status == "warn" else 0
        return count, check.fix or ""

    before, _ = await lexical()
    tenant = await make_tenant(targets, [], "lex")
    owner = await connect(targets.owner)
    try:
        await tenants.set_setting(owner, tenant_id=tenant.tenant_id, key="embedding_model", value="hashing:m:64")
    finally:
        await owner.close()
    after, fix = await lexical()
    assert after == before + 1
    assert "mindscape memory reembed" in fix


async def test_instructions_and_descriptions_say_what_the_model_can_do(targets: Targets) -> None:
    async def texts(settings: Settings) -> tuple[str, str]:
        server = build_server(lambda: open_state(settings, targets.runtime), semantic=semantic(settings))
        recall = next(t for t in await server.list_tools() if t.name == "recall")
        return server.instructions or "", recall.description or ""

    slug = f"x-{uuid.uuid4().hex[:8]}"
    local = await texts(settings_for(targets, slug))
    lexical = await texts(settings_for(targets, slug, embedding_provider="hashing"))
    assert "by meaning" in local[0]
    assert "by meaning" in local[1]
    assert "meaning" not in lexical[0]
    assert "lexical" in lexical[0]
    assert "meaning" not in lexical[1]
    assert "not synonyms or paraphrases" in lexical[1]


def test_memory_reembed_moves_a_tenant_from_hashing_to_the_local_model(targets: Targets) -> None:
    async def before() -> tuple[Caller, str]:
        tenant = await make_tenant(targets, [], "loc")
        async with client_with(targets, tenant.tenant_slug, embedding_provider="hashing") as client:
            stored = await remember(client, "The customer prefers email over phone calls")
            await remember(client, "Customers in Japan are billed in yen")
        owner = await connect(targets.owner)
        try:  # what migration 0005 does for tenants of the old default
            await tenants.set_setting(
                owner, tenant_id=tenant.tenant_id, key="embedding_model", value="hashing:mindscape-hash-v1:384"
            )
        finally:
            await owner.close()
        return tenant, stored["id"]

    async def after(tenant: Caller) -> list[str]:
        async with client_with(targets, tenant.tenant_slug) as client:
            found = data(
                await client.call_tool(
                    "recall", {"query": "is it better to ring or to write to this client?", "mode": "semantic"}
                )
            )
        return [m["id"] for m in found["memories"]]

    tenant, stored = anyio.run(before)
    args = ["memory", "reembed", "--tenant", tenant.tenant_slug, "--provider", "local", "--model", DEFAULT_MODEL]
    result = runner.invoke(app, args, env=cli_env(targets))

    assert result.exit_code == 0, result.output
    assert f"switched {tenant.tenant_slug} from hashing:mindscape-hash-v1:384 to {KEY}" in result.stdout
    assert anyio.run(after, tenant)[0] == stored

"""Honest relevance: similarity on every recalled memory, the min_similarity floor, "nothing relevant"
in every mode, any-word keyword ranking (memories and personas), `-word` exclusion, the term bound.

The built-in hashing embedder is enough here (shared words and spellings): none of these checks
needs meaning. Paraphrases through a sentence model are benchmarks/memory_quality.py's job.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from mcp import Client

from mindscape.database.targets import Targets
from mindscape.errors import InvalidArgument
from mindscape.queries.fulltext import MAX_TERMS, parse
from mindscape.tenancy.caller import Caller
from tests.support.memory import client_with
from tests.support.results import data, error_text
from tests.support.tenants import ClientFactory, make_tenant, persona

pytestmark = pytest.mark.anyio
MODES = ["hybrid", "semantic", "keyword"]


@pytest.fixture
async def office(targets: Targets) -> Caller:
    return await make_tenant(targets, [], "rel")


async def remember(client: Client, content: str, **args: Any) -> str:
    return data(await client.call_tool("remember", {"content": content, **args}))["id"]


async def recall(client: Client, query: str, **args: Any) -> dict[str, Any]:
    return data(await client.call_tool("recall", {"query": query, **args}))


async def seed(client: Client) -> dict[str, str]:
    texts = {
        "laptop": "Laptop setup takes a day: order the machine a week ahead",
        "badge": "Visitor badges are printed at the front desk",
        "returns": "Laptop returns go through the IT storeroom",
    }
    return {name: await remember(client, text) for name, text in texts.items()}


@pytest.mark.parametrize("mode", MODES)
async def test_unrelated_query_returns_nothing_and_says_so(
    office: Caller, client_for: ClientFactory, mode: str
) -> None:
    async with client_for(office.tenant_slug) as client:
        await seed(client)
        found = await recall(client, "zzqx blorf", mode=mode)
        # The same query with the floor lowered all the way: the floor is what emptied the answer.
        unfloored = await recall(client, "zzqx blorf", mode=mode, min_similarity=-1)
    assert found["memories"] == []
    assert "nothing relevant" in found["note"]
    if mode == "keyword":
        assert "words" in found["note"]
        assert unfloored["memories"] == []  # keyword mode has no floor: no shared word, no memory
    else:
        assert "min_similarity" in found["note"]
        assert len(unfloored["memories"]) == 3


async def test_similarity_is_reported_and_the_floor_applies(office: Caller, client_for: ClientFactory) -> None:
    async with client_for(office.tenant_slug) as client:
        ids = await seed(client)
        everything = await recall(client, "laptop setup", min_similarity=-1)
        sims = {m["id"]: m["similarity"] for m in everything["memories"]}
        cut = (sims[ids["laptop"]] + sims[ids["returns"]]) / 2  # between the best and the next
        above = await recall(client, "laptop setup", min_similarity=cut)
        semantic = await recall(client, "laptop setup", mode="semantic", min_similarity=cut)
        keyword = await recall(client, "laptop setup", mode="keyword", min_similarity=0.99)
    assert set(sims) == set(ids.values())
    assert all(-1.0 <= s <= 1.0 for s in sims.values())
    assert sims[ids["laptop"]] > sims[ids["returns"]] > sims[ids["badge"]]
    assert [m["id"] for m in above["memories"]] == [ids["laptop"]]
    assert [m["id"] for m in semantic["memories"]] == [ids["laptop"]]
    assert above["memories"][0]["similarity"] == pytest.approx(sims[ids["laptop"]])
    assert above["note"] is None
    # Keyword mode does not embed the query: no similarity, and no floor to apply.
    assert {m["id"] for m in keyword["memories"]} == {ids["laptop"], ids["returns"]}
    assert all(m["similarity"] is None for m in keyword["memories"])


async def test_keyword_matches_any_word_and_ranks_rare_words_first(office: Caller, client_for: ClientFactory) -> None:
    async with client_for(office.tenant_slug) as client:
        # Stored first, so the newest-first tie-break cannot be what puts it on top.
        rare = await remember(client, "Bo tunes a ukulele before every standup")
        common = [await remember(client, f"Ada reviewed pull request {n}") for n in range(5)]
        setup = await remember(client, "Laptop setup takes a day")
        ranked = await recall(client, "Ada ukulele", mode="keyword")
        partial = await recall(client, "new hire laptop setup", mode="keyword")
    assert ranked["memories"][0]["id"] == rare
    assert {m["id"] for m in ranked["memories"]} == {rare, *common}
    assert [m["id"] for m in partial["memories"]] == [setup]  # only "laptop setup" is in it


@pytest.mark.parametrize("mode", MODES)
async def test_minus_word_excludes_in_every_mode(office: Caller, client_for: ClientFactory, mode: str) -> None:
    async with client_for(office.tenant_slug) as client:
        ids = await seed(client)
        found = await recall(client, "laptop -returns", mode=mode, min_similarity=-1)
        phrase = await recall(client, 'laptop -"IT storeroom"', mode=mode, min_similarity=-1)
        nonsense = await recall(client, "zzzqqq -nothing", mode=mode)
        only_excluded = await recall(client, "-laptop", mode=mode, min_similarity=-1)
    got = [m["id"] for m in found["memories"]]
    assert ids["returns"] not in got
    assert ids["laptop"] in got
    assert ids["returns"] not in [m["id"] for m in phrase["memories"]]
    assert nonsense["memories"] == []  # it used to return every memory
    assert only_excluded["memories"] == []
    assert "excluded" in only_excluded["note"]


async def test_too_many_terms_are_refused_with_the_bound(office: Caller, client_for: ClientFactory) -> None:
    query = " ".join(f"word{n}" for n in range(MAX_TERMS + 1))
    async with client_for(office.tenant_slug) as client:
        text = error_text(await client.call_tool("recall", {"query": query}))
        fine = await recall(client, " ".join(f"word{n}" for n in range(MAX_TERMS)), mode="keyword")
    assert f"at most {MAX_TERMS}" in text
    assert "Traceback" not in text
    assert fine["memories"] == []


def test_the_term_bound_counts_what_costs_a_scan() -> None:
    """Stop words cost the query nothing and do not count; a phrase or a hyphenated run is one term."""
    words = [f"word{n}" for n in range(MAX_TERMS)]
    chatty = " the ".join(words) + " and what is it about"  # MAX_TERMS words, many stop words
    assert len(parse(chatty).included) > MAX_TERMS
    phrase = " ".join(words[:-1]) + ' "' + " ".join(f"more{n}" for n in range(50)) + '"'
    assert len(parse(phrase).included) == MAX_TERMS
    joined = " ".join(words[:-1]) + " " + "-".join(f"more{n}" for n in range(50))
    assert len(parse(joined).included) == MAX_TERMS
    with pytest.raises(InvalidArgument) as refused:
        parse(" ".join(words[:-1]) + " -one -two")  # exclusions count too
    assert str(refused.value).startswith(
        f"the query has {MAX_TERMS + 1} distinct search terms (not counting stop words like 'the'); "
        f"at most {MAX_TERMS} are allowed"
    )
    truncated = parse(" ".join(f"w{n}" for n in range(40)) + " the -x", truncate=True)
    assert truncated.excluded == ("x",)
    assert [t for t in truncated.included if t != "the"] == [f"w{n}" for n in range(MAX_TERMS - 1)]


def test_parse_keeps_phrases_exclusions_and_the_text_to_embed() -> None:
    terms = parse('laptop "new hire" -returns -"IT storeroom" Laptop')
    assert terms.included == ("laptop", '"new hire"')
    assert terms.excluded == ("returns", '"IT storeroom"')
    assert terms.text == "laptop new hire"
    assert parse(" ".join(f"w{n}" for n in range(40)), truncate=True).included[-1] == f"w{MAX_TERMS - 1}"


async def test_list_personas_matches_any_word_and_excludes(targets: Targets, client_for: ClientFactory) -> None:
    tenant = await make_tenant(
        targets,
        [
            persona("ivy", "Ivy IT", summary="Handles laptop setup and accounts"),
            persona("max", "Max Manager", summary="Onboards every new hire, laptop included"),
            persona("sol", "Sol Sales", summary="Sells subscriptions"),
        ],
        "rel",
    )
    async with client_for(tenant.tenant_slug) as client:

        async def slugs(query: str) -> list[str]:
            page = data(await client.call_tool("list_personas", {"query": query}))
            return [p["slug"] for p in page["personas"]]

        any_word = await slugs("new hire laptop setup")
        excluded = await slugs("laptop -setup")
    assert set(any_word) == {"ivy", "max"}  # each has some of the words, neither all four
    assert excluded == ["max"]


# Fusion (memory/recall.py): hybrid score = 0.5 similarity + 0.5 keyword coverage, where coverage is
# the share of the query's idf (BM25's, in the tenant) a memory's words hold, context words at half.
def idf(n: int, df: int) -> float:
    return math.log(1 + (n - df + 0.5) / (df + 0.5))


async def test_hybrid_score_is_half_similarity_half_keyword_coverage(office: Caller, targets: Targets) -> None:
    async with client_with(targets, office.tenant_slug, embedding_provider="hashing") as client:
        every_word = await remember(client, "Quarterly invoicing runs through the billing portal")
        one_word = await remember(client, "The portal")
        no_word = await remember(client, "invoicingg quarterlyy")  # similar spelling, no shared stem
        await remember(client, "The cat sleeps on the sofa")
        query = "quarterly invoicing portal"
        hybrid = await recall(client, query, min_similarity=-1)
        semantic = await recall(client, query, mode="semantic", min_similarity=-1)
        keyword = await recall(client, query, mode="keyword")
    # 4 memories: quarter and invoic are in one, portal in two.
    portal_share = idf(4, 2) / (2 * idf(4, 1) + idf(4, 2))
    coverage = {every_word: 1.0, one_word: portal_share, no_word: 0.0}
    found = {m["id"]: m for m in hybrid["memories"]}
    assert [m["id"] for m in hybrid["memories"]][:3] == [every_word, one_word, no_word]
    for memory_id, share in coverage.items():
        m = found[memory_id]
        assert m["score"] == pytest.approx(0.5 * m["similarity"] + 0.5 * share)
    assert [(m["id"], m["score"]) for m in keyword["memories"]] == [
        (every_word, pytest.approx(1.0)),
        (one_word, pytest.approx(portal_share)),
    ]
    assert all(m["score"] == pytest.approx(m["similarity"]) for m in semantic["memories"])


async def test_keyword_recall_finds_a_reply_by_the_words_of_its_context(office: Caller, targets: Targets) -> None:
    question = "Do you still go hiking in the mountains?"
    async with client_with(targets, office.tenant_slug, embedding_provider="hashing") as client:
        asked = await remember(client, question)
        reply = await remember(client, "Yes, every Sunday since May", metadata={"context": question})
        not_text = await remember(client, "Sure, every Saturday", metadata={"context": ["hiking", "mountains"]})
        await remember(client, "Lunch is at noon")
        keyword = await recall(client, "hiking mountains", mode="keyword")
        hybrid = await recall(client, "hiking mountains", min_similarity=-1)
    # The question holds both words; the reply holds them in its context only: half the weight.
    assert [(m["id"], m["score"]) for m in keyword["memories"]] == [
        (asked, pytest.approx(1.0)),
        (reply, pytest.approx(0.5)),
    ]
    ranks = {m["id"]: m["keyword_rank"] for m in hybrid["memories"]}
    assert ranks[asked] == 1
    assert ranks[reply] == 2
    assert ranks[not_text] is None  # a context that is not a string is not text

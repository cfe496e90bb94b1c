"""Embedders: the built-in hashing one, and the OpenAI-compatible one against a real local HTTP server."""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import subprocess
import sys

import anyio
import pytest

from mindscape.config.settings import Settings
from mindscape.embeddings.base import EmbeddingError, ModelSpec
from mindscape.embeddings.factory import configured_spec, describe, make_embedder
from mindscape.embeddings.hashing import NGRAM_CHARS_CAP, WORD_CHARS_CAP, HashingEmbedder
from mindscape.embeddings.openai_compat import OpenAIEmbedder
from tests.support.openai_stub import Reply, Stub, stub_vector

pytestmark = pytest.mark.anyio

API_KEY = "sk-test-secret-1234567890"


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / (math.hypot(*a) * math.hypot(*b))


def norm(vector: list[float]) -> float:
    return math.hypot(*vector)


# --- hashing -------------------------------------------------------------------------------------

E0 = [1.0] + [0.0] * 383


def test_same_text_same_vector_in_process() -> None:
    text = "Postgres connection pool exhausted at 09:14; raised max_size to 20."
    first, second = HashingEmbedder(), HashingEmbedder()
    assert first.embed_one(text) == second.embed_one(text) == first.embed_one(text)


def test_same_vector_in_fresh_processes_with_different_hash_seeds() -> None:
    """Python's hash() is salted per process; the embedding must not depend on it."""
    text = "Ünïcode, words and punctuation: déjà vu 42 times!"
    code = (
        "import json, sys\n"
        "from mindscape.embeddings.hashing import HashingEmbedder\n"
        "print(json.dumps(HashingEmbedder().embed_one(sys.argv[1])))\n"
    )
    expected = HashingEmbedder().embed_one(text)
    for seed in ("1", "2"):
        done = subprocess.run(
            [sys.executable, "-c", code, text],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        )
        assert json.loads(done.stdout) == expected  # floats survive JSON exactly


def test_pinned_output_so_algorithm_changes_need_a_new_model_name() -> None:
    """Stored vectors of mindscape-hash-v1 stay comparable only while this output stays the same."""
    vector = HashingEmbedder().embed_one("Hello, world! Remember the milk.")
    top = sorted(range(len(vector)), key=lambda i: (-abs(vector[i]), i))[:5]
    assert [(i, round(vector[i], 6)) for i in top] == [
        (24, -0.334911),
        (96, -0.334911),
        (98, 0.334911),
        (228, -0.334911),
        (335, 0.334911),
    ]
    assert sum(1 for x in vector if x) == 65
    assert round(sum(vector), 6) == 0.297638


@pytest.mark.parametrize("dimensions", [16, 384, 2000])
def test_unit_length_and_dimensions(dimensions: int) -> None:
    embedder = HashingEmbedder(dimensions=dimensions)
    assert embedder.spec == ModelSpec("hashing", "mindscape-hash-v1", dimensions)
    for text in ["a", "two words", "A longer sentence, with punctuation; and numbers 1 2 3."]:
        vector = embedder.embed_one(text)
        assert len(vector) == dimensions
        assert norm(vector) == pytest.approx(1.0)


@pytest.mark.parametrize("text", ["", "   \n\t ", "?!... --- ***", "___"])
def test_text_without_words_gets_the_fixed_unit_vector(text: str) -> None:
    vector = HashingEmbedder().embed_one(text)
    assert vector == E0


def test_case_spacing_punctuation_and_compatibility_forms_do_not_matter() -> None:
    embedder = HashingEmbedder()
    plain = embedder.embed_one("hello world file")
    for variant in [
        "Hello   WORLD\nfile",
        "hello, world: file!",
        "hello world \ufb01le",
    ]:  # \ufb01 is the "fi" ligature
        assert embedder.embed_one(variant) == plain


def test_shared_words_score_higher_than_unrelated_text() -> None:
    embedder = HashingEmbedder()
    query = embedder.embed_one("postgres connection pool timeout")
    related = embedder.embed_one("The connection pool to Postgres hit a timeout during the nightly import.")
    unrelated = embedder.embed_one("My cat enjoys sunny afternoons in the garden.")
    assert cosine(query, related) > 0.3
    assert cosine(query, related) > cosine(query, unrelated) + 0.2


def test_spelling_variants_are_close_through_character_ngrams() -> None:
    embedder = HashingEmbedder()
    british = embedder.embed_one("optimisation")
    american = embedder.embed_one("optimization")
    other = embedder.embed_one("banana")
    # One word each, and not the same word: only the shared n-grams make them similar.
    assert cosine(british, american) > 0.15
    assert cosine(british, american) > cosine(british, other) + 0.15


def test_word_order_counts_a_little_through_bigrams() -> None:
    embedder = HashingEmbedder()
    similarity = cosine(embedder.embed_one("dog bites man"), embedder.embed_one("man bites dog"))
    assert 0.6 < similarity < 0.99


def test_model_name_salts_the_hash() -> None:
    text = "Quarterly revenue grew in the northern region after the pricing change."
    v1, v2 = HashingEmbedder("mindscape-hash-v1"), HashingEmbedder("mindscape-hash-v2")
    assert v1.spec.key != v2.spec.key
    assert abs(cosine(v1.embed_one(text), v2.embed_one(text))) < 0.5


async def test_huge_input_is_capped() -> None:
    embedder = HashingEmbedder()
    words = [f"w{i % 5000}" for i in range(300_000)]
    huge = " ".join(words)[: 1024 * 1024]
    assert len(huge) > WORD_CHARS_CAP > NGRAM_CHARS_CAP

    vectors = await embedder.embed([huge, "short text"])

    assert vectors == [embedder.embed_one(huge), embedder.embed_one("short text")]
    assert norm(vectors[0]) == pytest.approx(1.0)
    # Nothing after the first WORD_CHARS_CAP characters counts.
    prefix = huge[: WORD_CHARS_CAP - 10] + " "
    assert embedder.embed_one(prefix + "entirely different ending " * 1000) != embedder.embed_one(prefix)
    beyond = huge[:WORD_CHARS_CAP] + " "
    assert embedder.embed_one(beyond + "entirely different ending " * 1000) == embedder.embed_one(beyond)


async def test_hashing_embed_is_ordered_and_lexical() -> None:
    embedder = HashingEmbedder()
    texts = ["alpha", "beta gamma", ""]
    assert embedder.semantic is False
    assert await embedder.embed(texts) == [embedder.embed_one(t) for t in texts]
    assert await embedder.embed([]) == []
    await embedder.aclose()


def embedder_for(stub: Stub, *, dimensions: int = 8, **options: object) -> OpenAIEmbedder:
    """An embedder on the stub with fast retries; `options` override the constructor's keywords."""
    keywords: dict[str, object] = {
        "base_url": stub.url,
        "api_key": API_KEY,
        "timeout_s": 5.0,
        "max_retries": 3,
        "backoff_base_s": 0.01,
        **options,
    }
    return OpenAIEmbedder("test-embed", dimensions, **keywords)  # pyright: ignore[reportArgumentType]


def expected_vectors(texts: list[str], dimensions: int = 8) -> list[list[float]]:
    return [stub_vector(t, dimensions) for t in texts]


def assert_vectors(got: list[list[float]], expected: list[list[float]]) -> None:
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert g == pytest.approx(e)


async def test_batches_and_keeps_order_even_when_the_server_shuffles(stub: Stub) -> None:
    stub.default = Reply(shuffle=True)
    texts = [f"text number {i}" for i in range(7)]
    embedder = embedder_for(stub, batch_size=3)

    got = await embedder.embed(texts)
    await embedder.aclose()

    assert [len(s.body["input"]) for s in stub.seen] == [3, 3, 1]  # pyright: ignore[reportArgumentType]
    assert [t for s in stub.seen for t in s.body["input"]] == texts  # pyright: ignore[reportGeneralTypeIssues, reportUnknownVariableType]
    assert all(s.path == "/v1/embeddings" for s in stub.seen)
    assert_vectors(got, expected_vectors(texts))
    assert embedder.semantic is True


async def test_request_carries_key_model_dimensions_and_float_format(stub: Stub) -> None:
    embedder = embedder_for(stub, dimensions=12)
    assert_vectors(await embedder.embed(["one"]), expected_vectors(["one"], 12))
    await embedder.aclose()

    (seen,) = stub.seen
    assert seen.authorization == f"Bearer {API_KEY}"
    assert seen.body["model"] == "test-embed"
    assert seen.body["dimensions"] == 12
    assert seen.body["encoding_format"] == "float"


async def test_dimensions_not_sent_when_turned_off(stub: Stub) -> None:
    embedder = embedder_for(stub, send_dimensions=False)
    assert_vectors(await embedder.embed(["one"]), expected_vectors(["one"]))  # the stub's default: 8
    await embedder.aclose()
    assert "dimensions" not in stub.seen[0].body


async def test_no_key_configured_sends_a_placeholder(stub: Stub) -> None:
    embedder = embedder_for(stub, api_key=None)
    await embedder.embed(["one"])
    await embedder.aclose()
    assert stub.seen[0].authorization == "Bearer unused"


async def test_no_texts_no_request(stub: Stub) -> None:
    embedder = embedder_for(stub)
    assert await embedder.embed([]) == []
    await embedder.aclose()
    assert stub.seen == []


async def test_unnormalised_vectors_come_back_normalised(stub: Stub) -> None:
    stub.default = Reply(scale=37.5)
    embedder = embedder_for(stub)
    got = await embedder.embed(["a", "b c"])
    await embedder.aclose()
    assert [norm(v) for v in got] == [pytest.approx(1.0)] * 2
    assert_vectors(got, expected_vectors(["a", "b c"]))


async def test_retries_429_and_500_then_succeeds(stub: Stub) -> None:
    stub.script = [Reply(429, headers={"Retry-After": "0"}), Reply(500)]
    embedder = embedder_for(stub, max_retries=2)
    got = await embedder.embed(["x"])
    await embedder.aclose()
    assert len(stub.seen) == 3
    assert_vectors(got, expected_vectors(["x"]))


async def test_retry_after_replaces_the_backoff(stub: Stub) -> None:
    # With a one-minute backoff, only honouring "Retry-After: 0" lets this finish.
    stub.script = [Reply(429, headers={"Retry-After": "0"})]
    embedder = embedder_for(stub, backoff_base_s=60.0, backoff_max_s=60.0)
    with anyio.fail_after(30):
        await embedder.embed(["x"])
    await embedder.aclose()
    assert len(stub.seen) == 2


async def test_retry_after_is_capped(stub: Stub) -> None:
    stub.script = [Reply(503, headers={"Retry-After": "3600"})]
    embedder = embedder_for(stub, retry_after_max_s=0.01)
    with anyio.fail_after(30):
        await embedder.embed(["x"])
    await embedder.aclose()
    assert len(stub.seen) == 2


async def test_gives_up_after_max_retries_without_leaking_the_key(stub: Stub, caplog: pytest.LogCaptureFixture) -> None:
    stub.default = Reply(503, body={"error": {"message": f"overloaded, key {API_KEY}"}})
    embedder = embedder_for(stub, max_retries=2)
    with caplog.at_level(logging.DEBUG), pytest.raises(EmbeddingError) as caught:
        await embedder.embed(["x"])
    await embedder.aclose()

    assert len(stub.seen) == 3
    message = str(caught.value)
    assert "HTTP 503" in message
    assert "127.0.0.1" in message
    assert "tried 3 times" in message
    assert API_KEY not in message
    assert sum("retry" in r.getMessage() for r in caplog.records if r.name.startswith("mindscape")) == 2
    assert all(API_KEY not in r.getMessage() for r in caplog.records)


async def test_400_fails_at_once_with_the_servers_reason(stub: Stub) -> None:
    stub.default = Reply(400, body={"error": {"message": "input must not be empty", "type": "invalid_request_error"}})
    embedder = embedder_for(stub, max_retries=3)
    with pytest.raises(EmbeddingError, match=r"HTTP 400 \(input must not be empty\)"):
        await embedder.embed(["x"])
    await embedder.aclose()
    assert len(stub.seen) == 1


async def test_401_echoing_the_key_is_redacted(stub: Stub) -> None:
    stub.default = Reply(401, body={"error": f"Incorrect API key provided: {API_KEY}"})  # Ollama's error shape
    embedder = embedder_for(stub)
    with pytest.raises(EmbeddingError) as caught:
        await embedder.embed(["x"])
    await embedder.aclose()
    message = str(caught.value)
    assert API_KEY not in message
    assert "Incorrect API key provided: ***" in message
    assert "check embedding_api_key" in message
    assert len(stub.seen) == 1


async def test_wrong_dimensions_name_expected_and_got(stub: Stub) -> None:
    stub.default = Reply(dimensions=10)
    embedder = embedder_for(stub, dimensions=8)
    with pytest.raises(EmbeddingError, match=r"returned 10 dimensions, expected 8: set embedding_dimensions to 10"):
        await embedder.embed(["x"])
    await embedder.aclose()
    assert len(stub.seen) == 1


@pytest.mark.parametrize(
    "reply",
    [
        Reply(drop_last=True),
        Reply(raw=b"this is not json"),
        Reply(body={"object": "list", "data": "nope"}),
        Reply(body={"object": "list", "data": [{"index": 0, "embedding": ["a"] * 8}]}),
    ],
    ids=["missing-item", "not-json", "data-not-a-list", "not-numbers"],
)
async def test_malformed_answers_are_embedding_errors(stub: Stub, reply: Reply) -> None:
    stub.default = reply
    embedder = embedder_for(stub)
    with pytest.raises(EmbeddingError):
        await embedder.embed(["x", "y"] if reply.drop_last else ["x"])
    await embedder.aclose()
    assert len(stub.seen) == 1


async def test_timeouts_are_retried_then_fail(stub: Stub) -> None:
    stub.default = Reply(delay_s=30.0)
    embedder = embedder_for(stub, timeout_s=0.2, max_retries=1)
    with pytest.raises(EmbeddingError, match=r"timed out \(tried 2 times\)"):
        await embedder.embed(["x"])
    await embedder.aclose()
    assert len(stub.seen) == 2


async def test_connection_refused_is_retried_then_fails() -> None:
    with socket.socket() as probe:  # a port nobody listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    embedder = OpenAIEmbedder(
        "m", 8, base_url=f"http://127.0.0.1:{port}/v1", max_retries=1, backoff_base_s=0.01, timeout_s=5.0
    )
    with pytest.raises(EmbeddingError, match=rf"127\.0\.0\.1:{port} .*could not connect \(tried 2 times\)"):
        await embedder.embed(["x"])
    await embedder.aclose()


# --- factory -------------------------------------------------------------------------------------


def test_configured_spec_and_hashing_embedder_when_chosen() -> None:
    settings = Settings.model_validate({"embedding_provider": "hashing"})
    spec = configured_spec(settings)
    assert spec == ModelSpec("hashing", "mindscape-hash-v1", 384)
    embedder = make_embedder(spec, settings)
    assert isinstance(embedder, HashingEmbedder)
    assert embedder.spec == spec
    assert (
        describe(embedder)
        == "hashing:mindscape-hash-v1:384 (lexical: matches shared words and spellings, not meanings)"
    )


async def test_openai_from_settings_uses_endpoint_key_and_batch_size(stub: Stub) -> None:
    settings = Settings.model_validate(
        {
            "embedding_provider": "openai",
            "embedding_model": "nomic-embed-text",
            "embedding_dimensions": 16,
            "embedding_base_url": stub.url,
            "embedding_api_key": API_KEY,
            "embedding_batch_size": 2,
        }
    )
    spec = configured_spec(settings)
    assert spec == ModelSpec("openai", "nomic-embed-text", 16)
    embedder = make_embedder(spec, settings)
    assert describe(embedder) == f"openai:nomic-embed-text:16 via {stub.url} (semantic)"

    got = await embedder.embed(["a", "b", "c"])
    await embedder.aclose()

    assert_vectors(got, expected_vectors(["a", "b", "c"], 16))
    assert [len(s.body["input"]) for s in stub.seen] == [2, 1]  # pyright: ignore[reportArgumentType]
    assert {s.authorization for s in stub.seen} == {f"Bearer {API_KEY}"}
    assert {s.body["model"] for s in stub.seen} == {"nomic-embed-text"}


async def test_openai_defaults_to_openais_endpoint_and_hides_url_credentials() -> None:
    settings = Settings.model_validate({"embedding_provider": "openai", "embedding_model": "text-embedding-3-small"})
    embedder = make_embedder(ModelSpec("openai", "text-embedding-3-small", 1536), settings)
    assert describe(embedder) == "openai:text-embedding-3-small:1536 via https://api.openai.com/v1 (semantic)"
    await embedder.aclose()

    private = Settings.model_validate(
        {"embedding_provider": "openai", "embedding_model": "m", "embedding_base_url": "https://u:pw@emb.example/v1"}
    )
    embedder = make_embedder(configured_spec(private), private)
    assert describe(embedder) == "openai:m:384 via https://emb.example/v1 (semantic)"
    await embedder.aclose()

"""Embeddings from any OpenAI-compatible `/embeddings` endpoint (OpenAI, Ollama, vLLM, LM Studio...).

We retry ourselves (the client's own retries are off) so the policy is ours: exponential backoff
with jitter on 429, 5xx, timeouts and connection errors, honouring Retry-After up to a cap; any
other answer fails at once. Errors name the endpoint's host and the status, never the API key.
"""

from __future__ import annotations

import email.utils
import logging
import math
import random
import time
from collections.abc import Mapping, Sequence
from typing import cast
from urllib.parse import urlsplit

import anyio
import openai
from openai.types import CreateEmbeddingResponse

from mindscape.embeddings.base import EmbeddingError, ModelSpec

log = logging.getLogger(__name__)

OPENAI_BASE_URL = "https://api.openai.com/v1"
# The openai client refuses to start without a key; local servers (Ollama, vLLM) ignore it.
PLACEHOLDER_API_KEY = "unused"


class OpenAIEmbedder:
    """Semantic embeddings from an OpenAI-compatible API, `batch_size` texts per request.

    `send_dimensions`: pass `dimensions` in every request (OpenAI's text-embedding-3 models
    shorten their vectors to it). Turn it off for models or servers that reject the parameter;
    the vectors must then already have `dimensions` floats, which is checked either way.
    """

    def __init__(
        self,
        model: str,
        dimensions: int,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 10.0,
        max_retries: int = 3,
        batch_size: int = 64,
        send_dimensions: bool = True,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 20.0,
        retry_after_max_s: float = 60.0,
    ) -> None:
        if dimensions < 1 or batch_size < 1 or max_retries < 0:
            raise ValueError("dimensions and batch_size must be positive, max_retries not negative")
        self._spec = ModelSpec("openai", model, dimensions)
        self._base_url = base_url or OPENAI_BASE_URL
        self._host = _host(self._base_url)
        self._api_key = api_key or PLACEHOLDER_API_KEY
        self._max_retries = max_retries
        self._batch_size = batch_size
        self._send_dimensions = send_dimensions
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        self._retry_after_max_s = retry_after_max_s
        self._client = openai.AsyncOpenAI(
            base_url=self._base_url, api_key=self._api_key, timeout=timeout_s, max_retries=0
        )

    @property
    def spec(self) -> ModelSpec:
        return self._spec

    @property
    def semantic(self) -> bool:
        return True

    @property
    def base_url(self) -> str:
        """The endpoint without any user:password part, safe to log."""
        return _without_userinfo(self._base_url)

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self._batch_size):
            vectors.extend(await self._embed_batch(list(texts[start : start + self._batch_size])))
        return vectors

    async def aclose(self) -> None:
        await self._client.close()

    async def _embed_batch(self, batch: list[str]) -> list[list[float]]:
        attempts = self._max_retries + 1
        for attempt in range(1, attempts + 1):
            try:
                response = await self._client.embeddings.create(
                    model=self._spec.model,
                    input=batch,
                    # Every compatible server speaks floats; base64 (the client's default) is optional.
                    encoding_format="float",
                    dimensions=self._spec.dimensions if self._send_dimensions else openai.omit,
                )
            except openai.APIStatusError as exc:
                status = exc.status_code
                if status != 429 and status < 500:
                    raise EmbeddingError(self._refused(status, exc.body)) from None
                reason, retry_after = f"HTTP {status}", _retry_after(exc.response.headers)
            except openai.APITimeoutError:
                reason, retry_after = "timed out", None
            except openai.APIConnectionError:
                reason, retry_after = "could not connect", None
            except openai.OpenAIError as exc:  # e.g. a 200 whose body is not an embeddings list
                raise EmbeddingError(
                    f"{self._where()} answered with something unreadable ({type(exc).__name__})"
                ) from None
            else:
                return self._vectors(response, len(batch))

            if attempt == attempts:
                raise EmbeddingError(f"{self._where()} failed: {reason} (tried {attempts} times)")
            delay = self._delay(attempt, retry_after)
            log.warning(
                "embedding request to %s failed (%s); retry %d of %d in %.2fs",
                self._host,
                reason,
                attempt,
                self._max_retries,
                delay,
            )
            await anyio.sleep(delay)
        raise AssertionError("unreachable")

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self._retry_after_max_s)
        ceiling = min(self._backoff_max_s, self._backoff_base_s * 2 ** (attempt - 1))
        # "Equal jitter": at least half the backoff, so clients that failed together spread out.
        return ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 - jitter, not cryptography

    def _vectors(self, response: CreateEmbeddingResponse, expected: int) -> list[list[float]]:
        try:
            items = [(item.index, item.embedding) for item in response.data]
        except (AttributeError, TypeError):  # the client does not validate: a compatible server may send anything
            raise EmbeddingError(f"{self._where()} answered with something that is not an embeddings list") from None
        if len(items) != expected or sorted(index for index, _ in items) != list(range(expected)):
            raise EmbeddingError(
                f"{self._where()} returned {len(items)} embeddings for {expected} texts, or with wrong indexes"
            )
        vectors: list[list[float]] = [[] for _ in range(expected)]
        for index, embedding in items:
            vectors[index] = self._checked(embedding)
        return vectors

    def _checked(self, embedding: object) -> list[float]:
        if not isinstance(embedding, list):
            raise EmbeddingError(f"{self._where()} returned an embedding that is not a list of numbers")
        expected = self._spec.dimensions
        if len(embedding) != expected:  # pyright: ignore[reportUnknownArgumentType]
            raise EmbeddingError(
                f"{self._where()} returned {len(embedding)} dimensions, expected {expected}: "  # pyright: ignore[reportUnknownArgumentType]
                f"set embedding_dimensions to {len(embedding)} or use a model that produces {expected}"  # pyright: ignore[reportUnknownArgumentType]
            )
        try:
            vector = [float(x) for x in embedding]  # pyright: ignore[reportUnknownVariableType, reportUnknownArgumentType]
        except (TypeError, ValueError):
            raise EmbeddingError(f"{self._where()} returned an embedding that is not a list of numbers") from None
        norm = math.hypot(*vector)
        if not math.isfinite(norm) or norm == 0.0:
            raise EmbeddingError(f"{self._where()} returned a zero or non-finite vector")
        # Some compatible servers do not normalise; cosine and inner product must agree.
        return [x / norm for x in vector]

    def _where(self) -> str:
        return f"embedding endpoint {self._host} (model {self._spec.model})"

    def _refused(self, status: int, body: object) -> str:
        message = f"{self._where()} refused the request: HTTP {status}"
        detail = _server_detail(body)
        if self._api_key != PLACEHOLDER_API_KEY:  # some servers echo what they were sent
            detail = detail.replace(self._api_key, "***")
        if detail:
            message += f" ({detail})"
        if status in (401, 403):
            message += "; check embedding_api_key"
        elif status == 404:
            message += "; check embedding_base_url and embedding_model"
        return message


def _server_detail(body: object) -> str:
    """The server's own one-line reason, from OpenAI's {"error": {"message"}} or Ollama's {"error": "..."}."""
    found = _field(_field(body, "error", "detail", "message"), "message")
    if not isinstance(found, str):
        return ""
    line = " ".join(found.split())
    return line if len(line) <= 200 else line[:199] + "…"


def _field(value: object, *names: str) -> object:
    """The first of `names` present in `value` if it is a dict, else `value` itself."""
    if not isinstance(value, dict):
        return value
    mapping = cast("dict[object, object]", value)
    return next((mapping[name] for name in names if name in mapping), mapping)


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from OpenAI's `retry-after-ms` or `Retry-After` (seconds or an HTTP date); None if absent."""
    if (millis := headers.get("retry-after-ms")) is not None:
        try:
            return float(millis) / 1000
        except ValueError:
            pass
    if (value := headers.get("retry-after")) is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return seconds if math.isfinite(seconds) else None


def _host(url: str) -> str:
    parts = urlsplit(url)
    if not parts.hostname:
        return "(no host)"
    return f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname


def _without_userinfo(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]).geturl()

"""The issuer's signing keys (JWKS), fetched over async HTTP and cached.

Keys are fetched on first use and again after `max_age_s`. A token whose `kid` is unknown (the IdP
rotated its keys) triggers one refetch, but at most one per `min_refetch_s`, so a flood of tokens
with made-up kids cannot turn the server into a load generator against the IdP. One lock makes
concurrent requests share a fetch. When a refetch fails the keys already known stay in use.
"""

from __future__ import annotations

import logging
import time
from typing import Any, cast

import anyio
import httpx2
from jwt import PyJWK, PyJWKSet
from jwt.exceptions import PyJWKError, PyJWKSetError

log = logging.getLogger(__name__)


class JwksUnavailable(Exception):
    """No signing keys could be fetched; the message is safe to show (URL and reason, nothing else)."""


class JwksCache:
    def __init__(
        self, url: str, *, max_age_s: float = 3600.0, min_refetch_s: float = 30.0, timeout_s: float = 5.0
    ) -> None:
        self._url = url
        self._max_age_s = max_age_s
        self._min_refetch_s = min_refetch_s
        self._timeout_s = timeout_s
        self._keys: dict[str | None, PyJWK] = {}
        self._fetched_at: float | None = None  # last successful fetch
        self._attempted_at: float | None = None  # last attempt, successful or not
        self._last_error = f"the JWKS at {url} was not fetched yet"
        self._lock = anyio.Lock()
        self.fetches = 0  # attempts so far; tests count them to show the rate limit works

    async def key(self, kid: str | None) -> PyJWK | None:
        """The key for `kid` (or the only key, for a token without kid); None when the issuer has none such.

        Raises JwksUnavailable while no key set has ever been fetched.
        """
        if self._fetched_at is None or time.monotonic() - self._fetched_at >= self._max_age_s:
            await self._refresh()
        found = self._find(kid)
        if found is None:
            await self._refresh()
            found = self._find(kid)
        if found is None and self._fetched_at is None:
            raise JwksUnavailable(self._last_error)
        return found

    async def load(self) -> int:
        """Fetch the key set now and return how many signing keys it has (for `mindscape doctor`)."""
        self._keys = await self._fetch()
        self._fetched_at = self._attempted_at = time.monotonic()
        return len(self._keys)

    def _find(self, kid: str | None) -> PyJWK | None:
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        return self._keys.get(kid)

    async def _refresh(self) -> None:
        started = time.monotonic()
        async with self._lock:
            if self._attempted_at is not None and (
                self._attempted_at >= started  # another request fetched while this one waited
                or started - self._attempted_at < self._min_refetch_s
            ):
                return
            self._attempted_at = time.monotonic()
            self.fetches += 1
            try:
                self._keys = await self._fetch()
                self._fetched_at = time.monotonic()
            except JwksUnavailable as exc:
                self._last_error = str(exc)
                log.warning("%s; %d keys fetched before stay in use", exc, len(self._keys))

    async def _fetch(self) -> dict[str | None, PyJWK]:
        try:
            async with httpx2.AsyncClient(timeout=self._timeout_s, follow_redirects=False) as client:
                response = await client.get(self._url, headers={"Accept": "application/json"})
            response.raise_for_status()
            document: Any = response.json()
            key_set = PyJWKSet.from_dict(_signing_keys_only(document))
        except (httpx2.HTTPError, ValueError, PyJWKError, PyJWKSetError) as exc:
            raise JwksUnavailable(f"could not fetch the JWKS at {self._url} ({type(exc).__name__})") from exc
        keys: dict[str | None, PyJWK] = {k.key_id: k for k in key_set.keys}
        log.info("fetched %d signing keys from %s", len(keys), self._url)
        return keys


def _signing_keys_only(document: object) -> dict[str, Any]:
    """The JWKS without encryption keys (`use: enc`), which must never verify a signature."""
    listed = cast("dict[str, Any]", document).get("keys") if isinstance(document, dict) else None
    if not isinstance(listed, list):
        raise ValueError("not a JWKS document")
    entries = cast("list[Any]", listed)
    return {
        "keys": [k for k in entries if isinstance(k, dict) and cast("dict[str, Any]", k).get("use", "sig") == "sig"]
    }

"""The checks behind `mindscape doctor`: the effective configuration (secrets masked) and what it points at.

Each check is `ok`, `warn` or `FAIL` and, for a problem, one line saying how to fix it. A
warning (lexical embeddings, a missing HNSW index) degrades quality or speed but the service
still works. Nothing is changed: the checks only read, so they are safe against production;
they connect as the runtime role, exactly like `serve`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import anyio
import asyncpg
from pydantic import SecretStr

from mindscape.config.settings import Settings
from mindscape.database import migrate, vector_index
from mindscape.database.checks import FACTS, MIN_PGVECTOR, MIN_SERVER_VERSION
from mindscape.database.pool import UNREACHABLE_FIX, connect, owner_connection
from mindscape.database.prepare import resolve_targets
from mindscape.database.targets import RUNTIME_ROLE, Targets, redact
from mindscape.embeddings.base import EmbeddingError, ModelUnavailable
from mindscape.embeddings.factory import configured_spec, describe, local_source, make_embedder
from mindscape.embeddings.local import DEFAULT_MODEL as LOCAL_DEFAULT_MODEL
from mindscape.embeddings.local import describe_model, directory_size, find_model
from mindscape.embeddings.registry import TENANT_MODEL_KEY, active_spec
from mindscape.errors import MindscapeError
from mindscape.memory.indexing import index_tenants

Status = Literal["ok", "warn", "FAIL"]
_URL_FIELDS = {"database_url", "owner_database_url", "embedding_base_url"}


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str | None = None


def masked_config(settings: Settings) -> list[tuple[str, str]]:
    """Every setting and its effective value; URLs lose their password, other secrets become ***."""
    rows: list[tuple[str, str]] = []
    for name in type(settings).model_fields:
        value: object = getattr(settings, name)
        if value is None:
            shown = "(unset)"
        elif isinstance(value, SecretStr):
            shown = redact(value.get_secret_value()) if name in _URL_FIELDS else "***"
        elif name in _URL_FIELDS:
            shown = redact(str(value))  # a base URL may carry user:password too
        else:
            shown = str(value)
        rows.append((name, shown))
    return rows


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".") if part.isdigit())


# A probe that waits out the provider's retries would make doctor hang for minutes on a dead endpoint.
PROBE_TIMEOUT_S = 30.0  # the local model's first load included
PROBE_REQUEST_TIMEOUT_S = 10.0
PROBE_TEXT = "mindscape doctor: is the embedding provider answering?"


async def embedding_check(settings: Settings) -> Check:
    """Which model new memories get, whether it ranks by meaning, and whether it embeds one text now."""
    spec = configured_spec(settings)
    found = local_model_check(settings) if spec.provider == "local" else None
    if found is not None and found.status != "ok":
        return found  # not there: loading it would try to download it
    # One request, no retries, a short timeout: the probe asks "does it answer now?".
    probe = settings.model_copy(
        update={
            "embedding_max_retries": 0,
            "embedding_timeout_s": min(settings.embedding_timeout_s, PROBE_REQUEST_TIMEOUT_S),
        }
    )
    embedder = make_embedder(spec, probe)
    described = describe(embedder)
    fix = _probe_fix(settings)
    started = time.perf_counter()
    try:
        with anyio.fail_after(PROBE_TIMEOUT_S):
            vectors = await embedder.embed([PROBE_TEXT])
    except TimeoutError:
        return Check("embeddings", "FAIL", f"{described}: no embedding within {PROBE_TIMEOUT_S:g} s", fix)
    except EmbeddingError as exc:
        return Check("embeddings", "FAIL", f"{described}: a one-text embed failed: {exc}", fix)
    finally:
        await embedder.aclose()
    took = time.perf_counter() - started
    if len(vectors) != 1 or len(vectors[0]) != spec.dimensions:
        return Check("embeddings", "FAIL", f"{described}: answered with a vector of the wrong size", fix)
    detail = f"{found.detail if found else described}; embedded a test text in {took:.2f} s"
    if embedder.semantic:
        return Check("embeddings", "ok", detail)
    return Check(
        "embeddings",
        "warn",
        detail,
        'for recall by meaning set embedding_provider = "local" (the default; or "openai" for any compatible '
        "API) and run `mindscape memory reembed`",
    )


def _probe_fix(settings: Settings) -> str:
    if settings.embedding_provider == "openai":
        return (
            "check that the provider at embedding_base_url (MINDSCAPE_EMBEDDING_BASE_URL) runs and that "
            "embedding_model and embedding_api_key are right; until it answers, memories are stored pending"
        )
    return "see the error above; `uv run mindscape model pull` fetches the local model again"


def local_model_check(settings: Settings) -> Check:
    """Whether the local model is there (nothing is downloaded), where, and its size."""
    spec, source = configured_spec(settings), local_source(settings)
    try:
        description = describe_model(source.name)
    except ModelUnavailable as exc:
        return Check(
            "embeddings", "FAIL", f"{spec.key}: {exc}", f"for example embedding_model = {LOCAL_DEFAULT_MODEL!r}"
        )
    found = find_model(source, description)
    if found is not None:
        size = directory_size(found) / 1e6
        return Check("embeddings", "ok", f"{spec.key} (semantic, in this process): model in {found} ({size:.0f} MB)")
    if source.path is not None:
        where, fix = f"{source.path} (embedding_model_path)", "copy the model directory there"
    else:
        where, fix = f"the model cache {source.cache_dir}", "run `uv run mindscape model pull`"
    return Check(
        "embeddings",
        "warn",
        f"{spec.key}: the model is not in {where}; until it is, memories are stored pending and recall matches words",
        f"{fix} (or set MINDSCAPE_EMBEDDING_MODEL_PATH to a directory holding the model)",
    )


# The owner connection: the runtime role cannot list tenants (migration 0006).
TENANT_MODELS = "SELECT slug, settings ->> 'embedding_model' AS model FROM mindscape.tenants WHERE status = 'active'"


async def lexical_tenants_check(conn: asyncpg.Connection[asyncpg.Record], settings: Settings) -> Check:
    """Tenants whose model is lexical (hashing): their recall matches words, not meanings."""
    name, default = "lexical tenants", configured_spec(settings)
    lexical: list[str] = []
    for row in await conn.fetch(TENANT_MODELS + " ORDER BY slug"):
        own = {TENANT_MODEL_KEY: row["model"]} if row["model"] else {}
        if active_spec(own, default).provider == "hashing":
            lexical.append(row["slug"])
    if not lexical:
        return Check(name, "ok", "none: every active tenant's model ranks by meaning")
    shown = ", ".join(lexical[:5]) + (", ..." if len(lexical) > 5 else "")
    return Check(
        name,
        "warn",
        f"{len(lexical)} tenant(s) on a lexical model, whose recall matches words, not meanings: {shown}",
        f"`mindscape memory reembed --tenant SLUG --provider local --model {LOCAL_DEFAULT_MODEL}` moves one",
    )


async def database_checks(settings: Settings) -> list[Check]:
    """Reachability, versions, role, schema revision and the configured model's HNSW index."""
    try:
        targets = await resolve_targets(settings)
        conn = await connect(targets.runtime, pooled=targets.pooled)
    except MindscapeError as exc:  # the message already hides the password
        detail = str(exc).removesuffix(f"; {UNREACHABLE_FIX}")
        return [Check("database", "FAIL", detail, "start PostgreSQL or fix database_url (MINDSCAPE_DATABASE_URL)")]
    try:
        checks = [Check("database", "ok", f"reachable at {redact(targets.runtime)}")]
        row = await conn.fetchrow(FACTS)
        assert row is not None
        checks += _server_checks(row)
        revision = await migrate.current_revision(conn)
        head = migrate.head_revision()
        if revision != head:
            detail = f"at revision {revision or 'none'}, head is {head}"
            checks.append(Check("schema", "FAIL", detail, "run `mindscape db upgrade`"))
            return checks  # the index lives in a table an old schema may not have
        checks.append(Check("schema", "ok", f"at head ({head})"))
        spec = configured_spec(settings)
        if await vector_index.has_index(conn, spec):
            checks.append(Check("hnsw index", "ok", f"{vector_index.index_name(spec)} for {spec.key}"))
        else:
            checks.append(
                Check(
                    "hnsw index",
                    "warn",
                    f"none for {spec.key}: recall ranks exactly, which slows down as tenants grow",
                    "run `mindscape db upgrade` (it builds the configured model's index)",
                )
            )
        checks.append(await tenant_index_check(settings, targets))
        if targets.owner == targets.runtime:
            not_checked = "not checked: listing tenants needs the owner"
            checks.append(Check("lexical tenants", "warn", not_checked, "set owner_database_url"))
        else:
            async with owner_connection(targets.owner) as owner:
                checks.append(await lexical_tenants_check(owner, settings))
        return checks
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        return [Check("database", "FAIL", f"query failed ({type(exc).__name__}): {exc}", "check the server log")]
    finally:
        await conn.close()


async def tenant_index_check(settings: Settings, targets: Targets) -> Check:
    """Tenants above memory_exact_max_rows need an HNSW index of their own for full recall."""
    name = "tenant indexes"
    if targets.owner == targets.runtime:
        return Check(name, "warn", "not checked: listing tenants needs the owner", "set owner_database_url")
    report = await index_tenants(settings, targets, build=False)
    missing = [r.tenant for r in report if r.state == "missing"]
    large = sum(r.state in ("missing", "present") for r in report)
    threshold = f"{settings.memory_exact_max_rows:,}"
    if not missing:
        return Check(name, "ok", f"{large} tenant(s) above {threshold} embeddings, each with its own HNSW index")
    return Check(
        name,
        "warn",
        f"{len(missing)} of {large} tenant(s) above {threshold} embeddings lack their own HNSW index "
        f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}): their recall may miss neighbours",
        "run `mindscape memory index`",
    )


def _server_checks(row: asyncpg.Record) -> list[Check]:
    checks: list[Check] = []
    version: int = row["server_version"]
    major = f"{version // 10000}.{version % 10000}"
    if version < MIN_SERVER_VERSION:
        checks.append(Check("postgresql", "FAIL", major, "upgrade to PostgreSQL 15 or newer"))
    else:
        checks.append(Check("postgresql", "ok", major))
    pgvector: str | None = row["pgvector"]
    if pgvector is None:
        checks.append(Check("pgvector", "FAIL", "not installed", "run `mindscape db upgrade` (it creates it)"))
    elif _version_tuple(pgvector) < MIN_PGVECTOR:
        checks.append(Check("pgvector", "FAIL", pgvector, "run ALTER EXTENSION vector UPDATE (0.8 or newer)"))
    else:
        checks.append(Check("pgvector", "ok", pgvector))
    if row["superuser"] or row["bypassrls"]:
        checks.append(
            Check(
                "role",
                "FAIL",
                f"{row['role']} bypasses row-level security",
                f"connect as {RUNTIME_ROLE} in database_url; keep the owner in owner_database_url",
            )
        )
    else:
        checks.append(Check("role", "ok", f"{row['role']} (subject to row-level security)"))
    return checks

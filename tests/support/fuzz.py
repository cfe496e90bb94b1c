"""Fuzzing every tool, resource and prompt through the in-memory MCP client against the real database.

Arguments come from each tool's published input schema (hypothesis-jsonschema `from_schema`) and
from mutations of such calls: wrong types, unknown keys, NUL characters, lone surrogates, NaN and
infinities, huge numbers and strings, deep nesting, JSON inside strings, missing keys, unknown ids
and real ids of the wrong kind. Every call is checked by `FuzzHarness`:

- no generic "internal error" / "Error executing tool X" answer,
- nothing logged at WARNING or above (the SDK logs a traceback for every crash),
- no write when the call failed (the tenant's rows before and after, tests.support.tenant_snapshot),
- no pydantic internals (type names such as `dict[str, any]`) in an error text.

Shared by tests/app/test_fuzz_tools.py (a few hundred cases per tool) and benchmarks/fuzz_tools.py.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import anyio
import asyncpg
import hypothesis_jsonschema
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp.types import INTERNAL_ERROR, CallToolResult, TextContent

from mindscape.app.server import build_server
from mindscape.app.state import open_state
from mindscape.database.pool import connect
from mindscape.database.targets import Targets
from mindscape.tenancy.caller import Caller
from tests.support import hypothesis_compat
from tests.support.external import inspect_url
from tests.support.tenant_snapshot import snapshot_on
from tests.support.tenants import PERSONAS_A, make_tenant, settings_for

hypothesis_compat.install()

Json = Any
from_schema = cast(Callable[..., st.SearchStrategy[Any]], hypothesis_jsonschema.from_schema)  # pyright: ignore[reportUnknownMemberType]
QUIET = cast(list[HealthCheck], list(HealthCheck))  # every health check off: slow, large cases are the point
CALL_TIMEOUT_S = 60
NOT_SENT = "not sent"  # the client itself refused to encode the call

# What must never reach an agent: the SDK's text for a crash, ours for a database failure, and
# pydantic's internal type names (a union member's tag such as `function-after[...]` or `dict[str,any]`).
GENERIC = re.compile(r"^Error executing tool \S+$|^Error reading resource |internal error")
PYDANTIC_INTERNALS = re.compile(
    r"function-(after|before|wrap|plain)\[|dict\[str|list\[|union\[|nullable\[|json-or-python\[|lax-or-strict\[|"
    r"JsonValue|tagged-union\[|model-fields|constrained-",
)

NUL, SURROGATES = "\x00", ("\ud800", "\udbff", "\udc00", "\udfff")
POISON_CHARS = (NUL, *SURROGATES)
POISON_NUMBERS: tuple[Json, ...] = (
    math.nan,
    math.inf,
    -math.inf,
    2**63,
    -(2**63) - 1,
    2**64,
    10**40,
    -(10**40),
    1e308,
    -0.0,
    5e-324,
)
# JSON inside a string: the SDK parses a string sent for a non-string argument as JSON.
POISON_JSON_TEXTS = (
    '{"a": "\\u0000"}',
    '{"\\u0000": 1}',
    '{"a": NaN}',
    '{"a": Infinity}',
    "[NaN]",
    '{"a": 1e999}',
    '{"a": "\\ud800"}',
    '{"a": {"b": {"c": [1, 2, {"d": null}]}}}',
    "[" * 200 + "]" * 200,
)

scalars: st.SearchStrategy[Json] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(POISON_NUMBERS),
    st.text(max_size=20),
)
json_values: st.SearchStrategy[Json] = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


def published_schemas() -> dict[str, dict[str, Any]]:
    """Every tool's published input schema, read from a server that needs no database to list them."""
    server = build_server(_no_state)
    return {tool.name: tool.input_schema for tool in anyio.run(server.list_tools)}


def _no_state() -> Any:
    raise AssertionError("listing tools needs no lifespan")


def properties(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return cast(dict[str, dict[str, Any]], schema.get("properties", {}))


def _alternatives(prop: dict[str, Any]) -> list[dict[str, Any]]:
    return cast(list[dict[str, Any]], prop.get("anyOf", [prop]))


def is_id(name: str, prop: dict[str, Any]) -> bool:
    """An argument that names a record by id: format uuid, or (before ids had a format) its name."""
    return any(alt.get("format") == "uuid" for alt in _alternatives(prop)) or name in {"id", "campaign", "parent"}


# --- mutations ---------------------------------------------------------------------------------
# Each takes the draw function, a call's arguments (a fresh dict) and the tool's schema; it
# returns the mutated arguments. The mutations are what an agent, a buggy client or an attacker
# could send; the schema-valid calls come from `from_schema`.

Draw = Callable[[st.SearchStrategy[Any]], Any]
Mutation = Callable[[Draw, dict[str, Json], dict[str, Any], "KnownIds"], dict[str, Json]]


def _pick_name(draw: Draw, args: dict[str, Json], schema: dict[str, Any]) -> str:
    names = sorted(set(properties(schema)) | set(args))
    return draw(st.sampled_from(names)) if names else "x"


def extra_key(draw: Draw, args: dict[str, Json], schema: dict[str, Any], ids: KnownIds) -> dict[str, Json]:
    names = sorted(properties(schema)) or ["x"]
    near = [f"{n}_id" for n in names] + [f"{n}s" for n in names] + [n.upper() for n in names] + [n[:-1] for n in names]
    key = draw(st.sampled_from([*near, "tenant", "tenant_id", "principal", "sql", "__proto__", ""]) | st.text())
    if key in properties(schema):
        key += "_extra"
    return {**args, key: draw(json_values)}


def wrong_type(draw: Draw, args: dict[str, Json], schema: dict[str, Any], ids: KnownIds) -> dict[str, Json]:
    return {**args, _pick_name(draw, args, schema): draw(json_values)}


def poison_string(draw: Draw, args: dict[str, Json], schema: dict[str, Any], ids: KnownIds) -> dict[str, Json]:
    """A NUL or a lone surrogate somewhere in a string value or an object key, nested ones included."""
    poison = draw(st.sampled_from(POISON_CHARS))
    spots = list(_string_spots(args))
    if not spots:
        return {**args, _pick_name(draw, args, schema): f"a{poison}b"}
    path, is_key = draw(st.sampled_from(spots))
    return cast(dict[str, Json], _poisoned(args, path, is_key, poison, draw(st.integers(0, 3))))


def _string_spots(value: Json, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], bool]]:
    if isinstance(value, str):
        yield path, False
    elif isinstance(value, dict):
        for key, item in cast(dict[str, Json], value).items():
            if path:  # top-level keys are argument names: extra_key covers those
                yield (*path, key), True
            yield from _string_spots(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(cast(list[Json], value)):
            yield from _string_spots(item, (*path, index))


def _poisoned(value: Json, path: tuple[Any, ...], is_key: bool, poison: str, at: int) -> Json:
    if not path:
        text = cast(str, value)
        at = min(at, len(text))
        return text[:at] + poison + text[at:]
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        items = cast(dict[str, Json], value)
        if is_key and not rest:
            text = cast(str, head)
            renamed = text[: min(at, len(text))] + poison + text[min(at, len(text)) :]
            return {(renamed if k == head else k): v for k, v in items.items()}
        return {k: (_poisoned(v, rest, is_key, poison, at) if k == head else v) for k, v in items.items()}
    items_list = cast(list[Json], value)
    return [(_poisoned(v, rest, is_key, poison, at) if i == head else v) for i, v in enumerate(items_list)]


def poison_number(draw: Draw, args: dict[str, Json], schema: dict[str, Any], ids: KnownIds) -> dict[str, Json]:
    """NaN, an infinity or a number past 64 bits, as an argument or inside a JSON object argument."""
    number = draw(st.sampled_from(POISON_NUMBERS))
    name = _pick_name(draw, args, schema)
    current = args.get(name)
    if isinstance(current, dict) and current and draw(st.booleans()):
        inner = cast(dict[str, Json], current)
        key = draw(st.sampled_from(sorted(inner)))
        return {**args, name: {**inner, key: number}}
    if name == "trait":
        return {**args, name: {"path": "level", "equals": number}}
    return {**args, name: number}


def huge_string(draw: Draw, args: dict[str, Json], schema: dict[str, Any], ids: KnownIds) -> dict[str, Json]:
    size = draw(st.sampled_from([5_000, 70_000, 1_100_000]))
    return {**args, _pick_name(draw, args, schema): draw(st.sampled_from(["x", "é", "\u2028", "🙂"])) * size}


def deep_nesting(draw: Draw, args: dict[str, Json], schema: dict[str, Any], ids: KnownIds) -> dict[str, Json]:
    depth = draw(st.sampled_from([17, 100, 300]))
    nested: Json = 1
    for _ in range(depth):
        nested = {"a": nested} if draw(st.booleans()) else [nested]
    return {**args, _pick_name(draw, args, schema): {"deep": nested}}


def json_in_string(draw: Draw, args: dict[str, Json], schema: dict[str, Any], ids: KnownIds) -> dict[str, Json]:
    return {**args, _pick_name(draw, args, schema): draw(st.sampled_from(POISON_JSON_TEXTS))}


def drop_required(draw: Draw, args: dict[str, Json], schema: dict[str, Any], ids: KnownIds) -> dict[str, Json]:
    required = [n for n in cast(list[str], schema.get("required", [])) if n in args]
    if not required:
        return {}
    gone = draw(st.sampled_from(required))
    return {k: v for k, v in args.items() if k != gone}


def some_id(draw: Draw, args: dict[str, Json], schema: dict[str, Any], ids: KnownIds) -> dict[str, Json]:
    """An id argument set to an unknown UUID, a real id (of any kind) or a UUID-like string."""
    names = [n for n, p in properties(schema).items() if is_id(n, p)]
    if not names:
        return wrong_type(draw, args, schema, ids)
    name = draw(st.sampled_from(names))
    choices = st.one_of(
        st.uuids().map(str),
        st.uuids().map(lambda u: u.hex),
        st.uuids().map(lambda u: "{" + str(u).upper() + "}"),
        st.uuids().map(lambda u: "urn:uuid:" + str(u)),
        st.sampled_from(ids.all()),
        st.sampled_from(["", "0" * 32, "0" * 36, "-" * 36, "g" * 32, str(uuid.UUID(int=0)), "' OR 1=1 --" + "x" * 22]),
    )
    updated = {**args, name: draw(choices)}
    if "expected_version" in properties(schema):
        updated["expected_version"] = draw(st.integers(1, 4))
    return updated


MUTATIONS: dict[str, Mutation] = {
    "extra key": extra_key,
    "wrong type": wrong_type,
    "NUL / surrogate": poison_string,
    "NaN / huge number": poison_number,
    "huge string": huge_string,
    "deep nesting": deep_nesting,
    "JSON in a string": json_in_string,
    "missing key": drop_required,
    "id": some_id,
}


@dataclass
class KnownIds:
    """Real ids in the fuzzed tenant, so that calls reach the database and not only validation."""

    by_kind: dict[str, list[str]] = field(default_factory=dict[str, list[str]])

    def all(self) -> list[str]:
        return [i for ids in self.by_kind.values() for i in ids] or [str(uuid.uuid4())]


def tool_arguments(schema: dict[str, Any], ids: KnownIds) -> st.SearchStrategy[dict[str, Json]]:
    """Calls as the schema describes them; ids are real ones half of the time.

    Strings are drawn at most GENERATED_MAX_LENGTH long (a 1 MiB limit makes drawing slow and finds
    nothing more); the `huge string` mutation sends the long ones.
    """
    real = st.sampled_from(ids.all())
    formats = {"uuid": st.one_of(st.uuids().map(str), real)}
    return cast(st.SearchStrategy[dict[str, Json]], from_schema(_shorter(schema), custom_formats=formats))


GENERATED_MAX_LENGTH = 1000


def _shorter(node: Json) -> Json:
    if isinstance(node, dict):
        copied = {k: _shorter(v) for k, v in cast(dict[str, Json], node).items()}
        if isinstance(copied.get("maxLength"), int):
            copied["maxLength"] = min(copied["maxLength"], GENERATED_MAX_LENGTH)
        return copied
    if isinstance(node, list):
        return [_shorter(v) for v in cast(list[Json], node)]
    return node


def base_calls(schema: dict[str, Any], ids: KnownIds, count: int = 40) -> list[dict[str, Json]]:
    """`count` schema-valid calls to mutate: drawn once, since from_schema is the slow part of a draw."""
    found: list[dict[str, Json]] = []

    @settings(max_examples=count, database=None, deadline=None, suppress_health_check=QUIET)
    @given(args=tool_arguments(schema, ids))
    def collect(args: dict[str, Json]) -> None:
        found.append(args)

    collect()
    return found or [{}]


def mutated_arguments(
    schema: dict[str, Any], ids: KnownIds, bases: list[dict[str, Json]] | None = None
) -> st.SearchStrategy[tuple[str, dict[str, Json]]]:
    """(mutation name, arguments): a schema-valid call (one of `bases`) changed by one to three mutations."""
    base = st.sampled_from(bases) if bases else tool_arguments(schema, ids)

    @st.composite
    def build(draw: Draw) -> tuple[str, dict[str, Json]]:
        args = dict(draw(base))
        names = draw(st.lists(st.sampled_from(sorted(MUTATIONS)), min_size=1, max_size=3))
        for name in names:
            args = MUTATIONS[name](draw, args, schema, ids)
        return " + ".join(names), args

    return build()


def resource_uris(ids: KnownIds) -> st.SearchStrategy[str]:
    """URIs of the four resource templates with fuzzed, poisoned and real ids or slugs."""
    variable = st.one_of(
        st.text(max_size=40),
        st.uuids().map(str),
        st.sampled_from([*ids.all(), "ada", "basil", "", "a" * 5000]),
        st.tuples(st.text(max_size=10), st.sampled_from(POISON_CHARS), st.text(max_size=10)).map("".join),
    )
    scheme = st.sampled_from(["persona", "memory", "campaign", "task"])
    return st.tuples(scheme, variable).map("://".join)


def prompt_arguments() -> st.SearchStrategy[dict[str, str]]:
    """Arguments of the `persona` prompt: fuzzed, poisoned, real and unknown names."""
    text = st.one_of(
        st.text(max_size=50),
        st.sampled_from(["ada", "basil", "zed", "3", "20", "21", "-1", " 5 ", "1e3", "٣", "NaN", "x" * 5000]),
        st.tuples(st.text(max_size=10), st.sampled_from(POISON_CHARS), st.text(max_size=10)).map("".join),
    )
    names = st.sampled_from(["slug", "task", "recall", "slugs", "recal", "tenant"])
    return st.dictionaries(names, text, max_size=4)


# --- running and judging calls -------------------------------------------------------------------


@dataclass
class Outcome:
    kind: str  # "ok", or the kind of error (see `error_kind`)
    text: str
    problems: list[str]  # empty when the server behaved


def error_kind(text: str) -> str:
    if GENERIC.search(text):
        return "internal"
    if "unknown argument" in text:
        return "unknown argument"
    if text.startswith("invalid arguments") or text.startswith("invalid argument"):
        return "invalid arguments"
    if text.startswith("no ") and "in this workspace" in text:
        return "not found"
    if "version conflict" in text:
        return "conflict"
    return "refused"


class WarningLog(logging.Handler):
    """Every record at WARNING or above, from any thread (the server runs in the portal's)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def take(self) -> list[str]:
        taken = [f"{r.levelname} {r.name}: {r.getMessage()}" + _exception(r) for r in self.records]
        self.records.clear()
        return taken


def _exception(record: logging.LogRecord) -> str:
    """The innermost exception of a logged traceback, for the report."""
    if not record.exc_info or record.exc_info[1] is None:
        return ""
    exc: BaseException = record.exc_info[1]
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return f" (traceback; {type(exc).__name__}: {str(exc)[:160]})"


@dataclass
class Tally:
    """Per target (tool, resource or prompt): cases by outcome, and every problem seen."""

    outcomes: Counter[str] = field(default_factory=Counter[str])
    tracebacks: int = 0
    writes_on_error: int = 0
    leaks: int = 0
    problems: list[str] = field(default_factory=list[str])


class FuzzHarness:
    """One in-memory client (one server, one pool) and one owner connection, on a portal's event loop."""

    def __init__(self, portal: BlockingPortal, client: Client, owner: asyncpg.Connection, caller: Caller) -> None:
        self.portal = portal
        self.client = client
        self.owner = owner
        self.caller = caller
        self.ids = KnownIds()
        self.log = WarningLog()
        self.tallies: dict[str, Tally] = {}
        self.seconds: dict[str, float] = {"calls": 0.0, "snapshots": 0.0}  # for the benchmark
        self._before: dict[str, tuple[int, str]] | None = None

    # The three kinds of call; each returns the error text (None on success) or raises.

    def call_tool(self, name: str, args: dict[str, Json]) -> Outcome:
        async def call() -> str | None:
            try:
                result: CallToolResult = await self.client.call_tool(name, args)
            except MCPError as exc:
                return _protocol_error(exc)
            texts = " ".join(c.text for c in result.content if isinstance(c, TextContent))
            return texts if result.is_error else None

        return self._judge(name, call)

    def read_resource(self, uri: str) -> Outcome:
        async def call() -> str | None:
            try:
                await self.client.read_resource(uri)
            except MCPError as exc:
                return _protocol_error(exc)
            return None

        return self._judge(uri.split("://", 1)[0] + "://", call)

    def get_prompt(self, name: str, args: dict[str, str]) -> Outcome:
        async def call() -> str | None:
            try:
                await self.client.get_prompt(name, args)
            except MCPError as exc:
                return _protocol_error(exc)
            return None

        return self._judge(f"prompt {name}", call)

    def _judge(self, target: str, call: Callable[[], Any]) -> Outcome:
        tally = self.tallies.setdefault(target, Tally())
        before = self._before or self._snapshot()

        async def bounded() -> str | None:
            with anyio.fail_after(CALL_TIMEOUT_S):
                return await call()

        started = time.perf_counter()
        try:
            error = self.portal.call(bounded)
        except (UnicodeEncodeError, ValueError, TypeError):
            # The client refused to encode the request (a lone surrogate in an object key, say):
            # nothing reached the server. Server failures come back as results or MCPError.
            tally.outcomes[NOT_SENT] += 1
            return Outcome(NOT_SENT, "", [])
        finally:
            self.seconds["calls"] += time.perf_counter() - started
        problems = [f"logged: {line}" for line in self.log.take()]
        tally.tracebacks += len(problems)
        if error is None:
            self._before = None  # a success may write: take a fresh snapshot before the next call
            outcome = Outcome("ok", "", problems)
        else:
            after = self._snapshot()
            self._before = after
            kind = error_kind(error)
            if kind == "internal":
                problems.append(f"generic error: {error[:300]}")
            if after != before:
                tally.writes_on_error += 1
                changed = sorted(t for t in after if after[t] != before.get(t))
                problems.append(f"failed call wrote to {changed}: {error[:200]}")
            if PYDANTIC_INTERNALS.search(_without_echoes(error)):
                tally.leaks += 1
                problems.append(f"pydantic internals in the message: {error[:300]}")
            outcome = Outcome(kind, error, problems)
        tally.outcomes[outcome.kind] += 1
        tally.problems.extend(problems)
        return outcome

    def _snapshot(self) -> dict[str, tuple[int, str]]:
        started = time.perf_counter()
        try:
            return self.portal.call(snapshot_on, self.owner, self.caller.tenant_id)
        finally:
            self.seconds["snapshots"] += time.perf_counter() - started

    def still_answers(self) -> None:
        """The server serves a plain call after everything it was sent."""

        async def call() -> None:
            result = await self.client.call_tool("get_persona", {"slug": "ada"})
            assert not result.is_error, result.content

        self.portal.call(call)

    def seed(self) -> None:
        """Records to aim at: an active campaign, tasks (one in progress) and memories."""

        async def seed() -> None:
            async def made(tool: str, **args: Json) -> str:
                result = await self.client.call_tool(tool, args)
                assert not result.is_error, result.content
                assert result.structured_content is not None
                return str(result.structured_content["id"])

            campaign = await made("create_campaign", name="Fuzz", status="active", personas=["ada"])
            tasks = [
                await made("create_task", title="first", campaign=campaign, input={"n": 1}),
                await made("create_task", title="second", persona="ada"),
                await made("create_task", title="third"),
            ]
            claimed = await self.client.call_tool("claim_next_task", {})
            assert not claimed.is_error, claimed.content
            memories = [
                await made("remember", content="The fuzzing tenant prefers tea", persona="ada", metadata={"t": "x"}),
                await made("remember", content="Quarterly report due Friday", kind="event"),
            ]
            self.ids.by_kind.update(campaign=[campaign], task=tasks, memory=memories)

        self.portal.call(seed)


def _without_echoes(text: str) -> str:
    """An error text without the values it quotes back (" (got ...)"): those are the caller's own."""
    return "\n".join(line.split(" (got ", 1)[0] for line in text.splitlines())


def _protocol_error(exc: MCPError) -> str:
    message = exc.error.message
    return f"internal error (code {exc.error.code}): {message}" if exc.error.code == INTERNAL_ERROR else message


@contextmanager
def fuzz_harness(targets: Targets, prefix: str = "fuzz") -> Generator[FuzzHarness]:
    """A fresh tenant with the usual personas, served in memory without a call quota, seeded."""
    with start_blocking_portal() as portal:
        caller = portal.call(make_tenant, targets, PERSONAS_A, prefix)
        settings = settings_for(targets, caller.tenant_slug, quota_calls_per_minute=0)
        server = build_server(lambda: open_state(settings, targets.runtime))
        owner = portal.call(connect, inspect_url(targets))
        client_cm = Client(server, raise_exceptions=False, cache=None)  # pyright: ignore[reportArgumentType]
        try:
            with portal.wrap_async_context_manager(client_cm) as client:
                harness = FuzzHarness(portal, client, owner, caller)
                root = logging.getLogger()
                root.addHandler(harness.log)
                try:
                    harness.seed()
                    harness.log.take()
                    yield harness
                finally:
                    root.removeHandler(harness.log)
        finally:
            portal.call(owner.close)


def as_json(value: Json, limit: int = 300) -> str:
    """A failing case, short enough for an assertion message."""
    try:
        text = json.dumps(value, ensure_ascii=True, default=repr)
    except (ValueError, RecursionError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."

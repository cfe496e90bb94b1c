"""The tool list an agent pays for on every turn: within budget, compact, and still exact.

`test_tool_list_fits_the_budget` prints the figures (pytest -s shows them; benchmarks/README.md
records them). The schemas are rewritten for publication (app.schemas); the tests below check
that the rewritten ones accept what the server accepts.
"""

from __future__ import annotations

import re
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from mindscape.app.arguments import SLUG_ARGUMENT_PATTERN
from mindscape.app.schemas import published_input, published_output
from mindscape.config.settings import SLUG_PATTERN
from mindscape.models.memory import MetaValue
from mindscape.tenancy.caller import Caller
from tests.support.results import data
from tests.support.tenants import ClientFactory
from tests.support.tool_list import INPUT_BUDGET, OUTPUT_BUDGET, listed_tools, size_of, table

pytestmark = [pytest.mark.anyio, pytest.mark.office("ada", prefix="toollist")]


async def test_tool_list_fits_the_budget() -> None:
    tools = await listed_tools()
    sizes = [size_of(tool) for tool in tools]
    print("\n" + table(sizes))
    assert len(tools) >= 14
    assert sum(s.input for s in sizes) <= INPUT_BUDGET, table(sizes)
    assert sum(s.output for s in sizes) <= OUTPUT_BUDGET, table(sizes)


async def test_every_tool_keeps_structured_output_and_no_generated_titles() -> None:
    for tool in await listed_tools():
        assert tool.output_schema is not None, tool.name
        assert tool.output_schema["type"] == "object", tool.name
        for schema in (tool.input_schema, tool.output_schema):
            assert list(_keywords(schema, "title")) == [], tool.name
            assert list(_keywords(schema, "$ref")) == [] or "$defs" in schema, tool.name


async def test_optional_arguments_publish_no_null_branch_but_the_server_accepts_null(
    office: Caller, client_for: ClientFactory
) -> None:
    tools = {tool.name: tool for tool in await listed_tools()}
    persona = tools["create_task"].input_schema["properties"]["persona"]
    assert persona["type"] == "string"
    assert "anyOf" not in persona
    assert "default" not in persona
    async with client_for(office.tenant_slug) as client:
        created = data(await client.call_tool("create_task", {"title": "t", "persona": None, "campaign": None}))
    assert created["persona"] is None


def _keywords(node: Any, keyword: str, in_properties: bool = False) -> list[Any]:
    """Values of `keyword` used as a schema keyword (not as a property name) anywhere in `node`."""
    found: list[Any] = []
    if isinstance(node, dict):
        for key, value in node.items():  # pyright: ignore[reportUnknownVariableType]
            if in_properties:
                found += _keywords(value, keyword)
                continue
            if key == keyword:
                found.append(value)
            found += _keywords(value, keyword, in_properties=key in ("properties", "$defs"))
    elif isinstance(node, list):
        for item in node:  # pyright: ignore[reportUnknownVariableType]
            found += _keywords(item, keyword)
    return found


def valid(schema: dict[str, Any], value: Any) -> bool:
    validator: Any = jsonschema.Draft202012Validator(schema)
    return bool(validator.is_valid(value))


# --- the rewrites are exact --------------------------------------------------------------------

SLUG_CHARS = st.text(alphabet="ab-z09-_A .", max_size=70)


@settings(max_examples=500, deadline=None)
@given(text=SLUG_CHARS | st.sampled_from(["a", "-a", "a-", "a--b", "", "a" * 64, "a" * 65, "0-0"]))
def test_the_short_slug_pattern_accepts_exactly_the_slugs(text: str) -> None:
    full = re.fullmatch(SLUG_PATTERN.strip("^$"), text) is not None
    short = re.search(SLUG_ARGUMENT_PATTERN, text) is not None and len(text) <= 64
    assert full == short, text


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=6,
)


@settings(max_examples=400, deadline=None)
@given(value=json_values)
def test_the_published_metadata_value_schema_accepts_what_the_server_accepts(value: Any) -> None:
    schema = TypeAdapter(MetaValue).json_schema()
    try:
        TypeAdapter(MetaValue).validate_python(value, strict=False)
        accepted = True
    except ValidationError:
        accepted = False
    assert valid(schema, value) == accepted, (value, schema)


PYDANTIC_STYLE = {
    "type": "object",
    "title": "Args",
    "properties": {
        "a": {"anyOf": [{"type": "string", "format": "uuid"}, {"type": "null"}], "default": None, "title": "A"},
        "n": {"anyOf": [{"type": "integer"}, {"type": "number"}, {"type": "null"}], "title": "N"},
        "title": {"type": "string", "title": "Title"},
        "o": {"anyOf": [{"$ref": "#/$defs/Inner"}, {"type": "null"}], "default": None},
    },
    "required": ["title", "n"],
    "$defs": {"Inner": {"type": "object", "title": "Inner", "properties": {"x": {"type": "integer"}}}},
}


@pytest.mark.parametrize(
    "value",
    [{"title": "t", "n": 1}, {"title": "t", "n": 1.5, "a": "x"}, {"title": "t", "n": None}, {"title": "t", "n": "1"}],
)
def test_input_rewrite_keeps_every_constraint_but_the_null_of_optional_arguments(value: dict[str, Any]) -> None:
    published = published_input(PYDANTIC_STYLE)
    assert "title" in published["properties"]
    assert list(_keywords(published, "title")) == []
    assert published["properties"]["a"] == {"type": "string", "format": "uuid"}
    assert published["properties"]["o"]["properties"] == {"x": {"type": "integer"}}  # used once: in place
    before = valid(PYDANTIC_STYLE, value)
    assert valid(published, value) == before


@pytest.mark.parametrize("value", [{"a": None, "n": 1}, {"a": "x", "n": None}, {"a": 1, "n": 1}, {"n": "x"}])
def test_output_rewrite_accepts_the_same_values(value: dict[str, Any]) -> None:
    schema = {**PYDANTIC_STYLE, "required": []}
    published = published_output(schema)
    assert published["properties"]["a"] == {"type": ["string", "null"]}
    before = valid(schema, value)
    assert valid(published, value) == before

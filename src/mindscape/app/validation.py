"""Argument errors an agent can act on: which field, what is wrong, what it sent.

Pydantic's default text (counts, model names, documentation URLs) is written for Python
developers; agents get one short line per problem instead.
"""

from __future__ import annotations

from pydantic import ValidationError

MAX_LINES = 6


def describe(tool: str, exc: ValidationError) -> str:
    lines: list[str] = []
    for err in exc.errors(include_url=False):
        field = ".".join(str(part) for part in err["loc"]) or "arguments"
        got = repr(err.get("input"))
        got = got if len(got) <= 60 else got[:57] + "..."
        line = f"- {field}: {err['msg']} (got {got})"
        if line not in lines:
            lines.append(line)
    shown = lines[:MAX_LINES] + ([f"- ... and {len(lines) - MAX_LINES} more"] if len(lines) > MAX_LINES else [])
    return (
        f"invalid arguments for {tool}:\n"
        + "\n".join(shown)
        + "\nFix them and call again; the input schema lists every limit."
    )

"""What clients list: descriptions without the docstrings' source indentation."""

from __future__ import annotations

from contextlib import nullcontext
from typing import cast

import pytest

from mindscape.app.server import build_server
from mindscape.app.state import AppState

pytestmark = pytest.mark.anyio


async def test_no_description_keeps_docstring_indentation() -> None:
    server = build_server(lambda: nullcontext(cast(AppState, None)))  # listing never opens the state
    listed: dict[str, str | None] = {}
    listed |= {f"tool {t.name}": t.description for t in await server.list_tools()}
    listed |= {f"prompt {p.name}": p.description for p in await server.list_prompts()}
    listed |= {f"resource {r.name}": r.description for r in await server.list_resource_templates()}
    listed |= {f"resource {r.name}": r.description for r in await server.list_resources()}
    indented = {
        name: text
        for name, text in listed.items()
        if text is None or text != text.strip() or any(line.startswith(" ") for line in text.splitlines())
    }
    assert indented == {}
    assert "\n\n`recall`" in (listed["prompt persona"] or "")  # paragraphs survive


async def test_every_tool_prompt_and_resource_has_a_short_title() -> None:
    server = build_server(lambda: nullcontext(cast(AppState, None)))
    titled: dict[str, str | None] = {}
    titled |= {f"tool {t.name}": t.title for t in await server.list_tools()}
    titled |= {f"prompt {p.name}": p.title for p in await server.list_prompts()}
    titled |= {f"resource {r.name}": r.title for r in await server.list_resource_templates()}
    titled |= {f"resource {r.name}": r.title for r in await server.list_resources()}
    assert len(titled) >= 19
    assert {name: title for name, title in titled.items() if not title or len(title) > 20} == {}

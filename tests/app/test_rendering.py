"""The `persona` prompt's trait lines: JSON values read as JSON, never as Python reprs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from mindscape.app.rendering import flatten_traits, system_prompt
from mindscape.models.persona import Persona


def test_trait_values_render_as_json() -> None:
    traits: dict[str, Any] = {
        "on_call": True,
        "remote": False,
        "manager": None,
        "level": 3,
        "ratio": 0.5,
        "tone": "warm",
        "langs": ["en", True, None, {"code": "fr"}],
        "style": {"format": "bullets", "empty": {}},
    }
    assert flatten_traits(traits) == [
        ("on_call", "true"),
        ("remote", "false"),
        ("manager", "null"),
        ("level", "3"),
        ("ratio", "0.5"),
        ("tone", "warm"),
        ("langs", 'en, true, null, {"code": "fr"}'),
        ("style.format", "bullets"),
        ("style.empty", "{}"),
    ]


def test_the_prompt_text_has_no_python_literals() -> None:
    now = datetime.now(UTC)
    sam = Persona(
        slug="sam",
        name="Sam",
        summary="",
        traits={"on_call": True, "pager": None, "tags": [False]},
        instructions="",
        tags=[],
        version=1,
        created_at=now,
        updated_at=now,
    )
    text = system_prompt(sam)
    assert "- on_call: true" in text
    assert "- pager: null" in text
    assert "- tags: false" in text
    for python_literal in ("True", "False", "None"):
        assert python_literal not in text

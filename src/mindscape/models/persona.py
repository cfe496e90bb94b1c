from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mindscape.config.settings import SLUG_PATTERN
from mindscape.models.json_limits import json_depth


class Persona(BaseModel):
    # A persona: who an agent should be, as data. (A comment: a docstring would be published in
    # get_persona's output schema, app.schemas.)

    slug: str
    name: str
    summary: str
    traits: dict[str, Any] = Field(description="Nested trait hierarchy, e.g. {'communication': {'tone': 'warm'}}.")
    instructions: str = Field(description="System-prompt text for acting as this persona.")
    tags: list[str]
    version: int
    created_at: datetime
    updated_at: datetime


class PersonaSummary(BaseModel):
    slug: str
    name: str
    summary: str = Field(description="First 200 characters of the summary.")
    tags: list[str]


class PersonaPage(BaseModel):
    personas: list[PersonaSummary]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")


TRAIT_PATH_PATTERN = r"^[A-Za-z0-9_-]{1,64}(\.[A-Za-z0-9_-]{1,64}){0,7}$"
TAG_PATTERN = r"^[^\s,][^,]{0,63}$"


class TraitFilter(BaseModel):
    # Matches personas whose trait at `path` equals `equals`. (A comment: a docstring would be
    # published in list_personas' input schema.)
    model_config = ConfigDict(extra="forbid")

    path: str = Field(
        pattern=TRAIT_PATH_PATTERN,
        max_length=400,
        description="e.g. 'communication.tone'",
    )
    equals: Annotated[str, Field(max_length=200)] | int | float | bool


Tag = Annotated[str, Field(pattern=TAG_PATTERN)]  # 1-64 characters, no comma


class PersonaIn(BaseModel):
    """One persona as written in an import file."""

    model_config = ConfigDict(extra="forbid")

    slug: str = Field(pattern=SLUG_PATTERN)
    name: str = Field(min_length=1, max_length=200)
    summary: str = Field(default="", max_length=2000)
    traits: dict[str, Any] = Field(default_factory=dict)
    instructions: str = Field(default="", max_length=32000)
    tags: list[Tag] = Field(default_factory=list, max_length=32)

    @field_validator("traits")
    @classmethod
    def _traits_fit(cls, traits: dict[str, Any]) -> dict[str, Any]:
        try:
            size = len(json.dumps(traits, allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"traits must be plain JSON (objects, lists, strings, finite numbers): {exc}") from exc
        if size > MAX_TRAITS_BYTES:
            raise ValueError(f"traits are larger than {MAX_TRAITS_BYTES // 1024} KiB of JSON")
        if json_depth(traits) > MAX_TRAITS_DEPTH:
            raise ValueError(f"traits nest deeper than {MAX_TRAITS_DEPTH} levels")
        return traits


MAX_TRAITS_BYTES = 64 * 1024
MAX_TRAITS_DEPTH = 8

"""Reading memory files (JSON Lines) for `mindscape memory import`, with line-numbered problems.

One JSON object per line; blank lines are skipped. Fields:

- `content` (required): the text, not blank, at most `memory_max_content_bytes` UTF-8 bytes;
- `persona`: a persona slug of the tenant (checked against the database by the importer);
- `kind`: fact, event, preference, instruction or note (default note);
- `metadata`: a small flat JSON object, the same rules as the `remember` tool's;
- `created_at`: ISO 8601 with a timezone (`2024-05-01T09:30:00Z`, `...+02:00`). A time without
  one is refused rather than assumed UTC: files are often written in local time, and a silent
  guess would shift every memory by hours with no way to tell afterwards;
- `importance`: 0 to 1;
- `visibility`: `tenant` (default: every caller of the tenant) or `persona` (only callers bound
  to the line's `persona`, which it then needs). Not `private`: a private memory belongs to the
  principal that writes it, and an import writes as the operator;
- `embedding`: the tenant's active model's vector for `content`, exactly its dimensions.

The whole file is checked before anything is written; every problem is reported with its line.
Embeddings are kept as float32 arrays (what pgvector stores), a quarter of the memory Python
floats would take.
"""

from __future__ import annotations

import re
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, cast

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, Strict, ValidationError
from pydantic_core import ErrorDetails

from mindscape.config.settings import SLUG_PATTERN
from mindscape.errors import ImportFileError
from mindscape.models.memory import Kind, Metadata

MAX_SHOWN = 50
MAX_MEMORIES = 1_000_000
FLOAT32_MAX = 3.4028234663852886e38
FIELDS = "content, persona, kind, metadata, created_at, importance, visibility, embedding"
_BOM = b"\xef\xbb\xbf"
_AT_LINE_1 = re.compile(r" at line 1 column (\d+)$")


class MemoryLine(BaseModel):
    """One line as written; parsed by pydantic's JSON parser (strict JSON: no NaN, no Infinity)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    content: Annotated[str, Field(strict=True, min_length=1)]
    persona: Annotated[str | None, Field(strict=True, pattern=SLUG_PATTERN)] = None
    kind: Kind = "note"
    metadata: Metadata | None = None
    # strict: an ISO 8601 string only, not a number of seconds that might be milliseconds.
    created_at: Annotated[AwareDatetime | None, Field(strict=True)] = None
    importance: Annotated[float | None, Field(strict=True, ge=0, le=1)] = None
    visibility: Literal["tenant", "persona"] = "tenant"
    embedding: Annotated[list[Annotated[float, Strict()]] | None, Field(strict=True)] = None


@dataclass(frozen=True, slots=True)
class FileMemory:
    line: int
    content: str
    persona: str | None
    kind: str
    metadata: dict[str, Any]
    created_at: datetime | None
    importance: float | None
    embedding: array[float] | None
    visibility: str = "tenant"


class MemoryFileError(ImportFileError):
    """The file's problems: the first MAX_SHOWN of them listed, all of them counted."""

    def __init__(self, path: str, shown: list[str], total: int) -> None:
        super().__init__(path, shown)
        if total > len(shown):
            lines = "\n".join(f"  {p}" for p in shown)
            more = f"  ... and {total - len(shown)} more"
            self.args = (f"{path} was not imported ({total} problem(s)); nothing was written:\n{lines}\n{more}",)


@dataclass
class Problems:
    """Line-numbered problems in line order; only the first MAX_SHOWN are kept as text."""

    shown: list[tuple[int, str]] = field(default_factory=lambda: [])
    total: int = 0

    def add(self, line: int, message: str) -> None:
        self.total += 1
        if len(self.shown) < MAX_SHOWN:
            self.shown.append((line, message))

    def merge(self, other: Problems) -> Problems:
        return Problems(sorted([*self.shown, *other.shown])[:MAX_SHOWN], self.total + other.total)

    def raise_if_any(self, path: Path) -> None:
        if self.total:
            raise MemoryFileError(str(path), [f"line {n}: {m}" for n, m in self.shown], self.total)


@dataclass
class MemoryFile:
    path: Path
    memories: list[FileMemory]
    problems: Problems
    persona_lines: dict[str, list[int]]  # slug -> the lines naming it, for the database check

    def raise_if_problems(self, known_personas: set[str]) -> None:
        """MemoryFileError with every problem, lines naming a persona not in `known_personas` included."""
        unknown = Problems()
        for line, slug in sorted(
            (n, s) for s, lines in self.persona_lines.items() if s not in known_personas for n in lines
        ):
            unknown.add(line, f"persona: no persona {slug!r} in this tenant; `mindscape persona list` shows them")
        self.problems.merge(unknown).raise_if_any(self.path)


def read_memory_file(
    path: Path,
    *,
    dimensions: int,
    model: str,
    max_content_bytes: int,
    on_bytes: Callable[[int], None] = lambda _: None,
) -> MemoryFile:
    """Every memory in the file and every problem found; raises only when the file cannot be read."""
    memories: list[FileMemory] = []
    problems = Problems()
    persona_lines: dict[str, list[int]] = {}
    try:
        with path.open("rb") as lines:
            for number, raw in enumerate(lines, start=1):
                on_bytes(len(raw))
                text = (raw.removeprefix(_BOM) if number == 1 else raw).rstrip(b"\r\n")
                if not text.strip():
                    continue
                if len(memories) >= MAX_MEMORIES:
                    problems.add(number, f"more than {MAX_MEMORIES} memories in one file; split it")
                    break
                memory, slug = _read_line(number, text, dimensions=dimensions, model=model, max_bytes=max_content_bytes)
                if slug is not None:
                    persona_lines.setdefault(slug, []).append(number)
                if isinstance(memory, list):
                    for message in memory:
                        problems.add(number, message)
                else:
                    memories.append(memory)
    except OSError as exc:
        raise ImportFileError(str(path), [f"file: cannot read: {exc.strerror}"]) from exc
    return MemoryFile(path, memories, problems, persona_lines)


def _read_line(
    number: int, text: bytes, *, dimensions: int, model: str, max_bytes: int
) -> tuple[FileMemory | list[str], str | None]:
    """The line's memory or its problems, and the persona it names (checked either way)."""
    try:
        item = MemoryLine.model_validate_json(text)
    except ValidationError as exc:
        return _messages(exc.errors(include_url=False)), None
    found: list[str] = []
    content = item.content
    size = len(content.encode("utf-8"))
    if not content.strip():
        found.append("content: is blank; there is nothing to remember")
    elif size > max_bytes:
        found.append(f"content: is {size} bytes, over the {max_bytes}-byte limit (the tenant's max_content_bytes)")
    if "\x00" in content:
        found.append("content: contains a NUL character (\\u0000), which PostgreSQL cannot store")
    metadata = item.metadata or {}
    if any("\x00" in value for value in _texts(metadata)):
        found.append("metadata: contains a NUL character (\\u0000), which PostgreSQL cannot store")
    if item.visibility == "persona" and item.persona is None:
        found.append("visibility: 'persona' needs `persona`, the slug of the persona whose memory this is")
    vector = None
    if item.embedding is not None:
        vector, problem = _vector(item.embedding, dimensions, model)
        if problem:
            found.append(f"embedding: {problem}")
    if found:
        return found, item.persona
    memory = FileMemory(
        number, content, item.persona, item.kind, metadata, item.created_at, item.importance, vector, item.visibility
    )
    return memory, item.persona


def _vector(values: list[float], dimensions: int, model: str) -> tuple[array[float] | None, str | None]:
    if len(values) != dimensions:
        return None, f"has {len(values)} numbers, but the tenant's model {model} makes {dimensions}"
    # JSON's finite numbers can still overflow float32, which pgvector stores.
    if max(values) > FLOAT32_MAX or min(values) < -FLOAT32_MAX:
        return None, "has a number beyond the float32 range (about 3.4e38)"
    if not any(values):
        return None, "is all zeros, which has no direction to compare by"
    return array("f", values), None


def _texts(metadata: dict[str, Any]) -> list[str]:
    texts: list[str] = []
    for key, value in metadata.items():
        texts.append(key)
        for element in cast(list[Any], value) if isinstance(value, list) else [value]:
            if isinstance(element, str):
                texts.append(element)
    return texts


def _messages(errors: list[ErrorDetails]) -> list[str]:
    """One message per problem: a bad metadata value or embedding is one problem, not one per type or number."""
    messages: list[str] = []
    bad_numbers = 0
    for err in errors:
        loc = err["loc"]
        if loc[:1] == ("embedding",) and len(loc) == 2:
            bad_numbers += 1
            if bad_numbers > 1:
                continue
        if loc[:1] == ("metadata",) and len(loc) >= 3:
            # pydantic reports each type of the union it tried; the allowed types say it better.
            message = f"{_where(loc[:2])}: must be text, a number, true/false, null or a list of those"
        else:
            message = _message(err)
        if message not in messages:
            messages.append(message)
    if bad_numbers > 1:
        first = next(i for i, m in enumerate(messages) if m.startswith("embedding."))
        messages[first] += f" (and {bad_numbers - 1} more numbers)"
    return messages


def _where(loc: tuple[int | str, ...]) -> str:
    """A dotted field path fit for a terminal: control characters and surrogates escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in ".".join(str(part) for part in loc))


def _message(err: ErrorDetails) -> str:
    where = _where(err["loc"])
    kind = err["type"]
    if kind == "json_invalid":
        # Each line is its own document, so pydantic's "line 1" would only mislead.
        detail = str(err.get("ctx", {}).get("error", err["msg"]))
        return "invalid JSON: " + _AT_LINE_1.sub(r" at column \1", detail)
    if kind == "model_type":
        return "expected a JSON object with at least `content`"
    if kind == "extra_forbidden":
        return f"{where}: unknown field; the fields are {FIELDS}"
    if err["loc"] == ("visibility",) and kind == "literal_error":
        return (
            "visibility: must be tenant or persona; a private memory belongs to the principal that writes it "
            "(an import writes as the operator): store it with `remember` as that principal"
        )
    if kind == "missing":
        return f"{where}: missing; every line needs it"
    return f"{where}: {err['msg']}" if where else str(err["msg"])

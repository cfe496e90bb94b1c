"""Reading persona files (YAML or JSON) all-or-nothing, with line-numbered problems."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, cast

import yaml
from pydantic import ValidationError

from mindscape.errors import ImportFileError
from mindscape.models.persona import PersonaIn

MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_PERSONAS = 10_000


def _node_at(node: yaml.Node | None, loc: tuple[int | str, ...]) -> yaml.Node | None:
    """Follow a pydantic error location into the YAML node tree (for its line number)."""
    for part in loc:
        if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        elif isinstance(node, yaml.MappingNode):
            match = [v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == str(part)]
            if not match:
                return node
            node = match[0]
        else:
            return node
    return node


def _line(root: yaml.Node | None, loc: tuple[int | str, ...]) -> str:
    node = _node_at(root, loc)
    return f"line {node.start_mark.line + 1}" if node is not None else "file"


def _load(path: Path) -> tuple[Any, yaml.Node | None]:
    """The parsed document and, when YAML can read it, its node tree for line numbers."""
    if path.stat().st_size > MAX_FILE_BYTES:
        raise ImportFileError(str(path), [f"file: larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB"])
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ImportFileError(str(path), [f"line {exc.lineno}: invalid JSON: {exc.msg}"]) from exc
        try:
            return data, yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError:
            return data, None  # valid JSON that YAML 1.1 cannot read: item indexes instead of lines
    try:
        return yaml.safe_load(text), yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ImportFileError(str(path), [_yaml_problem(exc, text)]) from exc


def _yaml_problem(exc: yaml.YAMLError, text: str) -> str:
    mark: yaml.Mark | None = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context: str | None = getattr(exc, "context", None)
    context_mark: yaml.Mark | None = getattr(exc, "context_mark", None)
    if mark is not None and mark.index >= len(text) and context is not None and context_mark is not None:
        # Found only at the end of the file (an unclosed quote or bracket): the line past the
        # last one helps nobody, the line where the construct started does.
        return f"line {context_mark.line + 1}: invalid YAML: {context}, {problem}"
    where = f"line {mark.line + 1}" if mark is not None else "file"
    return f"{where}: invalid YAML: {problem}"


Loc = tuple[int | str, ...]
_NOT_JSON = {"date": "a date", "datetime": "a timestamp", "bytes": "binary data", "set": "a set"}


def _unstorable(value: Any, loc: Loc) -> list[tuple[Loc, str]]:
    """Values that pass validation but PostgreSQL refuses (text and jsonb), with where they are.

    Without this check they fail the import's transaction halfway with a database error
    instead of a line-numbered problem.
    """
    if isinstance(value, str):
        if "\x00" in value:
            return [(loc, "contains a NUL character (\\u0000), which PostgreSQL cannot store")]
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return [(loc, "contains an unpaired surrogate, which is not valid Unicode")]
        return []
    if value is None or isinstance(value, bool | int):
        return []
    if isinstance(value, float):
        return [] if math.isfinite(value) else [(loc, f"{value} is not a finite number; JSON has no inf or nan")]
    found: list[tuple[Loc, str]] = []
    if isinstance(value, list):
        for index, element in enumerate(cast(list[Any], value)):
            found += _unstorable(element, (*loc, index))
        return found
    if isinstance(value, dict):
        for key, element in cast(dict[Any, Any], value).items():
            if key is not None and not isinstance(key, str | int | float | bool):  # json.dumps turns those into text
                what = _NOT_JSON.get(type(key).__name__, type(key).__name__)
                found.append(((*loc, str(key)), f"key {key!r} is {what}, not text; quote it"))
                continue
            found += _unstorable(key, (*loc, str(key))) or _unstorable(element, (*loc, str(key)))
        return found
    what = _NOT_JSON.get(type(value).__name__, type(value).__name__)
    return [(loc, f"{what} cannot be stored in JSON; quote it to keep it as text, or use a list")]


def _field(loc: Loc) -> str:
    """A dotted field path fit for a terminal: control characters and surrogates escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in ".".join(str(p) for p in loc))


def read_persona_file(path: Path) -> list[PersonaIn]:
    """Every persona in the file, or ImportFileError listing every problem found."""
    try:
        data, root = _load(path)
    except OSError as exc:
        raise ImportFileError(str(path), [f"file: cannot read: {exc.strerror}"]) from exc
    except UnicodeDecodeError as exc:
        raise ImportFileError(str(path), ["file: not UTF-8 text"]) from exc
    prefix: tuple[int | str, ...] = ()
    if isinstance(data, dict) and "personas" in data:
        extra = sorted(str(k) for k in cast(dict[Any, Any], data) if k != "personas")
        if extra:
            where = _line(root, (extra[0],))
            raise ImportFileError(str(path), [f"{where}: unknown top-level key(s) {extra}; only `personas` is read"])
        data, prefix = data["personas"], ("personas",)  # pyright: ignore[reportUnknownVariableType]
    if not isinstance(data, list):
        raise ImportFileError(str(path), ["file: expected a list of personas, or a mapping with a `personas` list"])
    items: list[Any] = data  # pyright: ignore[reportUnknownVariableType]
    if len(items) > MAX_PERSONAS:
        raise ImportFileError(str(path), [f"file: more than {MAX_PERSONAS} personas; split it"])
    personas: list[PersonaIn] = []
    problems: list[str] = []
    first_seen: dict[str, int] = {}
    for index, item in enumerate(items):
        where = (*prefix, index)
        # Traits are free-form, so YAML can put dates, sets or NaN in them; find those before
        # validation, which serialises traits to measure them, and check the rest without them.
        raw_traits = cast(dict[str, Any], item).get("traits") if isinstance(item, dict) else None
        unstorable = _unstorable(raw_traits, ("traits",)) if isinstance(raw_traits, dict) else []
        if unstorable:
            item = dict(cast(dict[str, Any], item), traits={})
        try:
            persona = PersonaIn.model_validate(item)
        except ValidationError as exc:
            for err in exc.errors():
                field = _field(err["loc"]) or "persona"
                problems.append(f"{_line(root, (*where, *err['loc']))}: persona #{index + 1}: {field}: {err['msg']}")
            persona = None
        if persona is not None:
            texts = {"name": persona.name, "summary": persona.summary, "instructions": persona.instructions}
            unstorable += _unstorable({**texts, "tags": persona.tags}, ())
        for loc, message in unstorable:
            problems.append(f"{_line(root, (*where, *loc))}: persona #{index + 1}: {_field(loc)}: {message}")
        if persona is None:
            continue
        if persona.slug in first_seen:
            problems.append(
                f"{_line(root, (*where, 'slug'))}: persona #{index + 1}: slug {persona.slug!r} "
                f"repeats persona #{first_seen[persona.slug] + 1}"
            )
        first_seen.setdefault(persona.slug, index)
        personas.append(persona)
    if problems:
        raise ImportFileError(str(path), problems)
    return personas

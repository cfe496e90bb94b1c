"""Reading persona files (YAML or JSON) all-or-nothing, with line-numbered problems."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "file"
        raise ImportFileError(str(path), [f"{where}: invalid YAML: {getattr(exc, 'problem', exc)}"]) from exc


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
        try:
            persona = PersonaIn.model_validate(item)
        except ValidationError as exc:
            for err in exc.errors():
                loc = (*prefix, index, *err["loc"])
                field = ".".join(str(p) for p in err["loc"]) or "persona"
                problems.append(f"{_line(root, loc)}: persona #{index + 1}: {field}: {err['msg']}")
            continue
        if persona.slug in first_seen:
            problems.append(
                f"{_line(root, (*prefix, index, 'slug'))}: persona #{index + 1}: slug {persona.slug!r} "
                f"repeats persona #{first_seen[persona.slug] + 1}"
            )
        first_seen.setdefault(persona.slug, index)
        personas.append(persona)
    if problems:
        raise ImportFileError(str(path), problems)
    return personas

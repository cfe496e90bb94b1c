"""Arguments: strict at the door, and errors an agent can act on.

Every tool's argument model is made strict once, when the tool is registered (`make_strict`,
called by MindscapeServer.add_tool), so no tool can forget it:
- an unknown argument is an error naming the accepted ones and the closest match, and the
  published input schema says `additionalProperties: false`;
- a NUL character or a lone surrogate in any string (object keys and nested JSON included), NaN
  or an infinity in any number, and JSON nested deeper than MAX_DEPTH are refused before the
  tool runs: PostgreSQL cannot store the first two, JSON has no NaN, and depth is a cost.

`describe` turns pydantic's errors (counts, model names, union members, documentation URLs,
written for Python developers) into one short line per problem; `record_id` is the id argument
type whose error says which tools give such ids. MindscapeServer gives the `persona` prompt's
arguments and resource URIs the same checks (`unstorable`, `unknown_names`, `check_text`).
"""

from __future__ import annotations

import difflib
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, cast

from mcp.server.mcpserver.tools import Tool
from mcp.server.mcpserver.utilities.func_metadata import ArgModelBase
from pydantic import ConfigDict, ValidationError, ValidatorFunctionWrapHandler, WrapValidator, model_validator
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError

from mindscape.errors import InvalidArgument

MAX_LINES = 6
MAX_DEPTH = 32  # JSON arguments nest at most this deep (the typed limits are lower: 16 for task input)
MAX_PROBLEMS = 20

NUL = "contains a NUL character (\\x00), which cannot be stored; remove it"
SURROGATE = "contains a lone surrogate ({char}), which is not valid Unicode; send UTF-8 text"
NON_FINITE = "is {value}; send a finite number (JSON has no NaN or Infinity)"
TOO_DEEP = f"nests deeper than {MAX_DEPTH} levels; send flatter JSON"
RECORD_ID = "expected {article} {kind} id such as the `id` returned by {tools}"
_SURROGATE = re.compile("[\ud800-\udfff]")


# --- strict argument models ----------------------------------------------------------------------


class StrictArguments(ArgModelBase):
    """Mixed into every tool's argument model (see make_strict)."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="wrap")
    @classmethod
    def _refuse_unstorable(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        problems = unstorable(data)
        if problems:
            raise ValidationError.from_exception_data(cls.__name__, problems)
        return handler(data)


def make_strict(tool: Tool) -> None:
    """Swap the tool's argument model for a strict subclass, and publish its schema."""
    base = tool.fn_metadata.arg_model
    if issubclass(base, StrictArguments):
        return
    namespace = {"__module__": base.__module__, "__doc__": base.__doc__, "model_config": ConfigDict(extra="forbid")}
    strict = cast(type[ArgModelBase], type(base.__name__, (StrictArguments, base), namespace))
    tool.fn_metadata.arg_model = strict
    tool.parameters = strict.model_json_schema(by_alias=True)


def unstorable(value: Any, loc: tuple[str | int, ...] = ()) -> list[InitErrorDetails]:
    """Strings with NUL or lone surrogates, non-finite numbers and over-deep JSON, anywhere in `value`.

    Iterative, so that depth itself cannot exhaust the stack.
    """
    problems: list[InitErrorDetails] = []
    stack: list[tuple[tuple[str | int, ...], Any, int]] = [(loc, value, 0)]
    while stack and len(problems) < MAX_PROBLEMS:
        where, item, depth = stack.pop()
        if isinstance(item, str):
            if (problem := text_problem(item)) is not None:
                problems.append(_problem(problem, where, item))
        elif isinstance(item, float):
            if not math.isfinite(item):
                shown = "NaN" if math.isnan(item) else ("Infinity" if item > 0 else "-Infinity")
                problems.append(_problem(NON_FINITE.format(value=shown), where, item))
        elif isinstance(item, dict | list | tuple):
            if depth > MAX_DEPTH:
                problems.append(_problem(TOO_DEEP, where, "..."))
                continue
            if isinstance(item, dict):
                entries = list(cast(dict[Any, Any], item).items())
            else:
                entries = list(enumerate(cast(Sequence[Any], item)))
            for key, child in reversed(entries):
                if isinstance(key, str) and (problem := text_problem(key)) is not None:
                    problems.append(_problem("this key " + problem, (*where, key), key))
                stack.append(((*where, key), child, depth + 1))
    return problems


def text_problem(text: str) -> str | None:
    """Why `text` cannot be stored, or None."""
    if "\x00" in text:
        return NUL
    if not text.isascii() and (found := _SURROGATE.search(text)) is not None:
        return SURROGATE.format(char=repr(found.group())[1:-1])
    return None


def check_text(what: str, text: str) -> None:
    """InvalidArgument when `text` (a resource URI, say) cannot be stored or echoed safely."""
    if (problem := text_problem(text)) is not None:
        raise InvalidArgument(f"{what} {problem}")


def _problem(message: str, loc: tuple[str | int, ...], value: Any) -> InitErrorDetails:
    return InitErrorDetails(
        type=PydanticCustomError("unstorable", "{message}", {"message": message}), loc=loc, input=value
    )


# --- record ids ----------------------------------------------------------------------------------


def record_id(kind: str, tools: str) -> WrapValidator:
    """For `Annotated[uuid.UUID, record_id("task", "create_task or list_tasks")]`: anything but a UUID
    gets "expected a task id such as the `id` returned by create_task or list_tasks"."""
    article = "an" if kind[0] in "aeiou" else "a"
    message = RECORD_ID.format(article=article, kind=kind, tools=tools)

    def check(value: Any, handler: ValidatorFunctionWrapHandler) -> uuid.UUID:
        try:
            return handler(value)
        except ValidationError:
            raise PydanticCustomError("record_id", "{message}", {"message": message}) from None

    return WrapValidator(check)


# --- error text ----------------------------------------------------------------------------------

# pydantic error type -> what was expected, in words (the same words for every tool).
EXPECTED = {
    "string_type": "text",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true/false",
    "bool_parsing": "true/false",
    "list_type": "a list",
    "dict_type": "a JSON object",
    "model_type": "a JSON object",
    "model_attributes_type": "a JSON object",
    "none_required": "null",
}


# pydantic error type -> (the words of the rule, the key of its limit in the error's ctx).
BOUNDS = {
    "greater_than_equal": ("at least", "ge"),
    "less_than_equal": ("at most", "le"),
    "greater_than": ("more than", "gt"),
    "less_than": ("less than", "lt"),
}


def describe(
    target: str,
    exc: ValidationError,
    *,
    schema: Mapping[str, Any] | None = None,
    data: Any = None,
) -> str:
    """One message for all of `exc`'s problems with a call of `target` (a tool or a prompt).

    `schema` (the published input schema) names what an object accepts; `data` (the arguments as
    validated) tells data paths from pydantic's union-member labels.
    """
    errors = exc.errors(include_url=False)
    unknown = [e for e in errors if e["type"] in ("extra_forbidden", "unexpected_keyword_argument")]
    rest = [e for e in errors if e not in unknown]
    parts: list[str] = []
    if unknown:
        parts.append(_unknown_text(target, [_path(e, data) for e in unknown], schema, None))
    if rest:
        lines = _problem_lines(rest, data)
        shown = lines[:MAX_LINES] + ([f"- ... and {len(lines) - MAX_LINES} more"] if len(lines) > MAX_LINES else [])
        parts.append(
            f"invalid arguments for {target}:\n" + "\n".join(shown) + "\nFix them and call again; the input schema "
            "lists every limit."
        )
    return "\n".join(parts)


def unknown_names(target: str, names: Sequence[str], accepted: Sequence[str]) -> str:
    """The message for arguments nobody declared (prompts check names before pydantic sees them)."""
    return _unknown_text(target, [(name,) for name in names], None, accepted)


def _unknown_text(
    target: str,
    paths: Sequence[tuple[str | int, ...]],
    schema: Mapping[str, Any] | None,
    accepted: Sequence[str] | None,
) -> str:
    lines: list[str] = []
    owners: dict[str, list[str]] = {}
    for path in paths:
        parent = path[:-1]
        names = list(accepted) if accepted is not None and not parent else _names_at(schema, parent)
        owner = target if not parent else _dotted(parent)
        owners.setdefault(owner, names)
        noun = "argument" if not parent else "key"
        name = _shown(path[-1])
        match = difflib.get_close_matches(str(path[-1]), names, n=1, cutoff=0.6)
        hint = f"; did you mean `{match[0]}`?" if match else ""
        lines.append(f"unknown {noun} `{_dotted(path)}`{hint}" if parent else f"unknown {noun} `{name}`{hint}")
    if len(lines) > MAX_LINES:
        lines[MAX_LINES:] = [f"... and {len(lines) - MAX_LINES} more unknown names"]
    accepts = [f"{owner} accepts: {', '.join(names) or 'no arguments'}" for owner, names in owners.items()]
    separator = " " if len(lines) == 1 and lines[0].endswith("?") else ("; " if len(lines) == 1 else "\n")
    return "\n".join(lines) + separator + "\n".join(accepts)


def _names_at(schema: Mapping[str, Any] | None, path: tuple[str | int, ...]) -> list[str]:
    """The property names of the object at `path` in a JSON schema, following $ref and anyOf."""
    if schema is None:
        return []
    defs = cast(Mapping[str, Any], schema.get("$defs", {}))
    node: Mapping[str, Any] | None = schema
    for part in path:
        key = "items" if isinstance(part, int) else "properties"
        holder = _option_with(node, defs, key)
        if holder is None:
            return []
        node = holder["items"] if isinstance(part, int) else cast(Mapping[str, Any], holder["properties"]).get(part)
    holder = _option_with(node, defs, "properties")
    return list(cast(Mapping[str, Any], holder["properties"])) if holder is not None else []


def _option_with(node: Mapping[str, Any] | None, defs: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    """The alternative of `node` (itself, or one of its anyOf, $ref followed) that has `key`."""
    if node is None:
        return None
    for option in cast(list[Mapping[str, Any]], node.get("anyOf", [node])):
        ref = option.get("$ref")
        if isinstance(ref, str):
            option = cast(Mapping[str, Any], defs.get(ref.rsplit("/", 1)[-1], {}))
        if key in option:
            return option
    return None


def _path(err: ErrorDetails, data: Any) -> tuple[str | int, ...]:
    """Where in the arguments the error is: pydantic's loc without its union-member labels.

    A label ('str', 'function-after[...]'...) is a loc part the data has no key for. The last
    part of a missing or unknown name is kept: it is the name itself.
    """
    loc = err["loc"]
    if data is None:
        return tuple(loc)
    names_itself = err["type"] in ("missing", "extra_forbidden", "unexpected_keyword_argument")
    walked: list[str | int] = []
    current = data
    for index, part in enumerate(loc):
        if isinstance(current, dict) and part in current:
            current = cast(dict[Any, Any], current)[part]
        elif (
            isinstance(current, list | tuple)
            and isinstance(part, int)
            and 0 <= part < len(cast(Sequence[Any], current))
        ):
            current = cast(Sequence[Any], current)[part]
        elif not (names_itself and index == len(loc) - 1):
            continue
        walked.append(part)
    return tuple(walked)


def _problem_lines(errors: list[ErrorDetails], data: Any) -> list[str]:
    by_path: dict[tuple[str | int, ...], list[ErrorDetails]] = {}
    for err in errors:
        by_path.setdefault(_path(err, data), []).append(err)
    lines: list[str] = []
    for path, found in by_path.items():
        deeper = any(other[: len(path)] == path and len(other) > len(path) for other in by_path)
        mismatches = [e for e in found if e["type"] in EXPECTED]
        if deeper and len(mismatches) == len(found):
            continue  # a union member matched the type and failed inside: the deeper lines say why
        field = _dotted(path) or "arguments"
        got = _shown_value(found[0].get("input"))
        if len(mismatches) == len(found):
            expected = list(dict.fromkeys(EXPECTED[e["type"]] for e in found))
            if "a number" in expected and "a whole number" in expected:
                expected.remove("a whole number")
            lines.append(f"- {field}: expected {_or(expected)} (got {got})")
            continue
        for err in found:
            if err["type"] in EXPECTED and len(found) > 1:
                continue  # the other union members' messages are the useful ones
            line = f"- {field}: {_message(err)}" + ("" if err["type"] == "missing" else f" (got {got})")
            if line not in lines:
                lines.append(line)
    return lines


def _message(err: ErrorDetails) -> str:
    kind = err["type"]
    if kind == "missing":
        return "required; pass it"
    if kind in EXPECTED:
        return f"expected {EXPECTED[kind]}"
    if kind == "timezone_aware":
        return "needs a timezone, e.g. 2026-03-01T09:00:00Z"
    bound = BOUNDS.get(kind)
    if bound is not None:
        words, key = bound
        return f"must be {words} {err.get('ctx', {}).get(key)}"
    message = str(err["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    if message.startswith("Input should be "):
        message = "expected " + message.removeprefix("Input should be ")
    return message


def _or(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _dotted(path: Sequence[str | int]) -> str:
    return ".".join(_shown(part) for part in path)


def _shown(part: str | int) -> str:
    """A name as the agent sent it, with control characters and surrogates escaped."""
    text = str(part)
    return text if text.isprintable() else repr(text)[1:-1]


def _shown_value(value: Any) -> str:
    got = repr(value)
    return got if len(got) <= 60 else got[:57] + "..."

"""The schemas clients list: every agent pays for them on every turn, so they are published compact.

pydantic's schemas are exact but long. `published_input` and `published_output` rewrite them
without changing what they accept (each rule below says why it is exact), and never touch the
argument models themselves: validation and its error messages (app.validation) stay pydantic's.

- `title` keywords (pydantic generates one for every field and model: 325 of them for 14 tools)
  are dropped: annotations only, and `name` already says it. So is `additionalProperties: true`,
  the default.
- A definition in `$defs` referenced once and not by itself is written in place of its `$ref`.
- `{"type": "integer"}` beside a plain `{"type": "number"}` in one `anyOf` is dropped: every
  integer is a number.
- Input: an optional argument whose default is null loses that `"default": null` and its
  `{"type": "null"}` branch: leaving the argument out says "none", the way agents do it. The
  server still accepts an explicit null (some clients send one for every optional argument).
  Input schemas keep `anyOf` (no type arrays): model providers map them onto single-type dialects.
- Output: the shape of the result (names, types, enums, which may be null) and no more. Only the
  root keeps a `description` (a result model's docstring: what an agent must know about the
  whole result); the fields' descriptions document the code. `required` is dropped (every field
  listed is always sent; the lists cost a quarter of all output schemas), and so are `default`
  and `format` (an annotation in JSON Schema 2020-12; the values show it).
  `{"anyOf": [X, {"type": "null"}]}` becomes X with `"type": [T, "null"]` when X is a plain typed
  schema: the same values, validated by the client's JSON Schema validator, not
  filled in by a model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, cast

Schema = dict[str, Any]
_LOCAL = "#/$defs/"

_MAPS = ("properties", "$defs", "patternProperties", "dependentSchemas")
_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SINGLE = ("items", "additionalProperties", "not", "propertyNames", "contains", "if", "then", "else")
_NULL: Mapping[str, Any] = {"type": "null"}
# Keywords that constrain one type only: a null passes them, so they may sit beside "type": [T, "null"].
_MERGEABLE = {
    "type",
    "format",
    "description",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "items",
    "minItems",
    "maxItems",
    "additionalProperties",
    "maxProperties",
    "propertyNames",
    "properties",
    "required",
}
_ANNOTATIONS = {"description", "default", "examples"}  # on a clash, the outer one (the argument's own) wins


def published_input(schema: Mapping[str, Any]) -> Schema:
    return _rewrite(_inline_single_use(schema), output=False)


def published_output(schema: Mapping[str, Any]) -> Schema:
    root = schema.get("description")
    out = cast(Schema, _rewrite(_inline_single_use(schema), output=True))
    return {**out, "description": root} if root is not None else out


def _inline_single_use(schema: Mapping[str, Any]) -> Schema:
    defs = cast(Mapping[str, Any], schema.get("$defs", {}))
    text = json.dumps(schema)
    once = {
        name
        for name, definition in defs.items()
        if text.count(json.dumps(_LOCAL + name)) == 1 and json.dumps(_LOCAL + name) not in json.dumps(definition)
    }
    if not once:
        return dict(schema)

    def place(node: Any) -> Any:
        if isinstance(node, list):
            return [place(item) for item in cast(list[Any], node)]
        if not isinstance(node, Mapping):
            return node
        items = cast(Mapping[str, Any], node)
        ref = items.get("$ref")
        if isinstance(ref, str) and ref.removeprefix(_LOCAL) in once:
            siblings = {key: place(value) for key, value in items.items() if key != "$ref"}
            return {**cast(Schema, place(defs[ref.removeprefix(_LOCAL)])), **siblings}
        return {key: place(value) for key, value in items.items()}

    placed = cast(Schema, place({key: value for key, value in schema.items() if key != "$defs"}))
    kept = {name: place(definition) for name, definition in defs.items() if name not in once}
    return {**placed, "$defs": kept} if kept else placed


def _rewrite(node: Any, *, output: bool) -> Any:
    if not isinstance(node, Mapping):
        return node
    source = cast(Mapping[str, Any], node)
    out: Schema = {}
    for key, value in source.items():
        if key == "title" or (key == "additionalProperties" and value is True):
            continue
        if output and key in ("default", "format", "description", "required"):
            continue
        if key in _MAPS and isinstance(value, Mapping):
            out[key] = {name: _rewrite(sub, output=output) for name, sub in cast(Mapping[str, Any], value).items()}
        elif key in _LISTS and isinstance(value, list):
            out[key] = [_rewrite(sub, output=output) for sub in cast(list[Any], value)]
        elif key in _SINGLE:
            out[key] = _rewrite(value, output=output)
        else:
            out[key] = value
    if "anyOf" in out:
        out = _numbers_once(out)
    if "properties" in out and not output:
        required = set(cast(list[str], out.get("required", [])))
        properties = cast(Schema, out["properties"])
        out["properties"] = {
            name: (sub if name in required else _without_null_default(sub)) for name, sub in properties.items()
        }
    if output and "anyOf" in out:
        out = _nullable_as_type_array(out)
    return out


def _numbers_once(node: Schema) -> Schema:
    options = cast(list[Any], node["anyOf"])
    if {"type": "number"} in options and {"type": "integer"} in options:
        node["anyOf"] = [option for option in options if option != {"type": "integer"}]
    return node


def _without_null_default(node: Schema) -> Schema:
    if "default" not in node or node["default"] is not None:
        return node
    node = {key: value for key, value in node.items() if key != "default"}
    options = cast(list[Any] | None, node.get("anyOf"))
    if options is None or _NULL not in options:
        return node
    rest = [option for option in options if option != _NULL]
    if len(rest) != 1:
        node["anyOf"] = rest
        return node
    del node["anyOf"]
    (only,) = rest
    if set(only) & set(node) - _ANNOTATIONS:
        return {**node, "allOf": [only]}
    return {**cast(Schema, only), **node}


def _nullable_as_type_array(node: Schema) -> Schema:
    options = cast(list[Any], node["anyOf"])
    if len(options) != 2 or _NULL not in options:
        return node
    (other,) = [option for option in options if option != _NULL]
    kind = cast(Mapping[str, Any], other).get("type") if isinstance(other, Mapping) else None
    if not isinstance(kind, str) or not set(cast(Mapping[str, Any], other)) <= _MERGEABLE:
        return node  # a $ref or an enum (an enum must list null itself): left as it is
    outer = {key: value for key, value in node.items() if key != "anyOf"}
    if set(outer) & set(cast(Mapping[str, Any], other)) - _ANNOTATIONS:
        return node
    return {**cast(Schema, other), **outer, "type": [kind, "null"]}

"""Answers as text, and the scanner that finds another tenant's identifiers or content in them.

An answer to a caller of tenant T may carry T's marker and T's ids, and whatever the request
itself sent (an echoed id or query). Anything else that looks like an identifier is a leak: a
marker of another tenant (or of no tenant at all), a UUID that is not one of T's ids, another
tenant's slug or another tenant's principal.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp.types import TextContent, TextResourceContents

from tests.support.isolation.model import TenantState, World

MARKER = re.compile(r"tm[0-9a-f]{10}(?![0-9a-f])")
UUID_TEXT = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
MASK = "<SENT>"

Kind = Literal["tool", "resource", "prompt"]


@dataclass(frozen=True)
class Request:
    kind: Kind
    name: str  # the tool, the resource template or the prompt
    args: dict[str, Any]  # a resource read sends {"uri": ...}


@dataclass(frozen=True)
class Answer:
    error: bool
    text: str  # every text the caller got: contents, structured content as JSON, the error message
    data: Any = None  # a tool's structured content, a resource's parsed JSON; None for errors and prompts


async def send(client: Client, request: Request) -> Answer:
    """One request; protocol errors (MCPError) come back as error answers, like isError results."""
    try:
        if request.kind == "tool":
            result = await client.call_tool(request.name, request.args)
            texts = [c.text for c in result.content if isinstance(c, TextContent)]
            data = None if result.is_error else result.structured_content
            return Answer(result.is_error, " ".join(texts) + " " + json.dumps(result.structured_content), data)
        if request.kind == "resource":
            read = await client.read_resource(request.args["uri"])
            text = " ".join(c.text for c in read.contents if isinstance(c, TextResourceContents))
            return Answer(False, text, json.loads(text))
        prompt = await client.get_prompt(request.name, request.args)
        texts = [m.content.text for m in prompt.messages if isinstance(m.content, TextContent)]
        return Answer(False, "\n".join(texts))
    except MCPError as exc:
        return Answer(True, f"{exc.error.code} {exc.error.message}")


def sent_tokens(request: Request) -> list[str]:
    """The markers and UUIDs the request itself carried: an answer may echo them."""
    sent = json.dumps(request.args)
    return sorted({*MARKER.findall(sent), *(u.lower() for u in UUID_TEXT.findall(sent))}, key=len, reverse=True)


def masked(text: str, values: list[str]) -> str:
    for value in sorted(values, key=len, reverse=True):
        text = re.sub(re.escape(value), MASK, text, flags=re.IGNORECASE)
    return text


def leaks(world: World, me: TenantState, request: Request, answer: Answer) -> list[str]:
    """Another tenant's identifiers or content in `answer` (beyond what `request` sent)."""
    text = masked(answer.text, sent_tokens(request))
    found: list[str] = []
    for marker in sorted(set(MARKER.findall(text)) - {me.marker}):
        owner = world.owner_of(marker)
        found.append(f"marker {marker} of {f'tenant {owner.index}' if owner else 'no tenant of this run'}")
    mine = me.known_ids()
    for value in sorted({u.lower() for u in UUID_TEXT.findall(text)} - mine):
        owner = world.owner_of(value)
        found.append(f"id {value} of {f'tenant {owner.index}' if owner else 'no tenant of this run'}")
    for other in world.others(me):
        if other.slug in text:
            found.append(f"slug {other.slug} of tenant {other.index}")
        for principal in set(other.principals) - set(me.principals):
            if principal in text:
                found.append(f"principal {principal} of tenant {other.index}")
    return found

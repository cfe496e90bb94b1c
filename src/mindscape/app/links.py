"""Resource links in tool results: the resources a result mentions, as MCP `resource_link` content.

Next to the structured result (and its JSON text), so that a client can open or fetch what an
agent was given: each recalled or stored memory (memory://{id}), a task's campaign, parent task
and persona, a campaign's personas. Read from the structured result, in one place, for every
tool; the tools stay thin.

Only for clients on protocol 2025-06-18 or later: older ones (the Python SDK 1.3, say) do not
know the content type and would refuse the whole result.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

from mcp.types import ResourceLink
from mcp_types.version import is_version_at_least

SINCE = "2025-06-18"  # the revision that added resource_link content
JSON = "application/json"

Found = Iterable[tuple[str, str]]  # (kind, key): ("memory", "<uuid>"), ("persona", "ada")


def supported(protocol_version: str | None) -> bool:
    return protocol_version is not None and is_version_at_least(protocol_version, SINCE)


def resource_links(tool: str, structured: Mapping[str, Any] | None) -> list[ResourceLink]:
    """The links for `tool`'s structured result, each resource once, in the order mentioned."""
    finder = FINDERS.get(tool)
    if finder is None or structured is None:
        return []
    seen: dict[str, ResourceLink] = {}
    for kind, key in finder(structured):
        uri = f"{kind}://{key}"
        if uri not in seen:
            seen[uri] = ResourceLink(type="resource_link", uri=uri, name=kind, mime_type=JSON)
    return list(seen.values())


def _memory(result: Mapping[str, Any]) -> Found:
    yield "memory", str(result["id"])


def _recalled(result: Mapping[str, Any]) -> Found:
    for memory in cast(list[Mapping[str, Any]], result.get("memories") or []):
        yield "memory", str(memory["id"])


def _task(result: Mapping[str, Any] | None) -> Found:
    if result is None:
        return
    if result.get("campaign_id"):
        yield "campaign", str(result["campaign_id"])
    if result.get("parent_id"):
        yield "task", str(result["parent_id"])
    if result.get("persona"):
        yield "persona", str(result["persona"])


def _claimed(result: Mapping[str, Any]) -> Found:
    return _task(cast(Mapping[str, Any] | None, result.get("task")))


def _campaign(result: Mapping[str, Any]) -> Found:
    for slug in cast(list[str], result.get("personas") or []):
        yield "persona", slug


FINDERS: dict[str, Callable[[Mapping[str, Any]], Found]] = {
    "remember": _memory,
    "recall": _recalled,
    "get_task": _task,
    "create_task": _task,
    "update_task": _task,
    "claim_next_task": _claimed,
    "get_campaign": _campaign,
    "create_campaign": _campaign,
    "update_campaign": _campaign,
}

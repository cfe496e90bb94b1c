"""`mindscape demo`: seed two tenants, then drive the real server over stdio with the MCP client.

Safe to run again: tenants are reused and personas upserted (the second run reports them
unchanged). The MCP client is imported only when the demo runs: importing it takes seconds,
and every `mindscape` command imports this module to register `demo`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from pydantic import SecretStr
from rich.console import Console
from rich.progress import Progress
from rich.text import Text

from mindscape.cli.common import ConfigOption, load, out, run
from mindscape.cli.model import pull_model
from mindscape.config.settings import Settings
from mindscape.database.pool import owner_connection
from mindscape.database.prepare import prepare
from mindscape.database.targets import Targets, redact
from mindscape.embeddings.base import ModelUnavailable
from mindscape.embeddings.factory import configured_spec, local_source
from mindscape.embeddings.registry import active_spec
from mindscape.errors import InvalidArgument, MindscapeError
from mindscape.memory.reembed import reembed
from mindscape.models.persona import PersonaIn
from mindscape.ops import personas as persona_ops
from mindscape.ops import tenants as tenant_ops
from mindscape.queries import tenants

if TYPE_CHECKING:
    from mcp import Client, StdioServerParameters
    from mcp.types import CallToolResult

DEMO_TENANT = "demo"
OTHER_TENANT = "demo-other"

DEMO_PERSONAS = [
    PersonaIn(
        slug="ada",
        name="Ada the Analyst",
        summary="Turns messy data into clear findings; careful with numbers and sources.",
        traits={"communication": {"tone": "precise", "verbosity": "low"}, "skills": ["sql", "statistics"]},
        instructions="You are a data analyst. State assumptions, cite the query behind every number.",
        tags=["analytics", "research"],
    ),
    PersonaIn(
        slug="basil",
        name="Basil from Support",
        summary="Friendly first-line customer support who resolves billing and login problems.",
        traits={"communication": {"tone": "warm", "verbosity": "medium"}, "escalation": {"after_minutes": 30}},
        instructions="Greet the customer by name, confirm the problem, solve it or escalate with a summary.",
        tags=["support", "customer"],
    ),
    PersonaIn(
        slug="cora",
        name="Cora the Coach",
        summary="Encouraging writing coach who gives concrete, kind feedback on drafts.",
        traits={"communication": {"tone": "warm", "verbosity": "high"}, "focus": "structure"},
        instructions="Praise one real strength, then give at most three specific improvements.",
        tags=["writing", "education"],
    ),
    PersonaIn(
        slug="dex",
        name="Dex the SRE",
        summary="Calm site-reliability engineer for incidents, security patches and postmortems.",
        traits={"communication": {"tone": "calm", "verbosity": "low"}, "on_call": True},
        instructions="Stabilise first, explain later. Write blameless postmortems.",
        tags=["ops", "security"],
    ),
    PersonaIn(
        slug="eli",
        name="Eli the Editor",
        summary="Copy editor who tightens prose and enforces the house style guide.",
        traits={"communication": {"tone": "direct", "verbosity": "low"}, "style_guide": "house"},
        instructions="Fix grammar and clarity; never change the author's meaning.",
        tags=["writing"],
    ),
]

# Same slug as a demo persona on purpose: a slug taken in one tenant is free in another.
OTHER_PERSONAS = [
    PersonaIn(
        slug="ada",
        name="Ada of the Other Tenant",
        summary="A different Ada, owned by another tenant.",
        traits={"communication": {"tone": "formal"}},
        instructions="Answer formally.",
        tags=["other"],
    ),
    PersonaIn(slug="zed", name="Zed", summary="Only the other tenant has Zed.", tags=["other"]),
]


DEMO_MEMORIES: list[dict[str, Any]] = [
    {"content": "Ana (ana@example.com) prefers email over phone calls", "persona": "basil", "kind": "preference"},
    {
        "content": "Ana's invoice #1042 was paid twice; refund approved on 3 Nov",
        "persona": "basil",
        "kind": "event",
        "metadata": {"customer": "ana"},
    },
    {"content": "Invoices are issued on the first business day of each month", "kind": "fact"},
    {"content": "Quarterly report drafts are due two weeks before the board meeting", "persona": "ada", "kind": "fact"},
    {"content": "The customer prefers email over phone calls", "persona": "basil", "kind": "preference"},
]
PARAPHRASE = "is it better to ring or to write to this client?"  # no word in common with the memory it should find


async def _ensure_tenant(targets: Targets, slug: str, name: str) -> None:
    try:
        await tenant_ops.create_tenant(targets, slug=slug, name=name)
    except InvalidArgument:
        await tenant_ops.set_tenant_status(targets, slug=slug, status="active")


def _server(targets: Targets, tenant: str, embedding: dict[str, str]) -> StdioServerParameters:
    from mcp import StdioServerParameters

    env = {k: v for k, v in os.environ.items() if not k.startswith("MINDSCAPE_")}
    env |= {"MINDSCAPE_DATABASE_URL": targets.runtime, "MINDSCAPE_TENANT": tenant, **embedding}
    return StdioServerParameters(command=sys.executable, args=["-m", "mindscape", "serve"], env=env)


def _embedding_env(settings: Settings, model_dir: Path | None) -> dict[str, str]:
    """The demo's embedding settings for its servers (a config file or flags would not reach them)."""
    env = {"MINDSCAPE_DATA_DIR": str(settings.data_dir)}  # the model cache is under it
    for name in type(settings).model_fields:
        value: object = getattr(settings, name)
        if name.startswith("embedding_") and value is not None:
            shown = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
            env[f"MINDSCAPE_{name.upper()}"] = shown
    if model_dir is not None:
        env["MINDSCAPE_EMBEDDING_MODEL_PATH"] = str(model_dir)  # found or pulled: the servers load it from there
    elif settings.embedding_provider == "local":
        env["HF_HUB_OFFLINE"] = "1"  # the demo tried already: the servers go on without the model at once
    return env


async def _local_model(settings: Settings, console: Console) -> tuple[Path | None, str | None]:
    """The local model's directory (pulled with a progress bar if need be), or None and how to get it."""
    if settings.embedding_provider != "local":
        return None, None
    source = local_source(settings)
    try:
        return await anyio.to_thread.run_sync(lambda: pull_model(source, Console(stderr=True))), None
    except ModelUnavailable as exc:
        console.print(Text.assemble(("semantic search is unavailable: ", "yellow"), str(exc)), soft_wrap=True)
        return None, GET_THE_MODEL


GET_THE_MODEL = (
    "to recall by meaning, get the model: `uv run mindscape model pull` (needs the model hub), or set "
    "MINDSCAPE_EMBEDDING_MODEL_PATH to a directory holding all-MiniLM-L6-v2 (ONNX), then run the demo again"
)


async def _onto_configured_model(settings: Settings, targets: Targets, console: Console) -> None:
    """A demo tenant from an older run may still be on another model (e.g. the old hashing default): move it."""
    async with owner_connection(targets.owner) as conn:
        own = await tenants.get_settings_text(conn, slug=DEMO_TENANT)
    target = configured_spec(settings)
    current = active_spec(own or {}, target)
    if current == target:
        return
    report = await reembed(
        settings, targets, tenant_slug=DEMO_TENANT, target=target, batch=64, progress=Progress(disable=True)
    )
    console.print(Text(f"moved tenant {DEMO_TENANT} from {report.previous} to {report.target}"), soft_wrap=True)


def _paraphrase_verdict(result: CallToolResult) -> Text:
    found = _data(result)
    memories: list[dict[str, Any]] = found.get("memories") or []
    if found.get("note"):
        return Text.assemble(("✗ no memory shares a word with the question, and ", "yellow"), str(found["note"]))
    if memories and "email over phone" in str(memories[0].get("content")):
        return Text.assemble(
            ("✓ found by meaning: ", "green"), f"{PARAPHRASE!r} shares no word with {memories[0]['content']!r}"
        )
    return Text("✗ the paraphrase did not find the email preference first", style="yellow")


def _data(result: CallToolResult) -> dict[str, Any]:
    return result.structured_content or {}


class _Driver:
    """Prints each request and its result the way an agent would see them."""

    def __init__(self, client: Client, console: Console) -> None:
        self.client = client
        self.console = console

    async def tool(self, name: str, args: dict[str, Any]) -> CallToolResult:
        from mcp.types import TextContent

        self.console.print(f"\n[bold cyan]→ {name}[/bold cyan] {json.dumps(args)}")
        result = await self.client.call_tool(name, args)
        if result.is_error:
            text = " ".join(c.text for c in result.content if isinstance(c, TextContent))
            self.console.print(Text("  isError: ", style="yellow") + Text(text))
        else:
            self.console.print_json(data=result.structured_content, indent=2)
        return result


CAMPAIGN = "Billing clean-up"


async def _work_queue(d: _Driver) -> None:
    """A campaign, two tasks (idempotent, so a second run finds them) and one claim-and-finish."""
    active = _data(await d.client.call_tool("list_campaigns", {"status": "active"}))["campaigns"]
    existing = [c for c in active if c["name"] == CAMPAIGN]
    if existing:
        campaign_id = existing[0]["id"]
    else:
        created = await d.tool(
            "create_campaign", {"name": CAMPAIGN, "objective": "Refund double payments", "status": "active"}
        )
        campaign_id = _data(created)["id"]
    for key, title, priority in (("refund-1042", "Refund Ana's invoice #1042", 0), ("audit-q3", "Audit Q3", 3)):
        await d.tool(
            "create_task",
            {"title": title, "campaign": campaign_id, "priority": priority, "persona": "basil", "idempotency_key": key},
        )
    claimed = _data(await d.tool("claim_next_task", {"campaign": campaign_id}))
    task = claimed.get("task")
    if task:
        done = {"id": task["id"], "expected_version": task["version"], "status": "done", "result": {"ok": True}}
        await d.tool("update_task", done)
        await d.tool("update_task", done)  # the same version again: a conflict result, not a lost update
    await d.tool("get_campaign", {"id": campaign_id})


async def run_demo(settings: Settings, console: Console) -> None:
    from mcp import Client
    from mcp.types import TextContent, TextResourceContents

    started = time.perf_counter()
    targets = await prepare(settings)
    where = "embedded PostgreSQL in " + str(settings.data_dir) if targets.embedded else redact(targets.runtime)
    console.print(f"[bold]Mindscape demo[/bold] on {where}")
    for tenant, personas in ((DEMO_TENANT, DEMO_PERSONAS), (OTHER_TENANT, OTHER_PERSONAS)):
        await _ensure_tenant(targets, tenant, f"Demo tenant {tenant}")
        counts = await persona_ops.import_personas(
            settings, targets, tenant_slug=tenant, items=personas, source="mindscape demo"
        )
        console.print(f"tenant {tenant}: {dict(counts)}")

    model_dir, missing = await _local_model(settings, console)
    if model_dir is not None or settings.embedding_provider != "local":
        await _onto_configured_model(settings, targets, console)
    embedding = _embedding_env(settings, model_dir)

    console.print(f"\n[bold]Serving tenant {DEMO_TENANT!r} over stdio[/bold] (python -m mindscape serve)")
    async with Client(_server(targets, DEMO_TENANT, embedding)) as client:
        d = _Driver(client, console)
        tools = await client.list_tools()
        console.print("tools: " + ", ".join(t.name for t in tools.tools))
        await d.tool("list_personas", {})
        await d.tool("list_personas", {"query": "security incidents"})
        await d.tool("list_personas", {"trait": {"path": "communication.tone", "equals": "warm"}})
        page = await d.tool("list_personas", {"tags": ["writing"], "limit": 1})
        cursor: str | None = _data(page).get("next_cursor")
        await d.tool("list_personas", {"tags": ["writing"], "limit": 1, "cursor": cursor})
        await d.tool("get_persona", {"slug": "ada"})
        console.print("\n[bold cyan]→ resources/read[/bold cyan] persona://basil")
        resource = await client.read_resource("persona://basil")
        for content in resource.contents:
            if isinstance(content, TextResourceContents):
                console.print_json(content.text)
        console.print("\n[bold cyan]→ prompts/get[/bold cyan] persona {slug: cora, task: ...}")
        prompt = await client.get_prompt("persona", {"slug": "cora", "task": "Review my cover letter."})
        for message in prompt.messages:
            if isinstance(message.content, TextContent):
                console.print(message.content.text, highlight=False)
        await d.tool("get_persona", {"slug": "nobody"})
        await d.tool("get_persona", {"slug": "Not A Slug!"})
        demo_ada = await client.call_tool("get_persona", {"slug": "ada"})
        for memory in DEMO_MEMORIES:
            await d.tool("remember", memory)
        await d.tool("recall", {"query": "does Ana prefer email or phone?", "k": 3})
        paraphrase = await d.tool("recall", {"query": PARAPHRASE, "k": 3})
        console.print(_paraphrase_verdict(paraphrase), soft_wrap=True)
        await d.tool("recall", {"query": "invoice", "mode": "keyword", "kinds": ["fact"]})
        console.print("\n[bold cyan]→ prompts/get[/bold cyan] persona {slug: basil, task: ..., recall: 2}")
        prompt = await client.get_prompt(
            "persona", {"slug": "basil", "task": "Reply to Ana about her invoice", "recall": "2"}
        )
        for message in prompt.messages:
            if isinstance(message.content, TextContent):
                console.print(message.content.text, highlight=False, markup=False)
        await d.tool("remember", {"content": ""})
        await _work_queue(d)

    console.print(f"\n[bold]Isolation check: serving tenant {OTHER_TENANT!r}[/bold]")
    async with Client(_server(targets, OTHER_TENANT, embedding)) as client:
        d = _Driver(client, console)
        listed = await d.tool("list_personas", {})
        foreign = await d.tool("get_persona", {"slug": "basil"})
        other_ada = await d.tool("get_persona", {"slug": "ada"})
        foreign_memories = await d.tool("recall", {"query": "Ana prefers email invoice"})
        foreign_tasks = await d.tool("list_tasks", {})
    seen: set[str] = {p["slug"] for p in _data(listed)["personas"]}
    problems: list[str] = []
    if seen != {p.slug for p in OTHER_PERSONAS}:
        problems.append(f"{OTHER_TENANT} listed {sorted(seen)}")
    if not foreign.is_error:
        problems.append(f"{OTHER_TENANT} could read basil")
    if _data(foreign_tasks)["tasks"]:
        problems.append(f"{OTHER_TENANT} listed {DEMO_TENANT}'s tasks")
    if _data(foreign_memories)["memories"]:
        problems.append(f"{OTHER_TENANT} recalled {DEMO_TENANT}'s memories")
    if _data(other_ada).get("name") == _data(demo_ada).get("name"):
        problems.append(f"{OTHER_TENANT} got {DEMO_TENANT}'s ada")
    if problems:
        raise MindscapeError("isolation check FAILED: " + "; ".join(problems))
    console.print(
        f"[green]✓ tenant {OTHER_TENANT!r} sees none of {DEMO_TENANT!r}'s personas, memories or tasks[/green] "
        f"(demo finished in {time.perf_counter() - started:.1f} s)"
    )
    if missing is not None:
        console.print(Text.assemble(("note: ", "yellow"), missing), soft_wrap=True)


def demo(config: ConfigOption = None) -> None:
    """Start the embedded database, seed demo tenants and drive the real server over stdio."""
    settings = load(config)
    run(lambda: run_demo(settings, out))

"""`mindscape key create|list|revoke|rotate`: API keys for the HTTP transport.

Keys are administered through the owner connection. A new key goes to stdout alone (so
`KEY=$(mindscape key create ...)` works) and is never shown again: only its SHA-256 is stored.
Everything else goes to stderr.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated
from uuid import UUID

import typer
from rich.table import Column, Table
from rich.text import Text

from mindscape.cli.common import ConfigOption, JsonOption, err, load, out, print_json, print_table, row, run
from mindscape.database.prepare import prepare
from mindscape.models.api_key import ApiKey, Scope
from mindscape.ops import keys as key_ops
from mindscape.tenancy import keys

key_app = typer.Typer(help="API keys for `serve --transport http`: create, list, revoke, rotate.", no_args_is_help=True)

MAX_DAYS = 3650
_EXPIRES_RE = re.compile(r"^(\d{1,5})([hdw])$")
_UNITS = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}

ExpiresOption = Annotated[
    str | None,
    typer.Option("--expires", help="Lifetime, e.g. 12h, 90d or 52w [default: never expires].", show_default=False),
]
KeyIdArgument = Annotated[
    str,
    typer.Argument(
        metavar="ID",
        help="Key id from `mindscape key list` (or a unique start of it), or the key's prefix (msk_<prefix>).",
    ),
]
_KEY_REF_RE = re.compile(r"^(?:[0-9a-f][0-9a-f-]{3,35}|msk_[0-9a-f]{12}(?:_.*)?)$")


def parse_lifetime(value: str | None) -> timedelta | None:
    if value is None:
        return None
    match = _EXPIRES_RE.match(value.strip())
    lifetime = _UNITS[match.group(2)] * int(match.group(1)) if match else None
    if lifetime is None or not timedelta(hours=1) <= lifetime <= timedelta(days=MAX_DAYS):
        raise typer.BadParameter(
            f"{value!r} is not a lifetime from 1h to {MAX_DAYS}d, e.g. 12h, 90d or 52w", param_hint="--expires"
        )
    return lifetime


def _describe(key: ApiKey) -> str:
    expiry = f"expires {key.expires_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC" if key.expires_at else "never expires"
    return f"{key.scope} key {key.id} ({keys.PREFIX}{key.prefix}_…) for tenant {key.tenant_slug}, {expiry}"


def _show_once(created: tuple[ApiKey, str], verb: str) -> None:
    key, token = created
    err.print(Text(f"{verb} {_describe(key)}"), soft_wrap=True)
    err.print(Text("store this key now: it is shown only once, and only its hash is kept"), soft_wrap=True)
    out.print(Text(token), soft_wrap=True)


@key_app.command("create")
def create(
    tenant: Annotated[str, typer.Option("--tenant", help="Tenant slug the key acts for.", show_default=False)],
    scope: Annotated[Scope, typer.Option("--scope", help="read: read tools only. write: every tool.")],
    expires: ExpiresOption = None,
    name: Annotated[str, typer.Option("--name", help="A label for operators, e.g. the agent's name.")] = "",
    persona: Annotated[
        str | None, typer.Option("--persona", help="The persona the key acts as (sees its persona memories).")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Create a key for one tenant and scope; prints it once."""
    lifetime = parse_lifetime(expires)
    if len(name) > 200:
        raise typer.BadParameter("a name is at most 200 characters", param_hint="--name")
    settings = load(config)

    async def main() -> tuple[ApiKey, str]:
        targets = await prepare(settings)
        return await key_ops.create_key(
            targets, tenant_slug=tenant, name=name.strip(), scope=scope, lifetime=lifetime, persona=persona
        )

    _show_once(run(main), "created")


def _status(key: ApiKey, now: datetime) -> str:
    if key.revoked_at is not None:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= now:
        return "expired"
    return "active"


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if value else "-"


@key_app.command("list")
def list_keys(
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only this tenant's keys.", show_default=False)] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """List keys (never their secrets): id, tenant, name, scope, prefix, status and times (UTC)."""
    settings = load(config)

    async def main() -> list[ApiKey]:
        targets = await prepare(settings)
        return await key_ops.list_keys(targets, tenant_slug=tenant)

    found = run(main)
    now = datetime.now(UTC)
    if as_json:
        print_json([k.model_dump(mode="json") | {"status": _status(k, now)} for k in found])
        return
    fixed = [Column(h, no_wrap=True) for h in ("id", "tenant")]
    table = Table(
        *fixed,
        "name",
        *(Column(h, no_wrap=True) for h in ("scope", "prefix", "status", "created", "expires", "last used")),
    )
    for k in found:
        cells = (str(k.id), k.tenant_slug, k.name, k.scope, k.prefix, _status(k, now))
        table.add_row(*row(*cells, _when(k.created_at), _when(k.expires_at), _when(k.last_used_at)))
    print_table(table)
    if not found:
        out.print(Text("no API keys" + (f" for {tenant}" if tenant else "")))


def _key_ref(value: str) -> str:
    """A full id, a start of one (4+ characters) or a key prefix; which key it names is resolved later."""
    if not _KEY_REF_RE.match(value.strip().lower()):
        raise typer.BadParameter(
            f"{value!r} is not a key id, the start of one or a key prefix (msk_...); `mindscape key list` shows them",
            param_hint="ID",
        )
    return value


@key_app.command("revoke")
def revoke(key_id: KeyIdArgument, config: ConfigOption = None) -> None:
    """Revoke a key: requests with it are refused (401) from the next one on."""
    ref = _key_ref(key_id)
    settings = load(config)

    async def main() -> ApiKey:
        targets = await prepare(settings)
        return await key_ops.revoke_key(targets, key_id=await key_ops.resolve_key_id(targets, ref))

    out.print(Text(f"revoked {_describe(run(main))}"), soft_wrap=True)


@key_app.command("rotate")
def rotate(
    key_id: KeyIdArgument,
    expires: Annotated[
        str | None,
        typer.Option(
            "--expires", help="Lifetime of the new key [default: the old key's lifetime].", show_default=False
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Replace a key: a new one (same tenant, scope and name) is printed once; the old one is revoked."""
    ref = _key_ref(key_id)
    lifetime = parse_lifetime(expires)
    settings = load(config)

    async def main() -> tuple[UUID, tuple[ApiKey, str]]:
        targets = await prepare(settings)
        kid = await key_ops.resolve_key_id(targets, ref)
        return kid, await key_ops.rotate_key(targets, key_id=kid, lifetime=lifetime)

    kid, created = run(main)
    _show_once(created, f"revoked {kid}; created")

"""`mindscape doctor`: the effective configuration (secrets masked) and a check of everything it points at.

Each check prints `ok`, `warn` or `FAIL` and, for a problem, one line saying how to fix it
(`--json`: the same as one JSON object). Only FAIL sets exit code 1: a warning (lexical
embeddings, a missing HNSW index) degrades quality or speed but the service still works.
Nothing is changed: doctor only reads, so it is safe to run against production; it connects
as the runtime role, exactly like `serve`. The embedding check embeds one test text.
"""

from __future__ import annotations

import typer
from rich.text import Text

from mindscape.cli.common import ConfigOption, JsonOption, out, print_json, run
from mindscape.config.settings import Settings, load_settings
from mindscape.errors import MindscapeError
from mindscape.ops.doctor import Check, database_checks, embedding_check, masked_config
from mindscape.transports.http.auth.jwks import JwksCache, JwksUnavailable

_STYLES = {"ok": "green", "warn": "yellow", "FAIL": "red"}


# Here rather than in ops/doctor.py: it needs the HTTP transport's JWKS cache, above ops/.
async def oauth_check(settings: Settings) -> Check:
    """JWT mode: which key source, and whether the JWKS answers with signing keys."""
    if settings.oauth_issuer is None:
        return Check("oauth", "ok", "off: API keys only (set oauth_issuer to accept JWTs)")
    where = f"issuer {settings.oauth_issuer}, audience {settings.oauth_audience}"
    where += f", tenant claim {settings.oauth_tenant_claim}"
    if settings.oauth_jwks_url is None:
        return Check(
            "oauth",
            "warn",
            f"{where}; HS256 shared secret",
            "a shared secret is for development only: set oauth_jwks_url to your IdP's JWKS and remove it",
        )
    try:
        count = await JwksCache(settings.oauth_jwks_url).load()
    except JwksUnavailable as exc:
        return Check("oauth", "FAIL", f"{where}; {exc}", "check oauth_jwks_url and that this host can reach it")
    return Check("oauth", "ok", f"{where}; {count} signing key(s) at {settings.oauth_jwks_url}")


def _report_json(configuration: list[tuple[str, str]] | None, checks: list[Check]) -> None:
    print_json(
        {
            "ok": not any(c.status == "FAIL" for c in checks),
            "configuration": dict(configuration) if configuration is not None else None,
            "checks": checks,
        }
    )


def doctor(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Print the effective configuration (secrets masked) and check the database, embeddings and OAuth."""
    try:
        settings = load_settings(config)
    except MindscapeError as exc:
        fix = "correct the setting named above (config file, MINDSCAPE_* or flags)"
        if as_json:
            _report_json(None, [Check("settings", "FAIL", str(exc), fix)])
            raise typer.Exit(1) from None
        # A report line on stdout like every other check, not `error:` on stderr.
        out.print(Text.assemble(("FAIL", "red"), f"  settings: {exc}"), soft_wrap=True)
        out.print(Text(f"      fix: {fix}"))
        raise typer.Exit(1) from None
    configuration = masked_config(settings)

    async def run_checks() -> list[Check]:
        return [*await database_checks(settings), await embedding_check(settings), await oauth_check(settings)]

    if as_json:
        checks = run(run_checks)
        _report_json(configuration, checks)
        if any(c.status == "FAIL" for c in checks):
            raise typer.Exit(1)
        return
    out.print(Text("configuration:"))
    for name, shown in configuration:
        out.print(Text(f"  {name} = {shown}"), soft_wrap=True)
    out.print(Text("checks:"))
    checks = run(run_checks)
    for check in checks:
        # Text, not markup: details echo URLs and server messages.
        out.print(
            Text.assemble((f"{check.status:<4}", _STYLES[check.status]), f"  {check.name}: {check.detail}"),
            soft_wrap=True,
        )
        if check.fix is not None:
            out.print(Text(f"      fix: {check.fix}"), soft_wrap=True)
    if any(c.status == "FAIL" for c in checks):
        raise typer.Exit(1)

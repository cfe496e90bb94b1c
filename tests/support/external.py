"""The tests against an external database instead of the embedded one (docs/development.md).

`MINDSCAPE_TEST_DATABASE_URL` (the runtime role, `mindscape_app`) and `MINDSCAPE_TEST_OWNER_URL`
(the migrator, as an operator sets it up: not a superuser) name a database already migrated to
the latest revision (`mindscape db upgrade`); `MINDSCAPE_TEST_DATABASE_POOLER=transaction` says the
runtime URL is PgBouncer in transaction mode. `python -m tests.support.external_db start` sets up
exactly that and prints the variables, with `MINDSCAPE_TEST_INSPECT_URL`: a superuser the tests'
own checks read every tenant's rows with (the migrator, like the runtime role, is under forced
row-level security and sees none, so a check reading through it would pass with nothing written).
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from mindscape.database import migrate
from mindscape.database.pool import owner_connection
from mindscape.database.targets import Targets

RUNTIME_VAR = "MINDSCAPE_TEST_DATABASE_URL"
OWNER_VAR = "MINDSCAPE_TEST_OWNER_URL"
POOLER_VAR = "MINDSCAPE_TEST_DATABASE_POOLER"
INSPECT_VAR = "MINDSCAPE_TEST_INSPECT_URL"
# The superuser URL for each external owner URL, kept when the environment is read: conftest
# clears every MINDSCAPE_ variable right after, so that no test sees the developer's settings.
_inspect_for_owner: dict[str, str] = {}


def external_targets(environ: Mapping[str, str]) -> Targets | None:
    """The external database the environment names, or None for the embedded one."""
    runtime = environ.get(RUNTIME_VAR)
    if not runtime:
        return None
    owner = environ.get(OWNER_VAR)
    if not owner:
        raise pytest.UsageError(f"{RUNTIME_VAR} is set but {OWNER_VAR} is not: the tests need both URLs")
    inspect = environ.get(INSPECT_VAR)
    if not inspect:
        raise pytest.UsageError(
            f"{RUNTIME_VAR} is set but {INSPECT_VAR} is not: the tests read rows outside row-level "
            "security with a superuser URL (`python -m tests.support.external_db start` prints it)"
        )
    _inspect_for_owner[owner] = inspect
    pooler = environ.get(POOLER_VAR, "none")
    if pooler not in ("none", "transaction"):
        raise pytest.UsageError(f"{POOLER_VAR} must be none or transaction, not {pooler!r}")
    return Targets(runtime=runtime, owner=owner, embedded=False, pooled=pooler == "transaction")


def inspect_url(targets: Targets) -> str:
    """Where the tests read every tenant's rows, outside row-level security: the embedded owner
    is a superuser; against an external database, the superuser URL of INSPECT_VAR."""
    if targets.embedded:
        return targets.owner
    return _inspect_for_owner[targets.owner]  # external_targets refused to start without it


async def check_at_head(targets: Targets) -> None:
    """Stop the run in one line unless the external schema is at the latest revision."""
    async with owner_connection(targets.owner) as conn:
        revision = await migrate.current_revision(conn)
    if revision != migrate.head_revision():
        pytest.exit(
            f"the external test database is at revision {revision or 'none'}, not {migrate.head_revision()}: "
            "run `uv run mindscape db upgrade` with its owner URL first",
            returncode=4,
        )


def skip_for(targets: Targets, items: list[pytest.Item]) -> None:
    """Against an external database skip the tests marked `embedded_only(reason)`, and through
    a transaction pooler those marked `not_pooled(reason)`, each with its reason."""
    for item in items:
        for name, applies, where in (
            ("embedded_only", True, "external database"),
            ("not_pooled", targets.pooled, "through PgBouncer (transaction mode)"),
        ):
            marker = item.get_closest_marker(name)
            if applies and marker is not None:
                item.add_marker(pytest.mark.skip(reason=f"{where}: {marker.args[0]}"))

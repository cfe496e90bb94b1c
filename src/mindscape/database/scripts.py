"""A write of several statements that runs as one statement (tenancy.one_statement makes it a function)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg


@dataclass(frozen=True)
class Script:
    """plpgsql statements over the parameters $1.. (of the SQL types `parameters`, "type, ...") and the
    variables `declare` declares ("name type;" lines), ending with `RETURN QUERY` of rows shaped
    `returns` ("name type, ...")."""

    parameters: str
    returns: str
    body: str
    declare: str = ""


class ScriptRunner(Protocol):
    """What the query function of a one-script write uses: tenancy.one_statement's OneWrite."""

    async def run(self, script: Script, *args: Any, seen: Mapping[str, Any]) -> list[asyncpg.Record] | None: ...


def literal(sql: str) -> str:
    """`sql` as a string literal, for a script that EXECUTEs a statement kept as a constant."""
    return "'" + sql.replace("'", "''") + "'"

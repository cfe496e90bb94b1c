"""The `mindscape` command as a real process on an embedded data dir of its own, as a user runs it.

No database URL: each command starts (or joins) the embedded PostgreSQL in the data dir and,
being the last user, stops it again. The shared model's path is the one setting kept from the
test environment, so no server reaches for the model hub.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

MINDSCAPE = [sys.executable, "-m", "mindscape"]


def embedded_env(data_dir: Path, log_level: str = "WARNING") -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith("MINDSCAPE_")}
    model = os.environ.get("MINDSCAPE_EMBEDDING_MODEL_PATH")
    extra = {"MINDSCAPE_EMBEDDING_MODEL_PATH": model} if model else {}
    return keep | extra | {"MINDSCAPE_DATA_DIR": str(data_dir), "MINDSCAPE_LOG_LEVEL": log_level}


def run_mindscape(data_dir: Path, *args: str, log_level: str = "WARNING") -> subprocess.CompletedProcess[str]:
    """A command as an operator runs it (default log level: only problems reach stderr)."""
    return subprocess.run(
        [*MINDSCAPE, *args],
        env=embedded_env(data_dir, log_level),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=180,  # a hang guard, not an assertion
        check=False,
    )


def postmaster(data_dir: Path) -> int | None:
    """The pid in postmaster.pid while the embedded server runs (the file goes when it stops)."""
    try:
        return int((data_dir / "pgdata" / "postmaster.pid").read_text().split()[0])
    except FileNotFoundError:
        return None

"""Where uv is: the tests run the README's `uv ...` commands and build throwaway environments with it."""

from __future__ import annotations

import os
import shutil


def uv_binary() -> str:
    """`uv run` tells its children where uv is (UV); else uv on PATH. The README needs uv, so must the tests."""
    found = os.environ.get("UV") or shutil.which("uv")
    assert found, "uv is not installed: https://docs.astral.sh/uv/ (.ci/run installs it)"
    return found

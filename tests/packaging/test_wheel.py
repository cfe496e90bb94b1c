"""`uv build` makes a wheel that installs into a fresh environment and runs `mindscape demo` there.

The environment gets the locked versions of the dependencies (from uv's cache when it has
them) and nothing from this checkout but the wheel: a file missing from the wheel (migrations,
the licence, a module) fails here, not for the first user of the published package.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.support.tenants import SHARED_MODEL
from tests.support.uv import uv_binary


def _run(*command: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    assert done.returncode == 0, (
        f"{command[:3]} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    return done.stdout


@pytest.fixture(scope="module")
def wheel(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    _run(uv_binary(), "build", "--wheel", "--out-dir", out, cwd=repo_root)
    (built,) = out.glob("mindscape_mcp-*.whl")
    return built


def test_the_wheel_carries_the_package_data_and_metadata(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(f"{info}/METADATA").decode()
        scripts = archive.read(f"{info}/entry_points.txt").decode()
    assert f"{info}/licenses/LICENSE" in names
    assert "License-Expression: MIT" in metadata
    assert "mcp-name: io.github.mindscape-mcp/mindscape" in metadata  # the registry reads it from PyPI
    assert "mindscape = mindscape.cli:main" in scripts
    assert "mindscape-mcp = mindscape.cli:main" in scripts
    assert "mindscape/_migrations/env.py" in names
    assert any(n.startswith("mindscape/_migrations/versions/") and n.endswith(".py") for n in names)
    assert not any(n.startswith("tests/") for n in names)


def test_the_wheel_installs_into_a_fresh_venv_and_runs_the_demo(wheel: Path, repo_root: Path, tmp_path: Path) -> None:
    uv = uv_binary()
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(
        _run(uv, "export", "--frozen", "--no-dev", "--no-hashes", "--no-emit-project", cwd=repo_root)
    )
    venv = tmp_path / "venv"
    _run(uv, "venv", "--quiet", "--python", sys.executable, venv)
    python = venv / "bin" / "python"
    _run(uv, "pip", "install", "--quiet", "--python", python, "-r", requirements, wheel)

    # Nothing of this checkout on the way: a clean environment, run from an empty directory.
    env = {
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "MINDSCAPE_DATA_DIR": str(tmp_path / "data"),
        "MINDSCAPE_EMBEDDING_MODEL_PATH": str(SHARED_MODEL),
        "HF_HUB_OFFLINE": "1",
    }
    where = _run(python, "-c", "import mindscape; print(mindscape.__file__)", cwd=tmp_path, env=env)
    assert where.startswith(str(venv)), where
    assert "Usage: mindscape [OPTIONS] COMMAND" in _run(venv / "bin" / "mindscape-mcp", "--help", cwd=tmp_path, env=env)
    demo = _run(venv / "bin" / "mindscape", "demo", cwd=tmp_path, env=env)
    assert "sees none of 'demo''s personas, memories or tasks" in demo
    assert not (tmp_path / "data" / "pgdata" / "postmaster.pid").exists()  # the demo stopped its database

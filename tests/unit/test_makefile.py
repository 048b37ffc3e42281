"""The Makefile's install commands on an interpreter without pip of its own (#20 items 1, 2).

``make demo`` and ``make install`` create ``.venv`` without ensurepip and install into it
with the interpreter's pip (``pip --python``). A Python with the venv module but no pip
(Debian's python3 without python3-pip) must still get a working ``.venv``, as before the
lock: the venv then gets pip from ensurepip. Checked with ``make -n`` (the commands, no
install) against a real pip-less interpreter.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _dry_run(tmp_path: Path, python: str, target: str) -> str:
    for name in ("Makefile", "pyproject.toml", "constraints.txt"):
        shutil.copy(ROOT / name, tmp_path / name)
    # The interpreter's directory first on PATH: PYTHON may be a bare name (python3.11).
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    make = shutil.which("make") or "make"
    result = subprocess.run(  # noqa: S603 - make -n (print only) on a copy of our Makefile
        [make, "-n", target, f"PYTHON={python}"], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def pipless_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real interpreter with the venv module and ensurepip, but no pip module."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    home = tmp_path_factory.mktemp("nopip")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(home)],  # noqa: S603
                   check=True, timeout=120)
    python = str(home / "bin" / "python")
    assert subprocess.run([python, "-m", "pip", "--version"],  # noqa: S603 - our venv's
                          capture_output=True, check=False).returncode != 0
    return python


@pytest.mark.parametrize("target", ["demo", "install"])
def test_an_interpreter_without_pip_gets_a_venv_with_pip(
        pipless_python: str, tmp_path: Path, target: str) -> None:
    """Before: ``<python> -m pip --python .venv/bin/python install ...`` failed with
    "No module named pip"."""
    commands = _dry_run(tmp_path, pipless_python, target)
    assert f"{pipless_python} -m pip" not in commands, commands
    assert "--without-pip" not in commands, commands
    assert ".venv/bin/python -m pip install" in commands, commands


@pytest.mark.parametrize("by_name", [False, True])
def test_an_interpreter_with_pip_skips_ensurepip(tmp_path: Path, by_name: bool) -> None:
    """By name too (PYTHON=python3.11, the default): before, pip --python needed a path
    there, so the check failed and every venv got ensurepip's pip (10 s more)."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    if subprocess.run([sys.executable, "-m", "pip", "--python", sys.executable, "--version"],
                      capture_output=True, check=False).returncode != 0:
        pytest.skip("this interpreter's pip cannot install into another one (pip --python)")
    python = Path(sys.executable).name if by_name else sys.executable
    commands = _dry_run(tmp_path, python, "demo")
    assert "--without-pip" in commands, commands
    assert f"{python} -m pip --python .venv/bin/python install" in commands, commands

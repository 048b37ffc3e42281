"""A process that never closes its managers still exits (aiosqlite's thread is a daemon)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.faults.conftest import PgTarget

SCRIPT = """
import asyncio, sys
from aegis_tortoise import DatabaseManager

async def main() -> None:
    db = DatabaseManager(sys.argv[1], models=["aegis_tortoise.examples.models"])
    async with db.session() as session:
        assert (await session.execute("SELECT 1")).scalar() == 1
    print("ran, not closed", flush=True)  # no await db.close()

asyncio.run(main())
"""


def _run(url: str, tmp_path: Path) -> float:
    script = tmp_path / "forgets_close.py"
    script.write_text(SCRIPT, encoding="utf-8")
    start = time.monotonic()
    try:
        done = subprocess.run([sys.executable, str(script), url], capture_output=True,  # noqa: S603
                              text=True, timeout=10, check=False,
                              cwd=Path(__file__).resolve().parents[2])
    except subprocess.TimeoutExpired:
        pytest.fail("the process did not exit within 10 s after asyncio.run returned")
    elapsed = time.monotonic() - start
    assert done.returncode == 0, done.stderr
    assert "ran, not closed" in done.stdout
    return elapsed


@pytest.mark.parametrize("url", ["sqlite://:memory:", "sqlite+aiosqlite:///{tmp}/file.db"])
def test_unclosed_sqlite_manager_does_not_hang_the_interpreter(url: str, tmp_path: Path) -> None:
    elapsed = _run(url.format(tmp=tmp_path), tmp_path)
    print(f"unclosed sqlite manager: process exited in {elapsed:.2f} s")
    assert elapsed < 5


def test_unclosed_postgres_manager_does_not_hang_the_interpreter(pg_target: PgTarget,
                                                                 tmp_path: Path) -> None:
    elapsed = _run(pg_target.url(), tmp_path)
    assert elapsed < 5

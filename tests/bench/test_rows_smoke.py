"""bench/rows.py runs at a tiny size (not timed): its builder-equals-Tortoise check passes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PgServer

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.postgres]


def test_rows_smoke(pg_server: PgServer) -> None:
    proc = subprocess.run(  # noqa: S603 - our own script
        [sys.executable, str(ROOT / "bench" / "rows.py"), "--rows", "50", "--repeat", "2",
         "--runs", "1", "--pg-url", pg_server.admin_url],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| our row builder |" in proc.stdout
    assert "| Tortoise _init_from_db(**row) |" in proc.stdout

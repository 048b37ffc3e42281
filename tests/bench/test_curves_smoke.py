"""bench/curves.py still runs end to end at a tiny size (not timed), chart included."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PgServer

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def test_curves_smoke(pg_server: PgServer, tmp_path: Path) -> None:
    png = tmp_path / "curves.png"
    proc = subprocess.run(  # noqa: S603 - our own script
        [sys.executable, str(ROOT / "bench" / "curves.py"), "--sizes", "120,300",
         "--rounds", "1", "--no-readme", "--png", str(png), "--pg-url", pg_server.admin_url],
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| keyset page |" in proc.stdout
    assert "| update_many |" in proc.stdout
    assert png.stat().st_size > 1000

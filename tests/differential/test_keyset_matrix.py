"""The configuration matrix for keyset pages and ``iterate`` (issue #18, items 7 and 17).

``use_tz`` on and off x ``timezone`` UTC, Asia/Seoul, America/St_Johns x process ``TZ``
UTC and Asia/Seoul, on both backends: every full ``paginate_keyset`` walk and every
``iterate`` returns each matching row exactly once, in Tortoise's ``order_by`` order, and
ends. The process time zone is fixed when an interpreter starts, so each (backend, TZ) runs
:mod:`tests.differential.keyset_matrix` in a process of its own (the six settings inside).
``make fuzz`` (AEGIS_DIFF_PROFILE=fuzz) runs more rows and seeds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PgServer
from tests.differential.harness import CASES, PROFILE

ROOT = Path(__file__).resolve().parents[2]
RUNS = [(18, 24)] if PROFILE != "fuzz" else [(seed, 90) for seed in range(100, 106)]


@pytest.mark.parametrize("process_tz", ["UTC", "Asia/Seoul"])
def test_keyset_walks_under_every_time_configuration(backend: str, process_tz: str,
                                                     request: pytest.FixtureRequest) -> None:
    url = "sqlite://:memory:"
    if backend == "postgres":
        server: PgServer = request.getfixturevalue("pg_server")
        url = server.url_for(server.create_database(f"kz_{process_tz[:3].lower()}"))
    env = {**os.environ, "TZ": process_tz, "PYTHONPATH": str(ROOT),
           "DATABASE_CURSOR_SECRET": "matrix-secret-0123456789"}
    for seed, rows in RUNS:
        done = subprocess.run(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "tests.differential.keyset_matrix", "--backend", backend,
             "--url", url, "--seed", str(seed), "--rows", str(rows)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        result = json.loads(done.stdout.strip().splitlines()[-1])
        CASES[backend] += result["cases"]
        assert result["cases"] >= 2 * 6 * 10 * 3
        assert result["failures"] == [], "\n".join(result["failures"][:5])

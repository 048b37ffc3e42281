"""The configuration matrix for keyset pages and ``iterate`` (issue #18, items 7 and 17).

``use_tz`` on and off x ``timezone`` UTC, Asia/Seoul, America/St_Johns x process ``TZ``
UTC and Asia/Seoul, on both backends: every full ``paginate_keyset`` walk and every
``iterate`` returns each matching row exactly once, in Tortoise's ``order_by`` order, and
ends. The process time zone is fixed when an interpreter starts, so each process ``TZ``
runs :mod:`tests.differential.keyset_matrix` in a process of its own (the six settings
inside); the two run side by side. ``make fuzz`` (AEGIS_DIFF_PROFILE=fuzz) runs more rows
and seeds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PgServer
from tests.differential import keyset_matrix
from tests.differential.harness import CASES, PROFILE

ROOT = Path(__file__).resolve().parents[2]
PROCESS_TZ = ("UTC", "Asia/Seoul")
RUNS = [(18, 24)] if PROFILE != "fuzz" else [(seed, 90) for seed in range(100, 106)]


def test_keyset_walks_under_every_time_configuration(backend: str,
                                                     request: pytest.FixtureRequest) -> None:
    urls = dict.fromkeys(PROCESS_TZ, "sqlite://:memory:")
    if backend == "postgres":
        server: PgServer = request.getfixturevalue("pg_server")
        urls = {tz: server.url_for(server.create_database(f"kz_{i}"))
                for i, tz in enumerate(PROCESS_TZ)}
    for seed, rows in RUNS:
        running = {
            tz: subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [sys.executable, "-m", "tests.differential.keyset_matrix", "--backend",
                 backend, "--url", urls[tz], "--seed", str(seed), "--rows", str(rows)],
                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                env={**os.environ, "TZ": tz, "PYTHONPATH": str(ROOT),
                     "DATABASE_CURSOR_SECRET": "matrix-secret-0123456789"})
            for tz in PROCESS_TZ}
        for tz, process in running.items():
            out, err = process.communicate(timeout=300)
            assert process.returncode == 0, f"TZ={tz}: {err[-3000:]}"
            result = json.loads(out.strip().splitlines()[-1])
            CASES[backend] += result["cases"]
            # Each setting, ordering and filter set: a page walk and an iterate.
            assert result["cases"] == 2 * len(keyset_matrix.USE_TZ) * len(
                keyset_matrix.TIMEZONES) * len(keyset_matrix.ORDERINGS) * len(
                keyset_matrix.FILTERS)
            assert result["failures"] == [], "\n".join(result["failures"][:5])

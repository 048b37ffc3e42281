"""Issue 21 acceptance 2: the plain-Tortoise worker and its suite, unchanged, with
``from tortoise import Tortoise`` and with ``from aegis_tortoise import Tortoise``.

Each run is a separate pytest process on a sqlite file or a PostgreSQL database, with
``DROPIN_TORTOISE`` naming where ``Tortoise`` comes from; the reference run on plain
Tortoise never imports aegis_tortoise.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PgServer

ROOT = Path(__file__).resolve().parents[2]
IMPLEMENTATIONS = ["tortoise", "aegis_tortoise"]


def _run(args: list[str], module: str, db_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DROPIN_TORTOISE": module, "DROPIN_DB_URL": db_url}
    return subprocess.run(  # noqa: S603 - our own interpreter and test suite
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=300, check=False)


@pytest.mark.parametrize("module", IMPLEMENTATIONS)
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_worker_suite_passes_unchanged(module: str, backend: str, tmp_path: Path,
                                       request: pytest.FixtureRequest) -> None:
    if backend == "sqlite":
        db_url = f"sqlite://{tmp_path}/worker.db"
    else:
        server: PgServer = request.getfixturevalue("pg_server")
        name = server.create_database(f"worker_{IMPLEMENTATIONS.index(module)}")
        db_url = server.url_for(name).replace("postgresql://", "postgres://")
    which = _run(["-c", "import tests.dropin.worker.main as m; print(m.Tortoise.__module__)"],
                 module, db_url)
    assert which.stdout.strip() == ("aegis_tortoise._facade" if module == "aegis_tortoise"
                                    else "tortoise"), which.stderr
    suite = _run(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:aegis_tortoise",
                  "--confcutdir", str(ROOT / "tests" / "dropin"),
                  "tests/dropin/worker_tests"], module, db_url)
    assert suite.returncode == 0, suite.stdout[-4000:] + suite.stderr[-2000:]
    assert "14 passed" in suite.stdout, suite.stdout[-2000:]

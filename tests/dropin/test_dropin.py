"""The drop-in service's own suite, unchanged, under Tortoise's RegisterTortoise and ours.

Each run is a separate pytest process (as the service's CI would run it), on a sqlite file
and on a PostgreSQL database, with ``DROPIN_REGISTER`` naming where ``RegisterTortoise``
comes from. The runs load neither this repository's conftest nor its pytest plugin, so the
reference run on plain Tortoise never imports aegis_tortoise.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PgServer

ROOT = Path(__file__).resolve().parents[2]
IMPLEMENTATIONS = ["tortoise.contrib.fastapi", "aegis_tortoise.fastapi"]


def _run(args: list[str], register: str, db_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DROPIN_REGISTER": register, "DROPIN_DB_URL": db_url}
    return subprocess.run(  # noqa: S603 - our own interpreter and test suite
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=300, check=False)


@pytest.mark.parametrize("register", IMPLEMENTATIONS)
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_service_suite_passes_unchanged(register: str, backend: str, tmp_path: Path,
                                        request: pytest.FixtureRequest) -> None:
    if backend == "sqlite":
        # An absolute path, in Tortoise's meaning of sqlite:///... inside its config.
        db_url = f"sqlite://{tmp_path}/service.db"
    else:
        server: PgServer = request.getfixturevalue("pg_server")
        name = server.create_database(f"dropin_{IMPLEMENTATIONS.index(register)}")
        db_url = server.url_for(name).replace("postgresql://", "postgres://")
    which = _run(["-c", "import tests.dropin.service.main as m; "
                        "print(m.RegisterTortoise.__module__)"], register, db_url)
    defined_in = "aegis_tortoise._register" if register.startswith("aegis") else register
    assert which.stdout.strip() == defined_in, which.stderr
    suite = _run(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:aegis_tortoise",
                  "--confcutdir", str(ROOT / "tests" / "dropin"),
                  "tests/dropin/service_tests"], register, db_url)
    assert suite.returncode == 0, suite.stdout[-4000:] + suite.stderr[-2000:]
    assert "9 passed" in suite.stdout, suite.stdout[-2000:]
    if backend == "sqlite":
        assert (tmp_path / "service.db").exists()  # the absolute path, as Tortoise reads it

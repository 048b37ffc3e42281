"""Issue 21 acceptance 1: one small service per framework Tortoise integrates with, and its
own suite (written the way that framework's users test), unchanged under Tortoise's
``register_tortoise`` and under ours, on a sqlite file and on PostgreSQL.

Each run is a separate pytest process with ``DROPIN_REGISTER`` naming the registration
module; the reference runs on plain Tortoise never import aegis_tortoise.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PgServer

ROOT = Path(__file__).resolve().parents[2]
FRAMEWORKS = ["starlette", "sanic", "aiohttp", "quart", "blacksheep"]
REGISTRATIONS = ["tortoise.contrib.{}", "aegis_tortoise.contrib.{}"]


def _run(args: list[str], register: str, db_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DROPIN_REGISTER": register, "DROPIN_DB_URL": db_url}
    return subprocess.run(  # noqa: S603 - our own interpreter and test suite
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=300, check=False)


@pytest.mark.parametrize("register", REGISTRATIONS, ids=["tortoise", "aegis"])
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_framework_suite_passes_unchanged(framework: str, register: str, backend: str,
                                          tmp_path: Path,
                                          request: pytest.FixtureRequest) -> None:
    if importlib.util.find_spec(framework) is None:
        pytest.fail(f"{framework} is not installed: pip install -e '.[dev]' (the "
                    "'frameworks' extra)")
    if backend == "sqlite":
        db_url = f"sqlite://{tmp_path}/{framework}.db"
    else:
        server: PgServer = request.getfixturevalue("pg_server")
        name = server.create_database(f"fw_{framework}_{REGISTRATIONS.index(register)}")
        db_url = server.url_for(name).replace("postgresql://", "postgres://")
    module = f"tests.dropin.frameworks.{framework}_app"
    which = _run(["-c", f"import {module} as m; print(m.register_tortoise.__module__)"],
                 register, db_url)
    assert which.stdout.strip() == register.format(framework), which.stderr[-2000:]
    # -W: the frameworks' own deprecation warnings (websockets.legacy under Sanic...) are
    # theirs, not the service's; this repository's filterwarnings=error stays for the rest.
    suite = _run(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:aegis_tortoise",
                  "-W", "ignore::DeprecationWarning", "--confcutdir",
                  str(ROOT / "tests" / "dropin"),
                  f"tests/dropin/frameworks_tests/test_{framework}.py"], register, db_url)
    assert suite.returncode == 0, suite.stdout[-4000:] + suite.stderr[-2000:]
    assert "3 passed" in suite.stdout, suite.stdout[-2000:]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_missing_framework_is_an_import_error_naming_the_extra(framework: str) -> None:
    hide = {"starlette": "starlette", "sanic": "sanic", "aiohttp": "aiohttp",
            "quart": "quart", "blacksheep": "blacksheep"}[framework]
    done = subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", f"import sys; sys.modules[{hide!r}] = None\n"
         f"import aegis_tortoise.contrib.{framework}"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0
    assert "ImportError" in done.stderr
    assert f"pip install 'aegis-tortoise[{framework}]'" in done.stderr

"""The quick start's "first service" path, run as a newcomer follows it (#20 item 9): its
files written into an empty project folder, its tests run with plain ``pytest`` on sqlite
and on PostgreSQL, its migrations applied with aerich on PostgreSQL, then
``aegis-tortoise check``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PgServer
from tests.docs.test_docs_examples import BLOCKS

ROOT = Path(__file__).resolve().parents[2]
PAGE = "docs/quickstart.md"
TEXT = (ROOT / PAGE).read_text(encoding="utf-8")
FILES = {block.arg: block.code for block in BLOCKS
         if block.page == PAGE and block.kind == "file"}
TOMLS = re.findall(r"```toml\n(.*?)```", TEXT, re.DOTALL)
BIN = Path(sys.executable).parent


def _project(folder: Path) -> Path:
    """The quick start's files, where it says to save them."""
    assert set(FILES) == {"shop_models.py", "shop_repositories.py", "shop_app.py",
                          "test_shop.py"}
    (folder / "tests").mkdir()
    for name, code in FILES.items():
        target = folder / "tests" / name if name.startswith("test_") else folder / name
        target.write_text(code, encoding="utf-8")
    (folder / "pyproject.toml").write_text(
        "\n".join(TOMLS),
        encoding="utf-8")
    return folder


def _run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("DATABASE_", "AEGIS_TEST_", "PYTEST_"))}
    clean.update(env)
    return subprocess.run(args, cwd=cwd, env=clean, capture_output=True, text=True,  # noqa: S603
                          timeout=300, check=False)


def test_the_pyproject_snippets_are_what_the_project_needs() -> None:
    pytest_table = next(t for t in TOMLS if "[tool.pytest.ini_options]" in t)
    assert 'pythonpath = ["."]' in pytest_table
    assert 'aegis_models = "shop_models"' in pytest_table
    assert any("[tool.aerich]" in t for t in TOMLS)
    assert "pip install 'aegis-tortoise" not in TEXT  # not on PyPI


@pytest.mark.postgres
def test_the_first_service_on_sqlite_postgres_and_migrations(
        tmp_path: Path, pg_server: PgServer) -> None:
    project = _project(tmp_path)
    on_sqlite = _run([str(BIN / "pytest"), "-p", "no:cacheprovider", "-q"], project)
    assert on_sqlite.returncode == 0, on_sqlite.stdout + on_sqlite.stderr
    assert "3 passed" in on_sqlite.stdout
    # PostgreSQL: a database that does not exist yet (the plugin creates it).
    test_db = f"{pg_server.prefix}_shop_test"
    pg_server.created.append(test_db)
    on_pg = _run([str(BIN / "pytest"), "-p", "no:cacheprovider", "-q",
                  f"--aegis-db-url={pg_server.url_for(test_db)}"], project)
    assert on_pg.returncode == 0, on_pg.stdout + on_pg.stderr
    assert "3 passed" in on_pg.stdout

    url = pg_server.url_for(pg_server.create_database("shop")).replace(
        "postgresql://", "postgresql+asyncpg://")
    env = {"DATABASE_URL": url, "DATABASE_MODELS": "shop_models", "PYTHONPATH": "."}
    init = _run([str(BIN / "aerich"), "init-db"], project, **env)
    assert init.returncode == 0, init.stdout + init.stderr
    assert list((project / "migrations" / "models").glob("0_*_init.py"))
    upgrade = _run([str(BIN / "aerich"), "upgrade"], project, **env)
    assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
    check = _run([str(BIN / "aegis-tortoise"), "check"], project, **env)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "schema:     matches 2 model(s)" in check.stdout

"""``aegis-tortoise check`` as a newcomer meets it (#20 items 3 and 8): nothing configured,
a missing column, the effective pool_timeout. Subprocesses, as a user runs it."""

from __future__ import annotations

from pathlib import Path

from aegis_tortoise import DatabaseManager
from tests.conftest import EXAMPLE_MODELS, reset_pg_schema
from tests.integration.test_cli import _failed_once, _run


def test_check_with_nothing_configured_says_what_to_set(tmp_path: Path) -> None:
    """Before: it checked the empty in-memory default and passed (exit 0)."""
    proc = _run("check", cwd=tmp_path)
    line = _failed_once(proc)
    assert "DATABASE_URL" in line
    assert "--database-url" in line


def test_check_prints_the_effective_pool_timeout(tmp_path: Path) -> None:
    """Before: pool_timeout=10s, whatever the settings said (their default is 30)."""
    url = f"sqlite:///{tmp_path}/x.db"
    default = _run("check", "--database-url", url, cwd=tmp_path)
    assert default.returncode == 0, default.stdout + default.stderr
    assert "pool_timeout=30s" in default.stdout
    configured = _run("check", env={"DATABASE_URL": url, "DATABASE_POOL_TIMEOUT": "7"},
                      cwd=tmp_path)
    assert "pool_timeout=7s" in configured.stdout, configured.stdout
    given = _run("check", "--database-url", url, "--timeout", "3", cwd=tmp_path)
    assert "pool_timeout=3s" in given.stdout


async def test_check_advises_a_migration_for_a_missing_column(
        backend: str, db_url: str, tmp_path: Path) -> None:
    """Before: it advised generate_schemas(), which adds no columns."""
    url = f"sqlite:///{tmp_path}/app.db" if backend == "sqlite" else db_url
    if backend == "postgres":
        await reset_pg_schema(url)
    db = DatabaseManager(url, models=EXAMPLE_MODELS)
    await db.generate_schemas()
    async with db.session() as session:
        await session.execute("ALTER TABLE policies DROP COLUMN title")
    await db.close()
    proc = _run("check", "--database-url", url, "--models", EXAMPLE_MODELS[0], cwd=tmp_path)
    assert "lacks column(s) title" in proc.stdout
    line = _failed_once(proc)
    assert "aerich migrate" in line
    assert "aerich upgrade" in line
    assert "generate_schemas() adds no columns" in line


def test_check_advises_upgrade_or_generate_schemas_for_missing_tables(tmp_path: Path) -> None:
    proc = _run("check", "--database-url", f"sqlite:///{tmp_path}/empty.db", "--models",
                EXAMPLE_MODELS[0], cwd=tmp_path)
    line = _failed_once(proc)
    assert "aerich upgrade" in line
    assert "generate_schemas()" in line

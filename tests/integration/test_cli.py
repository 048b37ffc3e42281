"""``python -m aegis_tortoise demo|check`` as a user runs it (subprocesses)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from aegis_tortoise import DatabaseManager
from tests.conftest import EXAMPLE_MODELS, PgServer, reset_pg_schema


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("DATABASE_")}
    full_env.update(env or {})
    return subprocess.run(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "aegis_tortoise", *args], capture_output=True, text=True,
        timeout=120, env=full_env, check=False)


def test_demo_runs_every_step_on_default_sqlite() -> None:
    proc = _run("demo")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for step in ("[1] DatabaseManager", "Session: raw SQL", "BaseRepository", "TransactionManager",
                 "with_db_retry", "Complex queries", "Error handling", "db.close()"):
        assert step in out
    assert "User not found: 999999 -> HTTP 404" in out
    assert "created retry@example.com after 2 attempts" in out
    assert "Done: every step of the walkthrough ran." in out


@pytest.mark.postgres
async def test_check_passes_against_a_migrated_database(pg_database: str) -> None:
    await reset_pg_schema(pg_database)
    db = DatabaseManager(pg_database, models=EXAMPLE_MODELS)
    await db.generate_schemas()
    await db.close()
    proc = _run("check", env={"DATABASE_URL": pg_database,
                              "DATABASE_MODELS": EXAMPLE_MODELS[0]})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "server:     PostgreSQL 15" in proc.stdout or "server:     PostgreSQL" in proc.stdout
    assert "pool_size=20 max_overflow=10 (at most 30 connections)" in proc.stdout
    assert "schema:     matches 2 model(s)" in proc.stdout


@pytest.mark.postgres
async def test_check_reports_a_schema_that_does_not_match(pg_database: str) -> None:
    await reset_pg_schema(pg_database)
    proc = _run("check", "--database-url", pg_database, "--models", EXAMPLE_MODELS[0])
    assert proc.returncode == 1
    assert "DOES NOT MATCH" in proc.stdout
    assert "'users'" in proc.stdout


@pytest.mark.postgres
def test_check_fails_with_the_reason_on_a_refused_port(pg_server: PgServer) -> None:
    proc = _run("check", "--timeout", "3",
                env={"DATABASE_URL": "postgresql://postgres:s3cr3t-pw@127.0.0.1:1/x"})
    assert proc.returncode == 1
    assert "FAILED: DatabaseConnectionError" in proc.stdout
    assert "s3cr3t-pw" not in proc.stdout + proc.stderr


@pytest.mark.postgres
def test_check_fails_with_the_reason_on_a_missing_database(pg_server: PgServer) -> None:
    url = pg_server.url_for("aegis_no_such_database").replace(
        "postgres@", "postgres:s3cr3t-pw@", 1)
    proc = _run("check", "--timeout", "5", "--database-url", url)
    assert proc.returncode == 1
    assert "FAILED: ConfigurationError" in proc.stdout
    assert "does not exist" in proc.stdout
    assert "s3cr3t-pw" not in proc.stdout + proc.stderr


def test_check_fails_on_a_bad_scheme_without_the_password() -> None:
    proc = _run("check", env={"DATABASE_URL": "mysql://root:s3cr3t-pw@localhost/app"})
    assert proc.returncode == 1
    assert "'mysql'" in proc.stdout
    assert "s3cr3t-pw" not in proc.stdout + proc.stderr


def test_check_on_sqlite_without_models() -> None:
    proc = _run("check", "--database-url", "sqlite:///:memory:")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "server:     SQLite 3." in proc.stdout
    assert "no models configured" in proc.stdout

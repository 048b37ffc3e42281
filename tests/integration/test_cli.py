"""``python -m aegis_tortoise demo|check`` and the installed ``aegis-tortoise`` script, as a
user runs them (subprocesses)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import asyncpg
import pytest

from aegis_tortoise import DatabaseManager
from tests.conftest import EXAMPLE_MODELS, PgServer, asyncpg_dsn, reset_pg_schema

SCRIPT = Path(sys.executable).with_name("aegis-tortoise")
RUNNERS = {"python -m": [sys.executable, "-m", "aegis_tortoise"], "script": [str(SCRIPT)]}


def _run(*args: str, env: dict[str, str] | None = None, runner: str = "python -m",
         cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("DATABASE_")}
    full_env.update(env or {})
    return subprocess.run(  # noqa: S603 - our own CLI
        [*RUNNERS[runner], *args], capture_output=True, text=True,
        timeout=120, env=full_env, check=False, cwd=cwd)


def _failed_once(proc: subprocess.CompletedProcess[str]) -> str:
    """The one FAILED line of a run that failed as a user mistake should: exit 1, no trace."""
    assert proc.returncode == 1, proc.stdout + proc.stderr
    failed = [line for line in proc.stdout.splitlines() if line.startswith("FAILED:")]
    assert len(failed) == 1, proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
    return failed[0]


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


def test_version_is_the_distributions_and_help_has_no_markup() -> None:
    for runner in RUNNERS:
        proc = _run("--version", runner=runner)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == f"aegis-tortoise {version('aegis-tortoise')}"
    for args in (["--help"], ["demo", "--help"], ["check", "--help"]):
        proc = _run(*args)
        assert proc.returncode == 0, proc.stderr
        assert "`" not in proc.stdout, proc.stdout
        assert "--debug" in proc.stdout
    demo_help = " ".join(_run("demo", "--help").stdout.split())
    assert "never changes or deletes data it did not create" in demo_help
    assert "schema of its own" in demo_help
    assert "--allow-existing-data" in demo_help


def test_console_script_imports_models_from_the_working_directory(tmp_path: Path) -> None:
    (tmp_path / "shop").mkdir()
    (tmp_path / "shop" / "__init__.py").write_text("")
    (tmp_path / "shop" / "models.py").write_text(
        "from tortoise import fields, models\n\n\n"
        "class Thing(models.Model):\n"
        "    id = fields.IntField(primary_key=True)\n\n"
        "    class Meta:\n"
        "        table = 'things'\n")
    for runner in RUNNERS:
        proc = _run("check", "--database-url", "sqlite:///:memory:", "--models", "shop.models",
                    runner=runner, cwd=tmp_path)
        assert "table 'things' (Thing) is missing" in proc.stdout, proc.stdout + proc.stderr
        assert "not found" not in proc.stdout
        assert "schema does not match" in _failed_once(proc)


@pytest.mark.parametrize("runner", list(RUNNERS))
def test_user_mistakes_are_one_failed_line(runner: str, tmp_path: Path) -> None:
    cases = {
        "bad scheme": (["check", "--database-url", "mysql://root:pw@localhost/app"], "'mysql'"),
        "bad module": (["check", "--database-url", "sqlite:///:memory:", "--models",
                        "no_such_pkg.models"], "Model module 'no_such_pkg.models' not found"),
        "module without models": (["check", "--database-url", "sqlite:///:memory:",
                                   "--models", "json"], "defines no Tortoise models"),
        "missing tables": (["check", "--database-url", f"sqlite:///{tmp_path}/empty.db",
                            "--models", EXAMPLE_MODELS[0]], "schema does not match"),
        "unopenable file": (["demo", "--database-url", f"sqlite:///{tmp_path}/no/dir/x.db"],
                            "ConfigurationError"),
    }
    for name, (args, expected) in cases.items():
        proc = _run(*args, runner=runner, cwd=tmp_path)
        line = _failed_once(proc)
        assert expected in line, (name, line)
        assert "--debug" in line
    debug = _run("--debug", "check", "--database-url", "sqlite:///:memory:", "--models",
                 "no_such_pkg.models", runner=runner)
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr
    assert "ModuleNotFoundError" in debug.stderr
    after = _run("check", "--models", "no_such_pkg.models", "--debug", runner=runner)
    assert "Traceback" in after.stderr


@pytest.mark.postgres
def test_wrong_credentials_are_one_failed_line(pg_server: PgServer) -> None:
    url = pg_server.url_for("postgres").replace("postgres@", "no_such_role:s3cr3t-pw@", 1)
    line = _failed_once(_run("check", "--timeout", "5", "--database-url", url))
    assert "ConfigurationError" in line
    assert "s3cr3t-pw" not in line


# -- the demo never touches data it did not create ----------------------------------------


@pytest.mark.postgres
async def test_demo_on_postgres_works_in_a_schema_of_its_own(pg_database: str) -> None:
    await reset_pg_schema(pg_database)
    conn = await asyncpg.connect(asyncpg_dsn(pg_database))
    try:
        # A service's own tables of the same names, with data.
        await conn.execute("CREATE TABLE users (id serial PRIMARY KEY, email text);"
                           "CREATE TABLE policies (id serial PRIMARY KEY, title text);"
                           "INSERT INTO users (email) VALUES ('mine@example.com');"
                           "INSERT INTO policies (title) VALUES ('my policy');")
        proc = _run("demo", "--database-url", pg_database)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "schema 'aegis_demo' of its own" in proc.stdout
        assert await conn.fetchval("SELECT email FROM public.users") == "mine@example.com"
        assert await conn.fetchval("SELECT count(*) FROM public.policies") == 1
        assert await conn.fetchval(
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'aegis_demo'") == 0

        # A schema of that name the demo did not create is refused and left alone.
        await conn.execute("CREATE SCHEMA aegis_demo; CREATE TABLE aegis_demo.users (x int);"
                           "INSERT INTO aegis_demo.users VALUES (7)")
        line = _failed_once(_run("demo", "--database-url", pg_database))
        assert "Schema 'aegis_demo' exists and was not created by the demo" in line
        assert await conn.fetchval("SELECT x FROM aegis_demo.users") == 7
        other = _run("demo", "--database-url", pg_database, "--schema", "aegis_demo_2")
        assert other.returncode == 0, other.stdout + other.stderr
        assert await conn.fetchval("SELECT x FROM aegis_demo.users") == 7
    finally:
        await conn.close()
        await reset_pg_schema(pg_database)


def test_demo_refuses_a_sqlite_file_holding_other_data(tmp_path: Path) -> None:
    path = tmp_path / "service.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT)")
        conn.execute("INSERT INTO users (email) VALUES ('mine@example.com')")
    conn.close()
    line = _failed_once(_run("demo", "--database-url", f"sqlite:///{path}"))
    assert "--allow-existing-data" in line
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT email FROM users").fetchall() == [("mine@example.com",)]
    conn.close()

    # A new file is the demo's own: it runs there, and again on the file it made.
    own = tmp_path / "demo.db"
    for _ in range(2):
        proc = _run("demo", "--database-url", f"sqlite:///{own}")
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_demo_with_allow_existing_data_runs_on_a_used_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "scratch.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (body TEXT)")
        conn.execute("INSERT INTO notes VALUES ('kept')")
    conn.close()
    proc = _run("demo", "--allow-existing-data", "--database-url", f"sqlite:///{path}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT body FROM notes").fetchall() == [("kept",)]
    conn.close()

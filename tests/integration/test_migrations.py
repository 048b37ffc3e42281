"""aerich migrations: the CLI from the repository root, the config it reads, the Python API.

The CLI tests run ``aerich`` as a user would (a subprocess, cwd = repository root,
``DATABASE_URL`` in the environment) against throw-away PostgreSQL databases.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest
from aerich.utils import load_tortoise_config

from aegis_tortoise import ConfigurationError, DatabaseManager
from aegis_tortoise.examples.models import Policy, User
from aegis_tortoise.migrations import downgrade, tortoise_config, upgrade
from tests.conftest import EXAMPLE_MODELS, PgServer, reset_pg_schema

ROOT = Path(__file__).resolve().parents[2]
AERICH = Path(sys.executable).with_name("aerich")
VERSIONS = ROOT / "migrations" / "models"


def _fresh_database(pg_server: PgServer) -> str:
    """A new, empty database; returned as a SQLAlchemy-style URL, as in a service's env."""
    url = pg_server.url_for(pg_server.create_database(f"migr_{uuid.uuid4().hex[:8]}"))
    return url.replace("postgresql://", "postgresql+asyncpg://", 1)


def _aerich(database_url: str, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "TORTOISE_"))}
    env["DATABASE_URL"] = database_url
    env["DATABASE_MODELS"] = EXAMPLE_MODELS[0]  # this repository's migrations: the examples
    proc = subprocess.run(  # noqa: S603 - our own executable and arguments
        [str(AERICH), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
        check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"aerich {' '.join(args)} failed:\n{output}"
    return output


async def _tables(url: str) -> set[str]:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {row["tablename"] for row in rows}
    finally:
        await conn.close()


async def _applied(url: str) -> list[str]:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        rows = await conn.fetch("SELECT version FROM aerich ORDER BY id")
        return [row["version"] for row in rows]
    finally:
        await conn.close()


def _version_files() -> list[str]:
    return sorted(p.name for p in VERSIONS.glob("*.py"))


def test_migrations_folder_holds_the_example_models() -> None:
    files = _version_files()
    assert len(files) == 2
    assert files[0].startswith("0_")
    assert files[0].endswith("_init.py")
    assert files[1].startswith("1_")
    assert "add_user_and_policy_tables" in files[1]
    assert 'CREATE TABLE IF NOT EXISTS "users"' in (VERSIONS / files[1]).read_text()


@pytest.mark.postgres
async def test_cli_upgrade_migrate_downgrade(pg_server: PgServer) -> None:
    url = _fresh_database(pg_server)
    pyproject = (ROOT / "pyproject.toml").read_text()
    files = _version_files()

    # alembic upgrade head
    out = _aerich(url, "upgrade")
    assert all(f"Success upgrading to {name}" in out for name in files), out
    assert {"aerich", "users", "policies"} <= await _tables(url)
    assert await _applied(url) == files

    # The schema is the models' schema: the ORM writes and reads through it.
    manager = DatabaseManager(url, models=EXAMPLE_MODELS, pool_size=2, max_overflow=0)
    try:
        async with manager.session():
            user = await User.create(email="migrated@example.com", name="Migrated")
            await Policy.create(user=user, title="P")
        async with manager.session():
            assert await Policy.filter(user__email="migrated@example.com").count() == 1
    finally:
        await manager.close()

    # alembic revision --autogenerate: the models and the migrations agree.
    try:
        out = _aerich(url, "migrate", "--name", "should_not_exist")
        assert "No changes detected" in out, out
    finally:
        for stray in set(_version_files()) - set(files):
            (VERSIONS / stray).unlink()
    assert _version_files() == files

    # alembic downgrade -1
    out = _aerich(url, "downgrade", "--yes")
    assert f"Success downgrading to {files[-1]}" in out, out
    assert await _tables(url) == {"aerich"}
    assert await _applied(url) == files[:-1]

    # and up again
    out = _aerich(url, "upgrade")
    assert f"Success upgrading to {files[-1]}" in out, out
    assert {"users", "policies"} <= await _tables(url)
    assert "No available heads" in _aerich(url, "heads")

    # aerich rewrites pyproject.toml on `aerich init` only; nothing here may touch it.
    assert (ROOT / "pyproject.toml").read_text() == pyproject


def test_tortoise_orm_follows_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://app:s3cret@db.internal:6543/shop")
    monkeypatch.setenv("DATABASE_MODELS", "aegis_tortoise.examples.models")
    # Exactly what `aerich` loads: the path in [tool.aerich] of pyproject.toml.
    config = load_tortoise_config(config_file=ROOT / "pyproject.toml")
    assert config == {
        "connections": {"default": {
            "engine": "tortoise.backends.asyncpg",
            "credentials": {"host": "db.internal", "port": 6543, "user": "app",
                            "password": "s3cret", "database": "shop"},
        }},
        "apps": {"models": {"models": ["aegis_tortoise.examples.models", "aerich.models"],
                            "default_connection": "default"}},
    }

    monkeypatch.setenv("DATABASE_MODELS", "app.models, app.more_models")
    config = load_tortoise_config(config_file=ROOT / "pyproject.toml")
    assert config["apps"]["models"]["models"] == ["app.models", "app.more_models",
                                                  "aerich.models"]

    explicit = tortoise_config("sqlite:///data/app.db", ["app.models", "aerich.models"])
    assert explicit["connections"]["default"]["credentials"]["file_path"] == "data/app.db"
    assert explicit["apps"]["models"]["models"] == ["app.models", "aerich.models"]


def test_unset_database_models_is_refused_not_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    """No silent fallback to the example models: it would migrate a service's tables away."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://app:s3cret@db.internal:6543/shop")
    for unset in ("", " , "):
        monkeypatch.setenv("DATABASE_MODELS", unset)
        with pytest.raises(ConfigurationError, match="DATABASE_MODELS") as info:
            load_tortoise_config(config_file=ROOT / "pyproject.toml")
        assert "s3cret" not in str(info.value)
    monkeypatch.delenv("DATABASE_MODELS")
    with pytest.raises(ConfigurationError, match="DATABASE_MODELS"):
        tortoise_config()
    with pytest.raises(ConfigurationError, match="DATABASE_MODELS"):
        tortoise_config(models=["aerich.models"])


def test_aerich_cli_without_database_models_names_the_variable(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "TORTOISE_"))}
    env["DATABASE_URL"] = f"sqlite:///{tmp_path}/service.db"
    proc = subprocess.run(  # noqa: S603 - our own executable and arguments
        [str(AERICH), "heads"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
        check=False)
    assert proc.returncode != 0
    assert "DATABASE_MODELS" in proc.stdout + proc.stderr
    assert not (tmp_path / "service.db").exists()


def test_in_memory_database_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    with pytest.raises(ConfigurationError, match="DATABASE_URL"):
        tortoise_config()
    with pytest.raises(ConfigurationError, match="persistent"):
        tortoise_config("sqlite+aiosqlite:///:memory:")


@pytest.mark.postgres
async def test_python_api_leaves_live_managers_alone(pg_server: PgServer,
                                                     pg_database: str) -> None:
    """aerich re-initialises Tortoise; a manager used before, during and after keeps working."""
    target = _fresh_database(pg_server)
    await reset_pg_schema(pg_database)
    live = DatabaseManager(pg_database, models=EXAMPLE_MODELS, pool_size=2, max_overflow=2)
    memory = DatabaseManager("sqlite:///:memory:", models=EXAMPLE_MODELS)
    try:
        await live.generate_schemas()
        await memory.generate_schemas()
        async with memory.session():
            await User.create(email="before@sqlite", name="S")

        async with live.session() as session:
            await User.create(email="before@pg", name="A")
            applied = await upgrade(target, EXAMPLE_MODELS, location=ROOT / "migrations")
            # Same session, same transaction, same connection after aerich ran.
            await User.create(email="after@pg", name="B")
            emails = await User.all().order_by("id").values_list("email", flat=True)
            assert emails == ["before@pg", "after@pg"]
            assert (await session.execute("SELECT count(*) FROM users")).scalar() == 2
        assert applied == _version_files()

        async with live.session():
            assert await User.all().count() == 2
        async with memory.session():  # the in-memory database was not swapped or closed
            assert await User.all().values_list("email", flat=True) == ["before@sqlite"]

        # aerich wrote to the target database only.
        assert {"aerich", "users", "policies"} <= await _tables(target)
        assert "aerich" not in await _tables(pg_database)
        assert await upgrade(target, EXAMPLE_MODELS, location=ROOT / "migrations") == []

        async with live.session():
            reverted = await downgrade(target, EXAMPLE_MODELS, location=ROOT / "migrations")
            await User.create(email="during-downgrade@pg", name="C")
        assert reverted == _version_files()[-1:]
        assert await _tables(target) == {"aerich"}
        async with live.session():
            assert await User.all().count() == 3
    finally:
        await live.close()
        await memory.close()
        await reset_pg_schema(pg_database)  # the next test on this database starts empty


async def test_python_api_needs_the_migrations_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="No migrations folder"):
        await upgrade("postgresql://nobody@127.0.0.1/none", EXAMPLE_MODELS,
                      location=tmp_path / "missing")

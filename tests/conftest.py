"""Test fixtures: one suite, parametrized over sqlite and PostgreSQL.

PostgreSQL comes from ``--pg-url`` or ``AEGIS_TEST_PG_URL`` (an admin URL; default
``postgresql://postgres@127.0.0.1:5432/postgres``). The suite creates its own databases and
drops them at the end. When the server cannot be reached, PostgreSQL tests are skipped with
the reason, except with ``CI=true``, where they fail.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from aegis_tortoise import DatabaseManager

EXAMPLE_MODELS = ["aegis_tortoise.examples.models"]
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
BACKENDS = ["sqlite", "postgres"]
# pytest.ini of the inner projects that run the plugin as a user does (pytester).
PLUGIN_INI = """
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
asyncio_default_test_loop_scope = function
filterwarnings = error
aegis_models = aegis_tortoise.examples.models
"""


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--pg-url", default=os.environ.get("AEGIS_TEST_PG_URL", DEFAULT_PG_URL),
                     help="admin URL of a PostgreSQL server for the integration tests")


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


class PgServer:
    """The test PostgreSQL server: reachable or not, and a factory of throw-away databases."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.error: str | None = None
        self.version: str | None = None
        self.created: list[str] = []
        self.prefix = f"aegis_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"

    def _admin_dsn(self) -> str:
        return self.admin_url.replace("postgresql+asyncpg://", "postgresql://")

    def url_for(self, database: str) -> str:
        base = self.admin_url.rsplit("/", 1)[0]
        return f"{base}/{database}"

    async def _run(self, *statements: str) -> Any:
        conn = await asyncpg.connect(self._admin_dsn(), timeout=5)
        try:
            result = None
            for statement in statements:
                result = await conn.fetchval(statement)
            return result
        finally:
            await conn.close()

    def _sync(self, *statements: str) -> Any:
        # In a worker thread: fixtures may be first requested from inside a running loop.
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, self._run(*statements)).result()

    def probe(self) -> None:
        try:
            self.version = self._sync("SHOW server_version")
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"

    def create_database(self, suffix: str) -> str:
        name = f"{self.prefix}_{suffix}"
        self._sync(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return name

    def drop_all(self) -> None:
        for name in self.created:
            self._sync(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.created.clear()


_server: PgServer | None = None


def _pg(config: pytest.Config) -> PgServer:
    global _server
    if _server is None:
        _server = PgServer(str(config.getoption("--pg-url")))
        _server.probe()
    return _server


def pytest_report_header(config: pytest.Config) -> list[str]:
    server = _pg(config)
    if server.version:
        return [f"postgresql: {server.version} at {server.admin_url.split('@')[-1]}"]
    return [f"postgresql: UNREACHABLE ({server.error}); postgres tests will "
            + ("FAIL (CI=true)" if _in_ci() else "be skipped")]


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _server is not None:
        _server.drop_all()


@pytest.fixture(scope="session")
def pg_server(request: pytest.FixtureRequest) -> PgServer:
    """The PostgreSQL server; skips (fails in CI) when it cannot be reached."""
    server = _pg(request.config)
    if server.error:
        message = f"PostgreSQL at {server.admin_url.split('@')[-1]} unreachable: {server.error}"
        if _in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return server


@pytest.fixture(scope="session")
def pg_database(pg_server: PgServer) -> str:
    """URL of a database created for this test run (schemas are reset per test)."""
    return pg_server.url_for(pg_server.create_database("main"))


@pytest.fixture(scope="session")
def pg_database_b(pg_server: PgServer) -> str:
    """URL of a second database, for multi-manager tests."""
    return pg_server.url_for(pg_server.create_database("b"))


async def reset_pg_schema(url: str) -> None:
    """Drop and recreate the ``public`` schema of the database at ``url``."""
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
    finally:
        await conn.close()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """``"sqlite"`` or ``"postgres"``: every test that uses it runs on both."""
    name: str = request.param
    if name == "postgres":
        request.getfixturevalue("pg_server")
    return name


@pytest.fixture
def db_url(backend: str, request: pytest.FixtureRequest) -> str:
    """A URL of an empty database of ``backend``."""
    if backend == "sqlite":
        return "sqlite:///:memory:"
    url: str = request.getfixturevalue("pg_database")
    return url


async def fresh_manager(url: str, backend: str, models: list[str] | None = None,
                        **options: Any) -> AsyncIterator[DatabaseManager]:
    """A manager of ``models`` (default: the example models) on empty tables; closed after."""
    if backend == "postgres":
        await reset_pg_schema(url)
    options = {"pool_size": 5, "max_overflow": 5, "pool_timeout": 10, **options}
    manager = DatabaseManager(url, models=models or EXAMPLE_MODELS, **options)
    await manager.generate_schemas()
    try:
        yield manager
    finally:
        await manager.close()


@pytest.fixture
async def db(db_url: str, backend: str) -> AsyncIterator[DatabaseManager]:
    """A manager on an empty database of ``backend`` with the example models' tables."""
    async for manager in fresh_manager(db_url, backend):
        yield manager


@pytest.fixture
async def pg_db(pg_database: str) -> AsyncIterator[DatabaseManager]:
    """``db`` on PostgreSQL only, for behaviour sqlite does not have."""
    async for manager in fresh_manager(pg_database, "postgres"):
        yield manager


@pytest.fixture
async def sqlite_db() -> AsyncIterator[DatabaseManager]:
    """``db`` on in-memory sqlite only."""
    async for manager in fresh_manager("sqlite:///:memory:", "sqlite"):
        yield manager


def asyncpg_dsn(url: str) -> str:
    """The URL in the form asyncpg.connect() takes."""
    return url.replace("postgresql+asyncpg://", "postgresql://")


@pytest.fixture
async def pg_admin(pg_server: PgServer) -> AsyncIterator[asyncpg.Connection]:
    """A separate asyncpg connection to the server's admin database, outside any manager."""
    conn = await asyncpg.connect(asyncpg_dsn(pg_server.admin_url), timeout=5)
    try:
        yield conn
    finally:
        await conn.close()


async def count_rows(manager: DatabaseManager, table: str = "users") -> int:
    """Rows in ``table``, read in a new session of ``manager`` (what is committed)."""
    async with manager.session() as session:
        result = await session.execute(f'SELECT count(*) FROM "{table}"')
        count: int = result.scalar_one()
        return count

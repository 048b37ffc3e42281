"""Fixtures of the fault tests: the proxy, a database of their own, managers that close."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from aegis_tortoise import DatabaseManager
from aegis_tortoise.config import parse_database_url
from tests.conftest import EXAMPLE_MODELS, PgServer, asyncpg_dsn, reset_pg_schema
from tests.faults.proxy import FaultProxy

FAULT_MODELS = [*EXAMPLE_MODELS, "tests.faults.models"]


@dataclass
class PgTarget:
    """The fault tests' PostgreSQL database (emptied before each test)."""

    server: PgServer
    database: str

    @property
    def dsn(self) -> str:
        """Direct asyncpg DSN, outside the library and the proxy (for checks)."""
        return asyncpg_dsn(self.server.url_for(self.database))

    def url(self, app: str = "aegis_faults") -> str:
        """Direct URL for a manager, tagged with ``application_name``."""
        return f"{self.server.url_for(self.database)}?application_name={app}"


@pytest.fixture(autouse=True)
async def no_event_loop_errors() -> AsyncIterator[None]:
    """Fail a test whose event loop reported an error: a task exception never retrieved, or
    asyncpg resetting a pooled connection that is still in a transaction. A fault must not
    leave either behind."""
    loop = asyncio.get_running_loop()
    errors: list[str] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: errors.append(str(context.get("message"))))
    try:
        yield
        gc.collect()  # "never retrieved" is reported when the task is collected
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(previous)
    assert not errors, f"the event loop reported: {errors}"


@pytest.fixture(scope="session")
def faults_database(pg_server: PgServer) -> str:
    """A database of the fault tests' own: pg_stat_activity of it shows only their connections."""
    return pg_server.create_database("faults")


@pytest.fixture
def pg_target(pg_server: PgServer, faults_database: str) -> PgTarget:
    """The fault tests' database, its ``public`` schema emptied."""
    target = PgTarget(pg_server, faults_database)
    # In a thread: a sync fixture may be set up while the test's event loop runs.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, reset_pg_schema(target.dsn)).result()
    return target


@dataclass
class Target:
    """Where a backend-parametrized test runs: the manager's URL and, on PostgreSQL, the
    direct DSN the nothing-lost check reads through."""

    backend: str
    url: str
    dsn: str | None
    database: str | None = None


@pytest.fixture
def target(backend: str, request: pytest.FixtureRequest) -> Target:
    """In-memory sqlite, or the fault tests' PostgreSQL database (direct)."""
    if backend == "sqlite":
        return Target(backend, "sqlite:///:memory:", None)
    pg: PgTarget = request.getfixturevalue("pg_target")
    return Target(backend, pg.url(), pg.dsn, pg.database)


@pytest.fixture
async def fault_proxy(pg_server: PgServer) -> AsyncIterator[FaultProxy]:
    """A fault-injecting proxy in front of the test server, started and stopped per test."""
    url = parse_database_url(pg_server.admin_url)
    proxy = await FaultProxy(url.host or "127.0.0.1", url.port or 5432).start()
    try:
        yield proxy
    finally:
        await proxy.stop()


@pytest.fixture
async def backend_proxy(backend: str, request: pytest.FixtureRequest
                        ) -> AsyncIterator[FaultProxy | None]:
    """On PostgreSQL, a proxy as ``fault_proxy``; on sqlite, None."""
    if backend != "postgres":
        yield None
        return
    server: PgServer = request.getfixturevalue("pg_server")
    url = parse_database_url(server.admin_url)
    proxy = await FaultProxy(url.host or "127.0.0.1", url.port or 5432).start()
    try:
        yield proxy
    finally:
        await proxy.stop()


MakeDb = Callable[..., Awaitable[DatabaseManager]]


@pytest.fixture
async def make_db() -> AsyncIterator[MakeDb]:
    """``await make_db(url, **options)``: a manager with the fault models' tables, closed at
    the end of the test. Short timeouts by default, so a fault cannot stall the suite."""
    managers: list[DatabaseManager] = []

    async def make(url: str, *, schemas: bool = True, **options: Any) -> DatabaseManager:
        settings: dict[str, Any] = {"pool_size": 5, "max_overflow": 5, "pool_timeout": 2.0,
                                    **options}
        db = DatabaseManager(url, models=FAULT_MODELS, **settings)
        managers.append(db)
        if schemas:
            await db.generate_schemas()
        return db

    yield make
    for db in managers:
        await db.close()

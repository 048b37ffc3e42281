"""Fixtures of the anomaly suite: managers of the suite's models on both backends, and a
PostgreSQL database whose default isolation is SERIALIZABLE."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aegis_tortoise import DatabaseManager
from tests.conftest import PgServer, fresh_manager

MODELS = ["tests.concurrency.models"]


@pytest.fixture
async def cdb(db_url: str, backend: str) -> AsyncIterator[DatabaseManager]:
    """A manager of the suite's models on ``backend`` (pool up to 20 on PostgreSQL).

    sqlite runs on a file, so two managers (two connections) can contend for it.
    """
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            async for manager in fresh_manager(f"sqlite:///{Path(tmp) / 'c.db'}", backend,
                                               MODELS, pool_timeout=30):
                yield manager
        return
    async for manager in fresh_manager(db_url, backend, MODELS, pool_size=20,
                                       max_overflow=0, pool_timeout=30):
        yield manager


@pytest.fixture
async def cdbs(db_url: str, backend: str) -> AsyncIterator[list[DatabaseManager]]:
    """Managers that contend for one database: one manager with a pool of 20 on PostgreSQL;
    on sqlite two managers (two connections) on one file, since the sessions of one manager
    take turns on its only connection."""
    if backend == "postgres":
        async for manager in fresh_manager(db_url, backend, MODELS, pool_size=20,
                                           max_overflow=0, pool_timeout=30):
            yield [manager]
        return
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'c.db'}"
        async for first in fresh_manager(url, backend, MODELS, pool_timeout=60):
            second = DatabaseManager(url, models=MODELS, pool_timeout=60)
            try:
                yield [first, second]
            finally:
                await second.close()


@pytest.fixture(scope="session")
def serializable_database(pg_server: PgServer) -> str:
    """URL of a database created with ``default_transaction_isolation = serializable``."""
    name = pg_server.create_database("serializable")
    pg_server._sync(f'ALTER DATABASE "{name}" SET default_transaction_isolation = serializable')
    return pg_server.url_for(name)


@pytest.fixture
async def serial_db(serializable_database: str) -> AsyncIterator[DatabaseManager]:
    """A manager on the SERIALIZABLE-by-default database (no isolation_level of its own)."""
    async for manager in fresh_manager(serializable_database, "postgres", MODELS,
                                       pool_size=5, max_overflow=0):
        yield manager


@pytest.fixture
async def pg_db_doctors(pg_database: str) -> AsyncIterator[DatabaseManager]:
    """The suite's models on PostgreSQL (for scenarios sqlite's one connection cannot show)."""
    async for manager in fresh_manager(pg_database, "postgres", MODELS, pool_size=5,
                                       max_overflow=0):
        yield manager

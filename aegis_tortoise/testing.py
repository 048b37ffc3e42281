"""pytest plugin (entry point ``pytest11``): ``db_manager`` and ``db_session`` fixtures.

In-memory sqlite by default; PostgreSQL when ``--aegis-db-url`` or
``AEGIS_TEST_DATABASE_URL`` is set. Models come from ``--aegis-models``, the ini setting
``aegis_models`` or ``DATABASE_MODELS``. Every test gets empty tables: on sqlite a fresh
in-memory database, on PostgreSQL the tables are created once and truncated after each test.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from aegis_tortoise.manager import DatabaseManager
from aegis_tortoise.session import Session

__all__ = ["db_manager", "db_session"]

_schema_ready: set[str] = set()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("aegis-tortoise")
    group.addoption("--aegis-db-url", default=None,
                    help="database URL for the db_manager fixture (default: in-memory sqlite; "
                         "env AEGIS_TEST_DATABASE_URL)")
    group.addoption("--aegis-models", default=None,
                    help="comma-separated model modules for the db_manager fixture")
    parser.addini("aegis_models", "comma-separated model modules for db_manager", default="")


def _models(config: pytest.Config) -> list[str]:
    raw = (config.getoption("--aegis-models") or str(config.getini("aegis_models"))
           or os.environ.get("DATABASE_MODELS", ""))
    return [m.strip() for m in str(raw).replace("\n", ",").split(",") if m.strip()]


def _url(config: pytest.Config) -> str:
    return str(config.getoption("--aegis-db-url") or os.environ.get("AEGIS_TEST_DATABASE_URL")
               or "sqlite+aiosqlite:///:memory:")


@pytest_asyncio.fixture
async def db_manager(request: pytest.FixtureRequest) -> AsyncIterator[DatabaseManager]:
    """A :class:`DatabaseManager` on empty tables of the configured models."""
    url = _url(request.config)
    manager = DatabaseManager(url, models=_models(request.config), pool_size=5,
                              max_overflow=5, pool_timeout=30, pool_recycle=3600)
    try:
        if manager.url.is_memory or url not in _schema_ready:
            await manager.generate_schemas(safe=True)
            _schema_ready.add(url)
        yield manager
    finally:
        try:
            if not manager.url.is_memory and manager.is_initialized:
                await _truncate(manager)
        finally:
            await manager.close()


async def _truncate(manager: DatabaseManager) -> None:
    tables = [m._meta.db_table for m in manager._models]
    if not tables:
        return
    async with manager.session() as session:
        if manager.dialect == "postgres":
            quoted = ", ".join(f'"{t}"' for t in tables)
            await session.execute(f"TRUNCATE {quoted} RESTART IDENTITY CASCADE")
        else:
            for table in tables:
                await session.execute(f'DELETE FROM "{table}"')  # noqa: S608 - model tables


@pytest_asyncio.fixture
async def db_session(db_manager: DatabaseManager) -> AsyncIterator[Session]:
    """An open session of ``db_manager``; it commits when the test passes."""
    async with db_manager.session() as session:
        yield session

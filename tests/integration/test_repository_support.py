"""Shared helpers for the repository tests (no tests here).

``recorded_sql`` records every statement the driver sends on a session's connection: asyncpg's
query logger on PostgreSQL, sqlite3's trace callback on sqlite. Counting at the driver is what
makes "no SQL ran" and "N queries" assertions trustworthy.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from aegis_tortoise import BaseRepository, DatabaseManager, Session
from aegis_tortoise.examples.models import Policy, User
from tests.conftest import fresh_manager
from tests.integration.test_repository_models import GADGET_MODELS


class UserRepository(BaseRepository[User]):
    """The seed's repository, model inferred from the generic."""


class PolicyRepository(BaseRepository[Policy]):
    """Policies."""


class HiddenUserRepository(BaseRepository[User]):
    """Soft-deleted users are hidden unless ``include_deleted=True``."""

    hide_soft_deleted = True


@asynccontextmanager
async def recorded_sql(session: Session) -> AsyncIterator[list[str]]:
    """Yield a list that fills with the SQL statements sent on ``session``'s connection."""
    statements: list[str] = []
    raw: Any = session.connection._connection
    if session.dialect == "postgres":

        def log(record: Any) -> None:
            statements.append(record.query)

        raw.add_query_logger(log)
        try:
            yield statements
        finally:
            await asyncio.sleep(0)  # asyncpg calls loggers with loop.call_soon
            await asyncio.sleep(0)
            raw.remove_query_logger(log)
    else:
        await raw.set_trace_callback(statements.append)
        try:
            yield statements
        finally:
            await raw.set_trace_callback(None)


def selects(statements: list[str]) -> list[str]:
    """The SELECT statements among ``statements``."""
    return [s for s in statements if s.lstrip().upper().startswith("SELECT")]


def inserts(statements: list[str]) -> list[str]:
    """The INSERT statements among ``statements`` (create_many's PostgreSQL statement is
    ``WITH u AS (...), i AS (INSERT ...) SELECT ...``: keys drawn in the statement)."""
    return [s for s in statements if s.lstrip().upper().startswith("INSERT")
            or (s.lstrip().upper().startswith("WITH") and " AS (INSERT INTO " in s.upper())]


@pytest.fixture(name="gadgets")
async def gadgets_fixture(db_url: str, backend: str) -> AsyncIterator[DatabaseManager]:
    """A manager of the Gadget model (every kind of default, no soft delete)."""
    async for manager in fresh_manager(db_url, backend, GADGET_MODELS, pool_size=2,
                                       max_overflow=0):
        yield manager

"""with_db_retry against a real failure: the first attempt's connection is killed."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
import pytest

from aegis_tortoise import (
    DatabaseConnectionError,
    DatabaseManager,
    DuplicateEntityError,
    PoolTimeoutError,
    with_db_retry,
)
from aegis_tortoise.examples.models import Policy, User
from aegis_tortoise.examples.repositories import UserRepository
from tests.conftest import EXAMPLE_MODELS, count_rows


async def _kill(admin: asyncpg.Connection, pid: int) -> None:
    assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
    for _ in range(500):
        if not await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid):
            return
        await asyncio.sleep(0.01)


async def test_killed_connection_is_retried_and_writes_once(
    pg_db: DatabaseManager, pg_admin: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    attempts: list[int] = []

    @with_db_retry(max_attempts=3, backoff_factor=0.01)
    async def create_user_with_policy(email: str) -> int:
        async with pg_db.session() as session:
            pid = (await session.execute("SELECT pg_backend_pid()")).scalar_one()
            attempts.append(pid)
            user = await User.create(email=email, name="R")
            if len(attempts) == 1:
                await _kill(pg_admin, pid)  # the server drops this session's connection
            await Policy.create(user=user, title="T")
            return int(user.id)

    with caplog.at_level(logging.WARNING, logger="aegis_tortoise.retry"):
        user_id = await create_user_with_policy("retry@x")
    assert len(attempts) == 2
    assert attempts[0] != attempts[1]  # the second attempt ran on a new connection
    assert "attempt 1 failed with DatabaseConnectionError" in caplog.text
    assert await count_rows(pg_db) == 1
    assert await count_rows(pg_db, "policies") == 1
    async with pg_db.session():
        assert (await User.get(id=user_id)).email == "retry@x"


async def test_server_that_stays_down_gives_a_chained_connection_error() -> None:
    db = DatabaseManager("postgresql://postgres@127.0.0.1:1/none", models=EXAMPLE_MODELS,
                         pool_timeout=2)
    calls = 0

    @with_db_retry(max_attempts=3, backoff_factor=0.001)
    async def op() -> None:
        nonlocal calls
        calls += 1
        async with db.session():
            pass

    try:
        with pytest.raises(DatabaseConnectionError) as info:
            await op()
    finally:
        await db.close()
    assert calls == 3
    assert isinstance(info.value.__cause__, DatabaseConnectionError)
    assert isinstance(info.value.__cause__.__cause__, OSError)


async def test_duplicate_is_not_retried(db: DatabaseManager) -> None:
    calls = 0

    @with_db_retry(max_attempts=3, backoff_factor=0)
    async def op() -> None:
        nonlocal calls
        calls += 1
        async with db.session() as session:
            await UserRepository(session).create({"email": "same@x", "name": "A"})
            await UserRepository(session).create({"email": "same@x", "name": "B"})

    with pytest.raises(DuplicateEntityError):
        await op()
    assert calls == 1
    assert await count_rows(db) == 0


async def test_pool_timeout_is_not_retried(pg_database: str) -> None:
    db = DatabaseManager(pg_database, models=EXAMPLE_MODELS, pool_size=1, max_overflow=0,
                         pool_timeout=0.1)
    calls = 0

    @with_db_retry(max_attempts=5, backoff_factor=0)
    async def op() -> None:
        nonlocal calls
        calls += 1
        async with db.session():
            pass

    try:
        async with db.session():  # holds the only connection
            with pytest.raises(PoolTimeoutError):
                await op()
    finally:
        await db.close()
    assert calls == 1

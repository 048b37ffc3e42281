"""SQLSTATE 25006 (read_only_sql_transaction) is judged by the session it happened in: the
caller's mistake in a readonly session (never retried), a server that turned read-only in
any other (retried by with_db_retry). The judgement must not leak to other sessions, other
managers or other tasks, nor be lost once the readonly session has closed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from tortoise.exceptions import BaseORMException

from aegis_tortoise import (
    DatabaseConnectionError,
    DatabaseManager,
    TransactionError,
    is_transient,
    with_db_retry,
)
from aegis_tortoise.examples.models import User
from tests.conftest import EXAMPLE_MODELS
from tests.integration.test_repository_support import UserRepository


async def test_a_tortoise_write_in_a_readonly_session_is_not_retried(
        db: DatabaseManager) -> None:
    """A plain Tortoise call leaves the session with Tortoise's own exception; with_db_retry
    judges it after the session closed, and must still see the readonly session's mistake."""
    calls = 0

    @with_db_retry(max_attempts=3, backoff_factor=0)
    async def write_in_readonly() -> None:
        nonlocal calls
        calls += 1
        async with db.session(readonly=True):
            await User.create(email="a@x.org", name="a")

    with pytest.raises(BaseORMException) as caught:
        await write_in_readonly()
    assert calls == 1
    assert not is_transient(caught.value)
    async with db.session() as session:
        assert await UserRepository(session).count() == 0


@pytest.fixture
async def fenced(pg_database: str, db: DatabaseManager) -> AsyncIterator[DatabaseManager]:
    """A second manager on the same database whose connections are read-only, as on a
    primary fenced with default_transaction_read_only (db: the tables exist)."""
    manager = DatabaseManager(pg_database, models=EXAMPLE_MODELS, pool_size=1, max_overflow=0,
                              pool_timeout=10,
                              server_settings={"default_transaction_read_only": "on"})
    yield manager
    await manager.close()


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_a_write_session_inside_a_readonly_one_is_retryable(
        db: DatabaseManager, fenced: DatabaseManager) -> None:
    """A read-write session opened while a readonly session is open in the same task (a
    service writing from a read handler): its 25006 is the server's, retryable."""
    async with db.session(readonly=True):
        with pytest.raises(DatabaseConnectionError, match="read-only") as caught:
            async with fenced.session() as session:
                await UserRepository(session).create({"email": "b@x.org", "name": "b"})
    assert is_transient(caught.value)


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_a_task_started_in_a_readonly_session_writes_retryably(
        db: DatabaseManager, fenced: DatabaseManager) -> None:
    """A task created while a readonly session is open copies the context: its own
    read-write sessions, even after the readonly session closed, are not readonly ones."""
    async def write() -> BaseException | None:
        await asyncio.sleep(0)
        try:
            async with fenced.session() as session:
                await UserRepository(session).create({"email": "c@x.org", "name": "c"})
        except Exception as exc:  # returned for the assertions
            return exc
        return None

    async with db.session(readonly=True):
        task = asyncio.create_task(write())
    error = await task
    assert isinstance(error, DatabaseConnectionError)
    assert is_transient(error)


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_readonly_sessions_closed_out_of_order_keep_their_judgement(
        db: DatabaseManager) -> None:
    """Two readonly sessions of one task closed in the other order than they were opened
    (an AsyncExitStack handed around, say): the one still open keeps refusing writes as the
    caller's mistake, not as a retryable server error."""
    first, second = db.session(readonly=True), db.session(readonly=True)
    await first.__aenter__()
    await second.__aenter__()
    await first.__aexit__(None, None, None)
    with pytest.raises(TransactionError, match="readonly session") as caught:
        await second.execute("DELETE FROM users")
    assert not is_transient(caught.value)
    await second.__aexit__(type(caught.value), caught.value, None)  # rolls back


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_a_25006_after_writes_retries_the_whole_unit_once_written(
        db: DatabaseManager) -> None:
    """A 25006 on a statement after other writes of the same transaction: the transaction is
    rolled back, so with_db_retry's new attempt of the whole unit writes each row once."""
    attempts = 0

    @with_db_retry(max_attempts=3, backoff_factor=0)
    async def unit() -> None:
        nonlocal attempts
        attempts += 1
        async with db.session() as session:
            users = UserRepository(session)
            await users.create({"email": "first@x.org", "name": "first"})
            if attempts == 1:  # the server turns read-only under the transaction
                await session.execute("SET LOCAL transaction_read_only = on")
            await users.create({"email": "second@x.org", "name": "second"})

    await unit()
    assert attempts == 2
    async with db.session() as session:
        result = await session.execute("SELECT email FROM users ORDER BY email")
        assert [row[0] for row in result.fetchall()] == ["first@x.org", "second@x.org"]

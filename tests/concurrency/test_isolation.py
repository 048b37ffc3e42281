"""Isolation levels: where they are set, when a read may skip BEGIN, and the lazy-read
lost update of issue 18 item 3 (a database whose default isolation is SERIALIZABLE)."""

from __future__ import annotations

import asyncio

import pytest

from aegis_tortoise import (
    BaseRepository,
    ConfigurationError,
    DatabaseConnectionError,
    DatabaseManager,
    DatabaseSettings,
    TransactionConflictError,
    TransactionError,
    TransactionManager,
    with_db_retry,
)
from tests.concurrency.models import Counter


async def _seed(db: DatabaseManager, value: int = 0) -> None:
    async with db.session() as session:
        await BaseRepository(session, Counter).create({"id": 1, "value": value})


async def _value(db: DatabaseManager) -> int:
    async with db.session() as session:
        found = await BaseRepository(session, Counter).get(1)
        return found.value


async def test_lazy_read_under_serializable_default_is_in_the_transaction(
        serial_db: DatabaseManager) -> None:
    """Issue 18 item 3: B reads before A writes and commits, then B writes what it read + 1.
    The read must belong to B's SERIALIZABLE transaction, so B's write is a serialization
    failure; before the fix B's read ran outside it and A's increment was lost."""
    await _seed(serial_db)
    a_read, b_read, a_done = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def a() -> None:
        async with serial_db.session() as session:
            repo = BaseRepository(session, Counter)
            seen = await repo.get(1)
            a_read.set()
            await b_read.wait()
            await repo.update(1, value=seen.value + 1)
        a_done.set()

    async def b() -> None:
        await a_read.wait()
        async with serial_db.session() as session:
            repo = BaseRepository(session, Counter)
            seen = await repo.get(1)
            b_read.set()
            await a_done.wait()
            await repo.update(1, value=seen.value + 1)

    results = await asyncio.gather(a(), b(), return_exceptions=True)
    assert results[0] is None
    assert isinstance(results[1], TransactionConflictError), results[1]
    assert await _value(serial_db) == 1


async def test_lazy_read_under_serializable_default_converges_with_retry(
        serial_db: DatabaseManager) -> None:
    await _seed(serial_db)

    @with_db_retry(max_attempts=100, backoff_factor=0.001, max_backoff=0.02, jitter=0.01)
    async def increment() -> None:
        async with serial_db.session() as session:
            repo = BaseRepository(session, Counter)
            seen = await repo.get(1)
            await asyncio.sleep(0)  # let the others read the same value
            await repo.update(1, value=seen.value + 1)

    async def worker() -> None:
        for _ in range(5):
            await increment()

    await asyncio.gather(*(worker() for _ in range(5)))
    assert await _value(serial_db) == 25


async def test_reads_begin_only_outside_read_committed(
        pg_db: DatabaseManager, serial_db: DatabaseManager) -> None:
    """A read before the first write skips BEGIN only where the effective level is READ
    COMMITTED: the session's, else the server's default."""
    cases = [(pg_db, None, False), (pg_db, "read committed", False),
             (pg_db, "repeatable read", True), (pg_db, "serializable", True),
             (serial_db, None, True), (serial_db, "read committed", False),
             (serial_db, "REPEATABLE_READ", True)]
    for manager, level, begins in cases:
        async with manager.session(isolation=level) as session:
            await session.connection.execute_query('SELECT 1 FROM "users"' if manager is pg_db
                                                   else 'SELECT 1 FROM "counters"')
            assert session.in_transaction is begins, (manager, level)


async def test_the_level_reaches_the_server(pg_db: DatabaseManager, pg_database: str) -> None:
    async def level_of(**kwargs: str) -> str:
        async with pg_db.session(**kwargs) as session:
            result = await session.execute("SHOW transaction_isolation")
            return str(result.scalar())

    assert await level_of() == "read committed"
    assert await level_of(isolation="repeatable read") == "repeatable read"
    assert await level_of(isolation="Serializable") == "serializable"
    async with TransactionManager(pg_db).transaction(isolation="serializable") as session:
        assert (await session.execute("SHOW transaction_isolation")).scalar() == "serializable"
    manager = DatabaseManager(pg_database, models=pg_db.models, pool_size=2,
                              isolation_level="repeatable read")
    try:
        async with manager.session() as session:
            assert session.isolation == "repeatable read"
            assert (await session.execute("SHOW transaction_isolation")).scalar() == (
                "repeatable read")
        async with manager.session(isolation="read committed") as session:
            assert (await session.execute("SHOW transaction_isolation")).scalar() == (
                "read committed")
    finally:
        await manager.close()


async def test_a_level_after_begin_or_of_a_savepoint_is_refused(db: DatabaseManager) -> None:
    async with db.session() as session:
        session.set_isolation("serializable")  # before the first statement: fine
        assert session.isolation == "serializable"
        await session.execute("SELECT 1")
        with pytest.raises(TransactionError, match="already begun"):
            session.set_isolation("repeatable read")
        with pytest.raises(TransactionError, match="savepoint cannot run at another"):
            async with TransactionManager(session).transaction(isolation="serializable"):
                pass
        await session.commit()
        session.set_isolation("read committed")  # the next transaction's
        assert (await session.execute("SELECT 2")).scalar() == 2


async def test_bad_levels_name_the_option(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match="isolation_level must be one of"):
        DatabaseManager("sqlite:///:memory:", models=[], isolation_level="snapshot")
    db = DatabaseManager("sqlite:///:memory:", models=[])
    with pytest.raises(ConfigurationError, match="isolation must be one of"):
        db.session(isolation="dirty read")
    monkeypatch.setenv("DATABASE_ISOLATION_LEVEL", "chaos")
    with pytest.raises(ConfigurationError, match="DATABASE_ISOLATION_LEVEL"):
        DatabaseSettings()
    monkeypatch.setenv("DATABASE_ISOLATION_LEVEL", "repeatable-read")
    assert DatabaseSettings().database_isolation_level == "repeatable read"
    assert DatabaseManager(models=[]).isolation_level == "repeatable read"


async def test_sqlite_accepts_every_level(sqlite_db: DatabaseManager) -> None:
    for level in ("read committed", "repeatable read", "serializable"):
        async with sqlite_db.session(isolation=level) as session:
            assert (await session.execute("SELECT 1")).scalar() == 1


async def test_retry_count_in_stats(serial_db: DatabaseManager) -> None:
    before = serial_db.stats()["retries"]
    calls = 0

    @with_db_retry(max_attempts=3, backoff_factor=0)
    async def flaky() -> None:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise DatabaseConnectionError("lost")

    await flaky()
    assert serial_db.stats()["retries"] == before + 2

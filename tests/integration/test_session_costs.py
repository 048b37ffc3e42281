"""What a session sends besides the caller's own statements (PostgreSQL), and that the
savings never change what is committed or leak state to the next user of a connection.

- A plain ORM read before the first write runs without BEGIN; a session that only reads
  sends no BEGIN/COMMIT. Writes, locking reads, unknown functions and raw SQL begin first.
- A connection goes back to the pool without asyncpg's reset query unless something ran
  that can leave state on it (SET, advisory locks, ...); then it gets the full reset.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from aegis_tortoise import DatabaseManager, Session
from aegis_tortoise.examples.models import User
from aegis_tortoise.examples.repositories import UserRepository
from tests.conftest import EXAMPLE_MODELS, asyncpg_dsn

pytestmark = pytest.mark.postgres


class _Log:
    """Every statement asyncpg sends on one connection (asyncpg's query logger)."""

    def __init__(self) -> None:
        self.queries: list[str] = []

    def __call__(self, record: Any) -> None:
        self.queries.append(record.query.strip().rstrip(";").upper())

    def control(self) -> list[str]:
        return [q for q in self.queries
                if q.startswith(("BEGIN", "COMMIT", "ROLLBACK", "SELECT PG_ADVISORY_UNLOCK"))]


@pytest.fixture
async def one_conn(pg_database: str, pg_db: DatabaseManager) -> AsyncIterator[DatabaseManager]:
    """A manager with a single connection, so consecutive sessions share it."""
    manager = DatabaseManager(pg_database, models=EXAMPLE_MODELS, pool_size=1,
                              max_overflow=0, pool_timeout=5)
    try:
        yield manager
    finally:
        await manager.close()


async def _queries_of(db: DatabaseManager, body: Any) -> list[str]:
    log = _Log()
    async with db.session() as session:
        session._conn.add_query_logger(log)
        await body(session)
    await _flush()
    return log.queries


async def _flush() -> None:
    # asyncpg calls query loggers with loop.call_soon: let them run.
    import asyncio

    await asyncio.sleep(0)
    await asyncio.sleep(0)


async def test_a_session_that_only_reads_sends_no_begin_or_commit(pg_db: DatabaseManager) -> None:
    async with pg_db.session() as session:
        user = await UserRepository(session).create({"email": "r@example.com", "name": "R"})

    async def reads(session: Session) -> None:
        repo = UserRepository(session)
        assert (await repo.get_by_id(user.id)) is not None
        assert await repo.count() == 1
        assert [u.id for u in await repo.list(limit=5, prefetch=["policies"])] == [user.id]

    queries = await _queries_of(pg_db, reads)
    assert len(queries) >= 4
    assert not [q for q in queries if q.startswith(("BEGIN", "COMMIT", "ROLLBACK"))], queries


async def test_a_write_begins_first_and_earlier_reads_do_not_change_the_outcome(
        pg_db: DatabaseManager) -> None:
    async def read_then_write_then_fail(session: Session) -> None:
        repo = UserRepository(session)
        assert await repo.count() == 0
        await repo.create({"email": "w@example.com", "name": "W"})
        raise RuntimeError("after the write")

    log = _Log()

    async def run() -> None:
        async with pg_db.session() as session:
            session._conn.add_query_logger(log)
            await read_then_write_then_fail(session)

    with pytest.raises(RuntimeError):
        await run()
    await _flush()
    first_write = next(i for i, q in enumerate(log.queries) if q.startswith("INSERT"))
    assert log.queries[first_write - 1].startswith("BEGIN")
    assert log.queries[-1].startswith("ROLLBACK")
    async with pg_db.session():
        assert await User.all().count() == 0  # the write was rolled back


async def test_locking_reads_and_unknown_functions_begin_first(pg_db: DatabaseManager) -> None:
    async def lock(session: Session) -> None:
        await User.select_for_update().using_db(session.connection).filter(id=1)

    queries = await _queries_of(pg_db, lock)
    assert queries[0].startswith("BEGIN")
    assert "FOR UPDATE" in queries[1]

    async def call(session: Session) -> None:
        await session.connection.execute_query("SELECT pg_advisory_xact_lock(42)")

    queries = await _queries_of(pg_db, call)
    assert queries[0].startswith("BEGIN")


async def test_raw_sql_always_runs_in_the_transaction(pg_db: DatabaseManager) -> None:
    async def raw(session: Session) -> None:
        await session.execute("SELECT count(*) FROM users")

    queries = await _queries_of(pg_db, raw)
    assert queries[0].startswith("BEGIN")
    assert queries[-1].startswith("COMMIT")


async def test_session_state_never_reaches_the_next_session(one_conn: DatabaseManager,
                                                            pg_database: str) -> None:
    async with one_conn.session() as session:
        pid = (await session.execute("SELECT pg_backend_pid()")).scalar_one()
        await session.execute("SET application_name = 'leaked'")
        await session.connection.execute_query("SELECT pg_advisory_lock(4242)")
        await session.execute('SELECT "pg_advisory_lock"(4243)')  # a quoted function name
    admin = await asyncpg.connect(asyncpg_dsn(pg_database))
    try:
        held = await admin.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = $1", pid)
        assert held == 0
    finally:
        await admin.close()
    async with one_conn.session() as session:
        assert (await session.execute("SELECT pg_backend_pid()")).scalar_one() == pid
        name = (await session.execute("SHOW application_name")).scalar_one()
        assert name != "leaked"


async def test_plain_sessions_skip_the_reset_query(one_conn: DatabaseManager) -> None:
    log = _Log()
    async with one_conn.session() as session:
        session._conn.add_query_logger(log)
        raw_conn = session._conn
        await UserRepository(session).count()
    async with one_conn.session() as session:
        assert session._conn is raw_conn  # the same connection, handed back and taken again
        await UserRepository(session).count()
    await _flush()
    assert not [q for q in log.queries if "RESET ALL" in q], log.queries

"""A second review of keyset pages and ``iterate`` (issue #18 items 7, 8, 9, 14, 17).

What it found: a task cancelled in a walk's BEGIN broke the session's later transactions on
PostgreSQL (any call's BEGIN, in fact); on sqlite a cancelled walk left its snapshot table,
another task's writes could enter a snapshot being taken, and every walk, even of one row,
cost a sweep, a temporary table and four more statements.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import decimal
import sys
from contextlib import aclosing
from typing import Any

import pytest

from aegis_tortoise import BaseRepository, DatabaseManager
from tests.differential.models import Item
from tests.integration.test_keyset_hardening import _users, _walk, items_db
from tests.integration.test_repository_support import UserRepository, recorded_sql

__all__ = ["items_db"]  # the fixture, imported for this module's tests

async def _seed(db: DatabaseManager) -> None:
    """Items with repeated values and NULLs in many columns."""
    async with db.session() as session:
        for i in range(29):
            await Item.create(
                using_db=session.connection, num=i % 4, name=f"i{i % 5}",
                big=None if i % 7 == 0 else (i % 3) * 10**12,
                flag=bool(i % 2),
                price=None if i % 4 == 1 else decimal.Decimal(f"{(i % 6) * 3}.{i % 2}5"),
                ratio=None if i % 5 == 2 else (i % 3) / 3,
                day=None if i % 6 == 3 else dt.date(2024, 1, 1 + i % 4),
                # Tortoise 1.1.9 cannot bind a time on sqlite.
                clock=None if i % 5 == 4 or db.dialect == "sqlite" else dt.time(10, i % 3, 0,
                                                                                 i % 2),
                moment=None if i % 4 == 0 else dt.datetime(2024, 3, 31, 0, 59, 59, i % 3,
                                                           tzinfo=dt.UTC),
                color=None if i % 3 == 0 else ["red", "green", "blue"][i % 3])


@pytest.mark.parametrize("order_by", [["-price", "ratio"], ["big", "-flag"],
                                      ["-day", "clock", "-price"], ["color", "-kind"],
                                      ["-ratio", "-big", "price"], ["-moment", "day"]])
async def test_more_fields_with_nulls_and_mixed_directions(items_db: DatabaseManager,
                                                           order_by: list[str]) -> None:
    """Decimal (sqlite's CAST), float, bigint, bool, date, time, enum and timestamp columns,
    several nullable ones in one ordering, mixed directions: Tortoise's order, page by page
    (1 and 3 rows) and by iterate (the sqlite snapshot table)."""
    await _seed(items_db)
    async with items_db.session() as session:
        repo = BaseRepository(session, Item)
        expected = await Item.all().using_db(session.connection).order_by(
            *order_by, "id").values_list("id", flat=True)
        for limit in (1, 3):
            assert await _walk(repo, 40, limit=limit, order_by=order_by) == expected
        got = [item.id async for item in repo.iterate(order_by=order_by, batch_size=4)]
        assert got == expected


async def _leftovers(session: Any) -> int:
    """Open cursors (PostgreSQL) or temporary tables (sqlite) of the session."""
    sql = ("SELECT count(*) FROM pg_cursors WHERE name <> ''" if session.dialect == "postgres"
           else "SELECT count(*) FROM sqlite_temp_master WHERE type = 'table'")
    return int((await session.execute(sql)).scalar())


@pytest.mark.parametrize("ticks", list(range(16)))
async def test_a_cancelled_iterate_leaves_the_session_usable(db: DatabaseManager,
                                                             ticks: int) -> None:
    """A task cancelled ``ticks`` loop steps into a walk (in its BEGIN, DECLARE, snapshot,
    FETCH or loop body): the session's next transactions work and nothing is left behind.

    Before: a cancelled BEGIN left asyncpg's transaction registered, so the session's later
    BEGINs were SAVEPOINTs outside any transaction; on sqlite the snapshot table stayed.
    """
    await _users(db, 30)
    async with db.session() as session:
        repo = UserRepository(session)

        async def walk() -> None:
            async for _u in repo.iterate(batch_size=5):
                await asyncio.sleep(0)

        task = asyncio.create_task(walk())
        for _ in range(ticks):
            await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await repo.create({"email": "a@x.io", "name": "w"})
        await session.commit()
        await repo.create({"email": "b@x.io", "name": "w"})
        await session.commit()
        assert await _leftovers(session) == 0
    async with db.session() as session:
        assert await UserRepository(session).count({"name": "w"}) == 2


@pytest.mark.parametrize("ticks", list(range(5)))
async def test_a_write_cancelled_in_its_begin_leaves_the_session_usable(
        pg_db: DatabaseManager, ticks: int) -> None:
    """The same for any call whose BEGIN is interrupted (here a create): nothing of it is
    written, and the session's next transactions are real ones."""
    async with pg_db.session() as session:
        repo = UserRepository(session)
        task = asyncio.create_task(repo.create({"email": "lost@x.io", "name": "c"}))
        for _ in range(ticks):
            await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await repo.create({"email": "a@x.io", "name": "w"})
        await session.commit()
        await repo.create({"email": "b@x.io", "name": "w"})
        await session.rollback()  # a real transaction: b is not written
    async with pg_db.session() as session:
        emails = {u.email for u in await UserRepository(session).list(limit=None)}
        assert "a@x.io" in emails
        assert "b@x.io" not in emails


async def test_two_walks_at_once_on_one_session(db: DatabaseManager) -> None:
    """Two walks interleaved on one session: each complete, nothing left behind."""
    await _users(db, 30)
    async with db.session() as session:
        repo = UserRepository(session)
        a = repo.iterate(batch_size=4)
        b = repo.iterate(order_by="-id", batch_size=7)
        pairs = []
        async with aclosing(a), aclosing(b):
            async for x in a:
                y = await b.__anext__()
                pairs.append((x.id, y.id))
        assert [p[0] for p in pairs] == sorted(p[0] for p in pairs)
        assert len(pairs) == 30
        assert await _leftovers(session) == 0


async def test_a_writer_task_does_not_enter_the_snapshot(db: DatabaseManager) -> None:
    """Another task writes on the session while the walk begins: the walk takes its
    snapshot as one operation of the session (before: the writer's rows landed between the
    sqlite table's CREATE and its INSERT ... SELECT and were walked)."""
    await _users(db, 30)
    async with db.session() as session:
        repo = UserRepository(session)

        async def walk() -> list[int]:
            return [u.id async for u in repo.iterate(batch_size=3)]

        async def write() -> None:
            for i in range(20):
                await repo.create({"email": f"w{i}@x.io", "name": "w"})

        seen, _ = await asyncio.gather(walk(), write())
        assert len(seen) == 30
        assert await _leftovers(session) == 0
    async with db.session() as session:
        assert await UserRepository(session).count({"name": "w"}) == 20


async def test_a_small_sqlite_walk_is_one_select(sqlite_db: DatabaseManager) -> None:
    """No snapshot table (CREATE, INSERT, max, DROP, a sweep) for a walk of one batch."""
    ids = await _users(sqlite_db, 12)
    async with sqlite_db.session() as session:
        repo = UserRepository(session)
        async with recorded_sql(session) as statements:
            assert [u.id async for u in repo.iterate(batch_size=12)] == ids
        assert len(statements) == 1, statements
        # One more row: the snapshot table, whose first batch is the SELECT's.
        async with recorded_sql(session) as statements:
            got = [u.id async for u in repo.iterate(order_by="-id", batch_size=11)]
        assert got == ids[::-1]
        assert sum("CREATE TEMP TABLE" in s for s in statements) == 1
        assert await _leftovers(session) == 0


@pytest.mark.parametrize("size", [2**31, sys.maxsize])
async def test_huge_batch_sizes_and_limits_read_everything(db: DatabaseManager,
                                                           size: int) -> None:
    """``batch_size=sys.maxsize`` ("all at once"): PostgreSQL refused ``FETCH FORWARD`` of
    more than a 32-bit count with a syntax error that aborted the transaction; sqlite could
    not bind ``LIMIT batch_size + 1``. The session goes on after both."""
    ids = await _users(db, 7)
    async with db.session() as session:
        repo = UserRepository(session)
        assert [u.id async for u in repo.iterate(batch_size=size)] == ids
        page = await repo.paginate_keyset(limit=size)
        assert [u.id for u in page.items] == ids
        assert not page.has_next
        await repo.create({"email": "after@x.io", "name": "w"})
    async with db.session() as session:
        assert await UserRepository(session).count({"name": "w"}) == 1

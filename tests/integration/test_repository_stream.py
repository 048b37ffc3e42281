"""iterate/iterate_batches: every row once, in order, in bounded batches; early exits close
the server-side cursor and leave the session usable; cancellation leaves nothing open."""

from __future__ import annotations

import asyncio
import gc
from contextlib import aclosing

import asyncpg
import pytest

from aegis_tortoise import DatabaseManager, ValidationError
from aegis_tortoise.examples.models import User
from tests.conftest import asyncpg_dsn
from tests.integration.test_repository_support import (
    HiddenUserRepository,
    UserRepository,
    recorded_sql,
)

N = 2_500


async def _seed(db: DatabaseManager) -> None:
    async with db.session() as session:
        await UserRepository(session).create_many(
            [{"email": f"s{i:05d}@x.io", "name": f"n{i % 10}"} for i in range(N)])


async def _open_cursors(session: object) -> int:
    result = await session.execute(  # type: ignore[attr-defined]
        "SELECT count(*) FROM pg_cursors WHERE name <> ''")
    return int(result.scalar())


async def test_iterate_equals_plain_tortoise(db: DatabaseManager, backend: str) -> None:
    await _seed(db)
    async with db.session() as session:
        repo = UserRepository(session)
        async with recorded_sql(session) as sql:
            got = [u.id async for u in repo.iterate(order_by=["-name", "email"],
                                                    batch_size=1000)]
        expected = await User.all().order_by("-name", "email", "id").values_list("id",
                                                                                flat=True)
        assert got == expected
        if backend == "postgres":
            assert sum("FETCH FORWARD 1000" in s for s in sql) == 3
            assert any(s.startswith("DECLARE") for s in sql)
            assert any(s.startswith("CLOSE") for s in sql)
            assert await _open_cursors(session) == 0
        sizes = [len(b) async for b in repo.iterate_batches(filters={"name": "n3"},
                                                             batch_size=100)]
        assert sizes == [100, 100, 50]
        hidden = HiddenUserRepository(session)
        await hidden.soft_delete_where({"name": "n3"})
        assert [u async for u in hidden.iterate(filters={"name": "n3"})] == []
        # A filter only the QuerySet renders: inside the cursor (or snapshot) as pk IN (...).
        got = [u.id async for u in repo.iterate(filters={"email__icontains": "S0001"},
                                                batch_size=3)]
        assert got == await User.filter(email__icontains="s0001").order_by("id").values_list(
            "id", flat=True)


async def test_loop_body_may_use_the_session(db: DatabaseManager) -> None:
    await _seed(db)
    async with db.session() as session:
        repo = UserRepository(session)
        async for batch in repo.iterate_batches(batch_size=500):
            await repo.update_many([{"id": u.id, "name": "seen"} for u in batch])
        assert await repo.count({"name": "seen"}) == N


@pytest.mark.parametrize("how", ["break", "exception"])
async def test_leaving_early_closes_the_cursor(db: DatabaseManager, backend: str,
                                              how: str) -> None:
    await _seed(db)
    async with db.session() as session:
        repo = UserRepository(session)
        seen = 0
        try:
            async for _user in repo.iterate(batch_size=100):
                seen += 1
                if seen == 150:
                    if how == "break":
                        break
                    raise KeyError(how)  # noqa: TRY301 - leaving the loop by an error
        except KeyError:
            pass
        gc.collect()
        await asyncio.sleep(0.05)  # the generator's aclose() runs as a task
        if backend == "postgres":
            assert await _open_cursors(session) == 0
        assert await repo.count() == N
        await repo.create({"email": "after@x.io", "name": "after"})
    async with db.session() as session:
        assert await UserRepository(session).count() == N + 1


async def test_aclosing_closes_at_once(db: DatabaseManager, backend: str) -> None:
    await _seed(db)
    async with db.session() as session:
        repo = UserRepository(session)
        async with aclosing(repo.iterate(batch_size=100)) as users:
            async for user in users:
                if user.id > 120:
                    break
        if backend == "postgres":
            assert await _open_cursors(session) == 0
        assert await repo.count() == N


async def test_bad_arguments(db: DatabaseManager) -> None:
    async with db.session() as session:
        repo = UserRepository(session)
        with pytest.raises(ValidationError):
            [u async for u in repo.iterate(batch_size=0)]
        with pytest.raises(ValidationError):
            [u async for u in repo.iterate(order_by="email__nope")]
        with pytest.raises(ValidationError):
            [u async for u in repo.iterate(filters={"nope": 1})]
        assert await repo.count() == 0


async def test_cancellation_leaves_no_cursor_or_transaction(pg_db: DatabaseManager,
                                                           pg_database: str) -> None:
    await _seed(pg_db)
    started = asyncio.Event()

    async def walk() -> None:
        async with pg_db.session() as session:
            async for _user in UserRepository(session).iterate(batch_size=10):
                started.set()
                await asyncio.sleep(0.01)

    task = asyncio.create_task(walk())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    conn = await asyncpg.connect(asyncpg_dsn(pg_database))
    try:
        for _ in range(50):
            busy = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND state LIKE 'idle in transaction%'")
            if busy == 0:
                break
            await asyncio.sleep(0.02)
        assert busy == 0
    finally:
        await conn.close()
    async with pg_db.session() as session:
        assert await _open_cursors(session) == 0
        assert await UserRepository(session).count() == N

"""Row locks through the repository: the work-queue claim (skip_locked), nowait, what each
read method locks, and advisory locks."""

from __future__ import annotations

import asyncio
import time

import pytest

from aegis_tortoise import (
    BaseRepository,
    DatabaseManager,
    LockNotAvailableError,
    TransactionError,
    TransactionManager,
    ValidationError,
)
from aegis_tortoise._locks import advisory_key
from aegis_tortoise.examples.models import User
from tests.concurrency.models import Counter, Job

JOBS, WORKERS, BATCH = 10_000, 8, 50


async def test_queue_claim_processes_each_job_once(cdb: DatabaseManager) -> None:
    async with cdb.session() as session:
        await BaseRepository(session, Job).create_many({} for _ in range(JOBS))

    async def worker() -> list[int]:
        claimed: list[int] = []
        while True:
            async with cdb.session() as session:
                repo = BaseRepository(session, Job)
                jobs = await repo.list(filters={"status": "ready"}, limit=BATCH,
                                       for_update="skip_locked")
                if not jobs:
                    return claimed
                ids = [job.id for job in jobs]
                await session.execute("UPDATE jobs SET status = 'done', done = done + 1 "
                                      f"WHERE id IN ({','.join(map(str, ids))})")
                claimed.extend(ids)

    results = await asyncio.gather(*(worker() for _ in range(WORKERS)))
    every = [job for claimed in results for job in claimed]
    assert len(every) == JOBS
    assert len(set(every)) == JOBS
    async with cdb.session() as session:
        result = await session.execute("SELECT done, count(*) FROM jobs GROUP BY done")
        assert dict(result.all()) == {1: JOBS}


async def test_nowait_on_a_held_row(pg_db_doctors: DatabaseManager) -> None:
    db = pg_db_doctors
    async with db.session() as session:
        await BaseRepository(session, Counter).create({"id": 1, "value": 0})
    async with db.session() as holder:
        await BaseRepository(holder, Counter).get(1, for_update=True)
        async with db.session() as other:
            repo = BaseRepository(other, Counter)
            started = time.perf_counter()
            with pytest.raises(LockNotAvailableError) as caught:
                async with TransactionManager(other).transaction():
                    await repo.get_by_id(1, for_update="nowait")
            elapsed = time.perf_counter() - started
            assert elapsed < 0.1, elapsed
            error = caught.value
            assert (error.status_code, str(error.error_code)) == (409, "DB_2004")
            assert error.details["sqlstate"] == "55P03"
            # The savepoint took the failure: the session goes on.
            assert await repo.count() == 1
            assert await repo.get_by_id(1, for_update="skip_locked") is None
            assert await repo.list(for_update="skip_locked") == []
            await repo.create({"id": 2, "value": 5})
    async with db.session() as session:
        assert await BaseRepository(session, Counter).count() == 2


async def test_each_read_method_takes_the_lock(pg_db_doctors: DatabaseManager) -> None:
    db = pg_db_doctors
    async with db.session() as session:
        await BaseRepository(session, Counter).create_many(
            [{"id": i, "value": i} for i in range(1, 6)])
    reads = {
        "get_by_id": lambda repo: repo.get_by_id(3, for_update=True),
        "get": lambda repo: repo.get(3, for_update=True),
        "get_by_ids": lambda repo: repo.get_by_ids([5, 3], for_update=True),
        "list": lambda repo: repo.list(filters={"value__gte": 3}, for_update=True),
        "list_of": lambda repo: repo.list(filters={"id": 3}, for_update=True, of=[Counter]),
    }
    for name, read in reads.items():
        async with db.session() as holder:
            await read(BaseRepository(holder, Counter))
            async with db.session() as other:
                probe = BaseRepository(other, Counter)
                free = await probe.list(for_update="skip_locked", limit=None)
                assert 3 not in [row.id for row in free], name
                assert [row.id for row in free][:2] == [1, 2], name


async def test_sqlite_for_update_takes_the_write_lock(cdbs: list[DatabaseManager],
                                                     backend: str) -> None:
    """sqlite: a locking read begins with BEGIN IMMEDIATE, so another connection's write
    waits until the session ends; a plain read leaves it free."""
    if backend != "sqlite":
        pytest.skip("PostgreSQL locks rows: test_each_read_method_takes_the_lock")
    mine, theirs = cdbs
    async with mine.session() as session:
        await BaseRepository(session, Counter).create({"id": 1, "value": 0})

    async def other_write() -> None:
        async with theirs.session() as session:
            await BaseRepository(session, Counter).update(1, value=7)

    for lock, key in ((False, None), (True, None), (False, "job")):
        async with mine.session() as session:
            repo = BaseRepository(session, Counter)
            if key is not None:
                assert await session.advisory_lock(key) is True
            else:
                await repo.get(1, for_update=lock)
            assert session.in_transaction is (lock or key is not None)
            writer = asyncio.create_task(other_write())
            await asyncio.sleep(0.3)
            assert writer.done() is not (lock or key is not None), (lock, key)
        await asyncio.wait_for(writer, 10)


async def test_bad_lock_arguments(db: DatabaseManager) -> None:
    async with db.session() as session:
        repo = BaseRepository(session, User)
        with pytest.raises(ValidationError, match="for_update must be"):
            await repo.get_by_id(1, for_update="later")  # type: ignore[arg-type]
        with pytest.raises(ValidationError, match="give for_update"):
            await repo.list(of=["users"])
        with pytest.raises(ValidationError, match="advisory lock key"):
            await session.advisory_lock(1.5)  # type: ignore[arg-type]


async def test_advisory_lock(pg_db_doctors: DatabaseManager) -> None:
    db = pg_db_doctors
    assert advisory_key("nightly-report") == advisory_key("nightly-report")
    assert advisory_key(7) == 7
    async with db.session() as holder:
        assert await holder.advisory_lock("nightly-report") is True
        async with db.session() as other:
            assert await other.advisory_lock("nightly-report", wait=False) is False
            assert await other.advisory_lock("another", wait=False) is True
    # Transaction-scoped: released when the holder's transaction ended.
    async with db.session() as again:
        assert await again.advisory_lock("nightly-report", wait=False) is True

    held = asyncio.Event()

    async def hold_for_a_while() -> None:
        async with db.session() as session:
            await session.advisory_lock(42)
            held.set()
            await asyncio.sleep(0.3)

    first = asyncio.create_task(hold_for_a_while())
    await held.wait()
    started = time.perf_counter()
    async with db.session() as waiter:
        await waiter.advisory_lock(42)  # waits for the first transaction to end
        waited = time.perf_counter() - started
    await first
    assert waited > 0.2, waited


async def test_a_level_cannot_be_set_on_an_open_savepoint(db: DatabaseManager) -> None:
    async with db.session() as session, session.savepoint():
        with pytest.raises(TransactionError):
            session.set_isolation("serializable")

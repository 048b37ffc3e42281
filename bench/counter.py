"""The contended counter (issue 19): 50 tasks increment one row, on a pool of 20.

A is hand-written asyncpg: ``BEGIN; SELECT value ... FOR UPDATE; UPDATE ...; COMMIT``. E runs
each of the library's three strategies (the ``tests/concurrency`` anomaly suite proves each
keeps every increment): ``for_update`` (``repo.get(1, for_update=True)`` then ``update``),
``versioned`` (``update(..., expected_version=...)``, re-read after a
``ConcurrentUpdateError`` after a random pause) and ``serializable`` (the unit under
SERIALIZABLE, re-run by ``with_db_retry``). Every sample checks that the counter went up by
exactly the number of increments.
"""

from __future__ import annotations

import asyncio
import random

import asyncpg

from aegis_tortoise import BaseRepository, ConcurrentUpdateError, DatabaseManager, with_db_retry
from bench.counter_models import BenchCounter, BenchTally
from bench.workload import POOL_SIZE

__all__ = ["STRATEGIES", "TASKS", "AegisCounter", "AsyncpgCounter", "CounterEnv"]

TASKS = 50
#: The bench's operation key of each strategy of E.
STRATEGIES = {"counter_for_update": "for_update", "counter_versioned": "versioned",
              "counter_serializable": "serializable"}
_DDL = """
CREATE TABLE IF NOT EXISTS bench_counter (id INT PRIMARY KEY, value INT NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS bench_tally (id INT PRIMARY KEY, value INT NOT NULL DEFAULT 0,
                                        version INT NOT NULL DEFAULT 1);
"""


class CounterEnv:
    """A pool of 20 connections and one counter row; closed after a sample."""

    table = "bench_counter"

    async def increment(self, op: str) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class AsyncpgCounter(CounterEnv):
    """(A) ``SELECT ... FOR UPDATE`` and ``UPDATE`` in one transaction, for every row."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @classmethod
    async def start(cls, dsn: str) -> AsyncpgCounter:
        pool = await asyncpg.create_pool(dsn, min_size=0, max_size=POOL_SIZE)
        async with pool.acquire() as conn:
            await conn.execute(_DDL)
        return cls(pool)

    async def increment(self, op: str) -> None:
        del op  # A's way is the same for every row: the floor
        async with self.pool.acquire() as conn, conn.transaction():
            value = await conn.fetchval(
                "SELECT value FROM bench_counter WHERE id = 1 FOR UPDATE")
            await conn.execute("UPDATE bench_counter SET value = $1 WHERE id = 1", value + 1)

    async def close(self) -> None:
        await self.pool.close()


class AegisCounter(CounterEnv):
    """(E) The library's three strategies, on a manager with a pool of 20."""

    def __init__(self, db: DatabaseManager) -> None:
        self.db = db

    @classmethod
    async def start(cls, url: str) -> AegisCounter:
        db = DatabaseManager(url, models=["bench.counter_models"], pool_size=POOL_SIZE,
                             max_overflow=0, pool_timeout=60)
        await db.generate_schemas()
        return cls(db)

    async def increment(self, op: str) -> None:
        strategy = STRATEGIES[op]
        if strategy == "for_update":
            await self._for_update()
        elif strategy == "versioned":
            await self._versioned()
        else:
            await self._serializable()

    async def _for_update(self) -> None:
        async with self.db.session() as session:
            repo = BaseRepository(session, BenchCounter)
            counter = await repo.get(1, for_update=True)
            await repo.update(1, value=counter.value + 1)

    async def _versioned(self) -> None:
        while True:
            try:
                async with self.db.session() as session:
                    repo = BaseRepository(session, BenchTally)
                    tally = await repo.get(1)
                    await repo.update(tally, value=tally.value + 1)
                return
            except ConcurrentUpdateError:
                await asyncio.sleep(random.uniform(0, 0.3))

    async def _serializable(self) -> None:
        await _serializable_unit(self.db)

    async def close(self) -> None:
        await self.db.close()


@with_db_retry(max_attempts=1000, backoff_factor=0, jitter=0.3)
async def _serializable_unit(db: DatabaseManager) -> None:
    async with db.session(isolation="serializable") as session:
        repo = BaseRepository(session, BenchCounter)
        counter = await repo.get(1)
        await repo.update(1, value=counter.value + 1)


async def run_sample(env: CounterEnv, op: str, increments: int) -> tuple[float, int]:
    """Reset the counter, run ``increments`` increments from :data:`TASKS` tasks; return
    (elapsed seconds, the counter's final value)."""
    table = "bench_tally" if (isinstance(env, AegisCounter)
                              and STRATEGIES[op] == "versioned") else "bench_counter"
    columns, values = ("id, value, version", "1, 0, 1") if table == "bench_tally" else (
        "id, value", "1, 0")
    await _sql(env, f"INSERT INTO {table} ({columns}) VALUES ({values}) "
                    "ON CONFLICT (id) DO UPDATE SET value = 0")
    per_task, extra = divmod(increments, TASKS)

    async def task(n: int) -> None:
        for _ in range(n):
            await env.increment(op)

    start = asyncio.get_running_loop().time()
    await asyncio.gather(*(task(per_task + (1 if k < extra else 0)) for k in range(TASKS)))
    elapsed = asyncio.get_running_loop().time() - start
    value = await _sql(env, f"SELECT value FROM {table} WHERE id = 1")
    return elapsed, int(value)


async def _sql(env: CounterEnv, statement: str) -> object:
    if isinstance(env, AsyncpgCounter):
        async with env.pool.acquire() as conn:
            return await conn.fetchval(statement)
    assert isinstance(env, AegisCounter)
    async with env.db.session() as session:
        return (await session.execute(statement)).scalar()

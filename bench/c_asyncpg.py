"""(A) raw asyncpg on a pool: the floor every library is measured against."""

from __future__ import annotations

from typing import Any

import asyncpg

from bench.base import Contender, PoolEnv
from bench.counter import AsyncpgCounter
from bench.workload import MAX_CONNECTIONS, PAGE, POOL_SIZE, now

_COLS = "id, email, name, created_at, updated_at, deleted_at"
_GET = f"SELECT {_COLS} FROM users WHERE id = $1"
_INSERT = ("INSERT INTO users (email, name, created_at, updated_at) VALUES ($1, $2, $3, $3) "
           f"RETURNING {_COLS}")
_LIST = (f"SELECT {_COLS} FROM users WHERE deleted_at IS NULL ORDER BY email "
         "OFFSET $1 LIMIT $2")
_COUNT = "SELECT count(*) FROM users WHERE deleted_at IS NULL"
_UPDATE = f"UPDATE users SET name = $2, updated_at = $3 WHERE id = $1 RETURNING {_COLS}"
_UPDATE_ONLY = "UPDATE users SET name = $2, updated_at = $3 WHERE id = $1"
_POLICIES = ("SELECT id, user_id, title, created_at, updated_at, deleted_at FROM policies "
             "WHERE user_id = ANY($1::int[]) ORDER BY id")
_UNNEST = ("INSERT INTO users (email, name, created_at, updated_at) "
           "SELECT e, n, $3, $3 FROM unnest($1::text[], $2::text[]) AS t(e, n) RETURNING id")
_NEXTVALS = ("SELECT array_agg(nextval(pg_get_serial_sequence('users', 'id'))) "
             "FROM generate_series(1, $1)")
_VALUES = "INSERT INTO users (email, name, created_at, updated_at) VALUES ($1, $2, $3, $3)"


async def _get_update(pool: asyncpg.Pool, user_id: int, name: str) -> Any:
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(_GET, user_id)
        await conn.execute(_UPDATE_ONLY, user_id, name, now())
        return row


class _Env(PoolEnv):
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def get_update(self, user_id: int, name: str) -> Any:
        return await _get_update(self.pool, user_id, name)

    async def close(self) -> None:
        await self.pool.close()


class AsyncpgContender(Contender):
    """One pooled connection per unit of work, hand-written SQL, a transaction for writes.

    Update uses ``UPDATE ... RETURNING`` (one statement); create_many uses
    ``INSERT ... SELECT * FROM unnest(...) RETURNING id`` (``create_many_em`` is the same
    batch through ``executemany``, which returns no ids; ``create_many_copy`` the dict batch
    by binary COPY with ids taken from the sequence first).
    """

    key = "A"
    name = "asyncpg"

    def __init__(self, url: str) -> None:
        self.url = url
        self.pool: asyncpg.Pool | None = None

    async def start(self) -> None:
        self.pool = await asyncpg.create_pool(self.url, min_size=1, max_size=MAX_CONNECTIONS)

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()

    async def create(self, row: tuple[str, str]) -> Any:
        async with self.pool.acquire() as conn, conn.transaction():
            return await conn.fetchrow(_INSERT, row[0], row[1], now())

    async def get(self, user_id: int) -> Any:
        return await self.pool.fetchrow(_GET, user_id)

    async def list_page(self, offset: int) -> Any:
        return await self.pool.fetch(_LIST, offset, PAGE)

    async def count(self) -> int:
        return await self.pool.fetchval(_COUNT)

    async def update(self, user_id: int, name: str) -> Any:
        # A single statement is atomic: no explicit transaction needed.
        return await self.pool.fetchrow(_UPDATE, user_id, name, now())

    async def relations(self, ids: list[int]) -> Any:
        async with self.pool.acquire() as conn:
            users = await conn.fetch(f"SELECT {_COLS} FROM users WHERE id = ANY($1::int[]) "
                                     "ORDER BY id", ids)
            policies = await conn.fetch(_POLICIES, ids)
        by_user: dict[int, list[Any]] = {u["id"]: [] for u in users}
        for p in policies:
            by_user[p["user_id"]].append(p)
        return [(u, by_user[u["id"]]) for u in users]

    def norm_relations(self, result: Any) -> list[tuple[int, list[int]]]:
        return [(u["id"], [p["user_id"] for p in ps]) for u, ps in result]

    async def create_many(self, rows: list[tuple[str, str]]) -> list[int]:
        emails = [r[0] for r in rows]
        names = [r[1] for r in rows]
        async with self.pool.acquire() as conn:
            records = await conn.fetch(_UNNEST, emails, names, now())
        return [r[0] for r in records]

    async def create_many_dicts(self, rows: list[dict[str, Any]]) -> list[int]:
        emails = [r["email"] for r in rows]
        names = [r["name"] for r in rows]
        async with self.pool.acquire() as conn:
            records = await conn.fetch(_UNNEST, emails, names, now())
        return [r[0] for r in records]

    async def create_many_copy(self, rows: list[dict[str, Any]]) -> list[int]:
        """The binary COPY floor: ids from the sequence in one round trip, then
        ``copy_records_to_table`` (asyncpg's binary COPY), in one transaction."""
        t = now()
        async with self.pool.acquire() as conn, conn.transaction():
            ids: list[int] = await conn.fetchval(_NEXTVALS, len(rows))
            await conn.copy_records_to_table(
                "users", columns=("id", "email", "name", "created_at", "updated_at"),
                records=[(i, r["email"], r["name"], t, t) for i, r in zip(ids, rows, strict=True)])
        return ids

    async def create_many_em(self, rows: list[tuple[str, str]]) -> None:
        t = now()
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.executemany(_VALUES, [(e, n, t) for e, n in rows])

    async def pool_env(self) -> PoolEnv:
        pool = await asyncpg.create_pool(self.url, min_size=1, max_size=POOL_SIZE)
        return _Env(pool)

    async def counter_env(self) -> AsyncpgCounter:
        """A pool of 20 for the contended counter (bench/counter.py)."""
        return await AsyncpgCounter.start(self.url)

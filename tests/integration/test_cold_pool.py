"""A cold pool under a burst (#18 item 11): connection attempts finish and join the pool.

asyncpg's ``pool.acquire(timeout=...)`` cancels a connection attempt still in progress when
the timeout expires; on a cold pool under a burst no attempt then ever completes, and a
server that is up answers nothing but 503s. Here an attempt that has started always
finishes and joins the pool, so a burst on a cold pool is served as on a warm one.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any

import httpx
import pytest

from aegis_tortoise import DatabaseConnectionError, DatabaseManager
from aegis_tortoise.examples.fastapi_app import create_app
from tests.conftest import EXAMPLE_MODELS, PgServer, reset_pg_schema
from tests.faults.proxy import FaultProxy


@pytest.fixture(scope="module")
def cold_database(pg_server: PgServer) -> str:
    return pg_server.url_for(pg_server.create_database("cold"))


async def _idle(manager: DatabaseManager) -> int:
    pool = manager._client()._pool if manager.is_initialized else None  # the primary pool
    return 0 if pool is None else int(pool.get_idle_size())


async def test_a_started_connect_joins_the_pool(cold_database: str, proxy: FaultProxy) -> None:
    await reset_pg_schema(cold_database)
    database = cold_database.rsplit("/", 1)[-1]
    proxy.latency = 0.4  # per forwarded chunk: a connect takes ~1 s, longer than the timeout
    manager = DatabaseManager(proxy.url_for(database), models=EXAMPLE_MODELS,
                              pool_size=1, max_overflow=0, pool_timeout=0.5)
    try:
        with pytest.raises(DatabaseConnectionError):
            async with manager.session() as session:
                await session.execute("SELECT 1")
        # The attempt the timeout gave up on carries on and joins the pool...
        deadline = time.monotonic() + 10
        while await _idle(manager) == 0 and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)  # polls the pool: nothing to wait on
        assert await _idle(manager) == 1
        # ...where the next session finds it: no connect, no timeout (the old code cancelled
        # each attempt at pool_timeout, so every session failed while connects were slow).
        accepted = proxy.stats.accepted
        async with manager.session() as session:
            assert (await session.execute("SELECT 1")).scalar() == 1
        assert proxy.stats.accepted == accepted
    finally:
        proxy.latency = 0
        await manager.close()


async def _burst(manager: DatabaseManager, n: int, *, warm: bool) -> collections.Counter[Any]:
    """``n`` requests at once to the example app; each status, or the error code of a 503.

    A 404 (no such user) was served: its session ran its query.
    """
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(manager)),
                                 base_url="http://test") as client:
        if warm:
            first = await asyncio.gather(*(client.get("/users/1")
                                           for _ in range(manager.pool_size)))
            assert [r.status_code for r in first] == [404] * manager.pool_size, first[0].text
            assert await _idle(manager) == manager.pool_size
        responses = await asyncio.gather(*(client.get("/users/1") for _ in range(n)))
    return collections.Counter(
        r.status_code if r.status_code != 503 else r.json()["error_code"] for r in responses)


async def test_a_burst_on_a_cold_pool_is_served_as_on_a_warm_one(cold_database: str) -> None:
    # A burst the server serves within pool_timeout on a warm pool must be served on a
    # cold one too. (A burst so large that the event loop itself cannot reach the replies
    # within pool_timeout fails on both; the test above covers what the cold pool did
    # wrong then: attempts cancelled, never joining the pool.)
    n = 100
    await reset_pg_schema(cold_database)
    schema = DatabaseManager(cold_database, models=EXAMPLE_MODELS)
    await schema.generate_schemas()
    await schema.close()
    counts: dict[str, collections.Counter[Any]] = {}
    for kind in ("warm", "cold"):
        manager = DatabaseManager(cold_database, models=EXAMPLE_MODELS, pool_size=5,
                                  max_overflow=0, pool_timeout=1.0)
        try:
            counts[kind] = await _burst(manager, n, warm=kind == "warm")
            assert await _idle(manager) == manager.pool_size, kind  # every connect joined
        finally:
            await manager.close()
    assert counts["warm"] == counts["cold"] == {404: n}, counts

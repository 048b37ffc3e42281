"""PostgreSQL pool: bounded waits, bounded size, idle recycling, unreachable servers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from aegis_tortoise import DatabaseConnectionError, DatabaseManager, PoolTimeoutError
from aegis_tortoise.examples.models import User
from tests.conftest import EXAMPLE_MODELS, count_rows, reset_pg_schema


async def _manager(url: str, app: str, **options: float) -> DatabaseManager:
    await reset_pg_schema(url)
    db = DatabaseManager(f"{url}?application_name={app}", models=EXAMPLE_MODELS, **options)  # type: ignore[arg-type]
    await db.generate_schemas()
    return db


async def _server_connections(admin: asyncpg.Connection, app: str) -> int:
    count: int = await admin.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", app)
    return count


async def test_exhausted_pool_times_out_fast_and_recovers(pg_database: str) -> None:
    db = await _manager(pg_database, "aegis_pool_timeout", pool_size=1, max_overflow=0,
                        pool_timeout=0.5)
    try:
        holding = asyncio.Event()
        release = asyncio.Event()

        async def hold() -> None:
            async with db.session() as session:
                await session.execute("SELECT 1")
                holding.set()
                await release.wait()

        holder = asyncio.create_task(hold())
        await holding.wait()
        start = time.monotonic()
        with pytest.raises(PoolTimeoutError) as info:
            async with db.session():
                pass
        waited = time.monotonic() - start
        print(f"pool timeout observed after {waited:.3f} s (pool_timeout=0.5)")
        assert 0.2 <= waited <= 0.8
        assert info.value.error_code == "DB_2001"
        assert info.value.status_code == 503
        assert isinstance(info.value.__cause__, TimeoutError)
        assert db._active_sessions == 1
        release.set()
        await holder
        async with db.session():  # the pool works afterwards
            await User.create(email="after@x", name="A")
        assert await count_rows(db) == 1
        pool = db._client()._pool
        assert pool.get_size() == 1
        assert pool.get_idle_size() == 1
    finally:
        await db.close()


async def test_200_sessions_never_exceed_pool_size_plus_overflow(
    pg_database: str, pg_admin: asyncpg.Connection
) -> None:
    app = "aegis_pool_load"
    db = await _manager(pg_database, app, pool_size=5, max_overflow=5, pool_timeout=30)
    await db.close()  # generate_schemas' connection is gone: count only the load
    samples: list[int] = []
    done = asyncio.Event()

    async def sample() -> None:
        while not done.is_set():
            samples.append(await _server_connections(pg_admin, app))
            await asyncio.sleep(0.002)

    async def unit_of_work(i: int) -> None:
        async with db.session() as session:
            await User.create(email=f"{i}@x", name=str(i))
            await session.execute("SELECT pg_sleep(0.005)")

    sampler = asyncio.create_task(sample())
    try:
        await asyncio.gather(*(unit_of_work(i) for i in range(200)))
    finally:
        done.set()
        await sampler
    try:
        print(f"max server connections seen for 200 sessions: {max(samples)} "
              f"({len(samples)} samples)")
        assert max(samples) <= 10
        assert max(samples) > 1  # the sessions did run concurrently
        assert await count_rows(db) == 200
        pool = db._client()._pool
        assert pool.get_size() <= 10
        assert pool.get_idle_size() == pool.get_size()
    finally:
        await db.close()
    for _ in range(200):  # close() gives every connection back to the server
        if await _server_connections(pg_admin, app) == 0:
            break
        await asyncio.sleep(0.01)
    else:
        pytest.fail("connections left open after close()")


async def test_idle_connections_are_recycled(
    pg_database: str, pg_admin: asyncpg.Connection
) -> None:
    app = "aegis_pool_recycle"
    db = await _manager(pg_database, app, pool_size=2, max_overflow=0, pool_recycle=0.2)
    try:
        assert db._client()._pool._max_inactive_connection_lifetime == 0.2
        async with db.session() as session:
            first = (await session.execute("SELECT pg_backend_pid()")).scalar()
        for _ in range(300):  # idle longer than pool_recycle: closed by the pool
            if await _server_connections(pg_admin, app) == 0:
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("the idle connection was never closed")
        async with db.session() as session:  # and transparently replaced
            assert (await session.execute("SELECT pg_backend_pid()")).scalar() != first
    finally:
        await db.close()


async def test_pool_options_map_onto_asyncpg(pg_database: str) -> None:
    db = DatabaseManager(pg_database, models=EXAMPLE_MODELS, pool_size=3, max_overflow=4,
                         pool_timeout=2, pool_recycle=0)
    try:
        async with db.session():
            pool = db._client()._pool
            assert (pool._minsize, pool._maxsize) == (0, 7)
            assert pool._max_inactive_connection_lifetime == 0  # 0 disables recycling
            # A connect outlives pool_timeout (it joins the pool): _acquire.CONNECT_TIMEOUT.
            assert pool._connect_kwargs["timeout"] == 10
            assert pool.get_size() == 1
    finally:
        await db.close()


@pytest.fixture
async def silent_server() -> AsyncIterator[int]:
    """A TCP server that accepts connections and never answers: an unreachable database."""
    writers: list[asyncio.StreamWriter] = []

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port: int = server.sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_unanswered_connect_is_a_connection_error_not_pool_timeout(
    silent_server: int,
) -> None:
    db = DatabaseManager(f"postgresql://u:pw@127.0.0.1:{silent_server}/db",
                         models=EXAMPLE_MODELS, pool_timeout=0.3)
    try:
        with pytest.raises(DatabaseConnectionError) as info:
            async with db.session():
                pass
        # Retryable: the server may come back. An exhausted pool is not retried.
        assert not isinstance(info.value, PoolTimeoutError)
        assert "connect" in str(info.value)
        assert db._active_sessions == 0
    finally:
        await db.close()


async def test_sqlite_connection_wait_is_bounded_too() -> None:
    db = DatabaseManager("sqlite://:memory:", models=EXAMPLE_MODELS, pool_timeout=0.2)
    try:
        holding = asyncio.Event()
        release = asyncio.Event()

        async def hold() -> None:
            async with db.session():
                holding.set()
                await release.wait()

        holder = asyncio.create_task(hold())
        await holding.wait()
        with pytest.raises(PoolTimeoutError, match="sqlite"):
            async with db.session():
                pass
        release.set()
        await holder
        async with db.session() as session:
            assert (await session.execute("SELECT 1")).scalar() == 1
    finally:
        await db.close()


async def test_a_session_takes_a_free_connection_without_a_task(pg_database: str) -> None:
    """With connections free, a session's acquire takes one without starting a task (the
    fast path of aegis_tortoise._acquire), also while the pool has unconnected slots:
    asyncpg 0.32's LIFO queue hands out the newest connected holder, and the check looked at
    the oldest (unconnected) one, so every session paid a task and an asyncio.wait."""
    db = await _manager(pg_database, "aegis_fastpath", pool_size=4, max_overflow=0)
    loop = asyncio.get_running_loop()
    factory = loop.get_task_factory()
    started: list[object] = []

    def counting(loop_: asyncio.AbstractEventLoop, coro: Any, **kw: Any) -> asyncio.Task[Any]:
        started.append(getattr(coro, "__qualname__", None))  # asyncpg's release has one
        return asyncio.Task(coro, loop=loop_, **kw)

    try:
        async with db.session():
            pass  # one connection open, three slots not connected
        assert factory is None  # else counting() would bypass it
        loop.set_task_factory(counting)
        try:
            async with db.session() as session:
                await session.execute("SELECT 1")
        finally:
            loop.set_task_factory(factory)
        assert "_take" not in started  # aegis_tortoise._acquire's task for a waiter
    finally:
        await db.close()

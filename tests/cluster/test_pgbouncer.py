"""PgBouncer 1.18 in transaction pooling mode (a pool of 10 server connections).

The whole repository test module runs again here, through the bouncer with
``?pgbouncer=true`` (its tests are imported below; the ``db`` fixture of this module
replaces the suite's). Without the flag, the first failure names it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest

from aegis_tortoise import ConfigurationError, DatabaseManager, DatabaseSettings
from aegis_tortoise.errors import driver_error
from aegis_tortoise.examples.models import User
from aegis_tortoise.repository import BaseRepository
from tests.cluster.conftest import BOUNCER_POOL_SIZE, Topology
from tests.conftest import EXAMPLE_MODELS
from tests.integration.test_repository import *  # noqa: F403 - the module, re-run here

pytestmark = pytest.mark.postgres


class _Users(BaseRepository[User]):
    pass


@pytest.fixture(scope="module")
def bouncer_url(topology: Topology) -> str:
    """A database of its own on the primary, reached through the bouncer."""
    assert topology.bouncer is not None
    from tests.cluster.conftest import run_sync

    run_sync(topology.primary.fetchval('DROP DATABASE IF EXISTS "bounced"'))
    run_sync(topology.primary.fetchval('CREATE DATABASE "bounced"'))
    return topology.bouncer.url("bounced")


async def _reset(topology: Topology) -> None:
    conn = await asyncpg.connect(topology.primary.dsn.rsplit("/", 1)[0] + "/bounced")
    try:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
    finally:
        await conn.close()


@pytest.fixture
async def db(bouncer_url: str, topology: Topology) -> AsyncIterator[DatabaseManager]:
    """The repository tests' manager, through PgBouncer in transaction mode."""
    await _reset(topology)
    manager = DatabaseManager(f"{bouncer_url}?pgbouncer=true", models=EXAMPLE_MODELS,
                              pool_size=5, max_overflow=5, pool_timeout=10)
    await manager.generate_schemas()
    try:
        yield manager
    finally:
        await manager.close()


def test_the_flag_comes_from_url_setting_or_option(bouncer_url: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_PGBOUNCER", raising=False)
    assert DatabaseManager(f"{bouncer_url}?pgbouncer=true", models=[]).pgbouncer is True
    assert DatabaseManager(bouncer_url, models=[]).pgbouncer is False
    assert DatabaseManager(bouncer_url, models=[], pgbouncer=True).pgbouncer is True
    monkeypatch.setenv("DATABASE_PGBOUNCER", "true")
    assert DatabaseManager(bouncer_url, models=[]).pgbouncer is True
    assert DatabaseSettings().database_pgbouncer is True
    assert DatabaseManager(f"{bouncer_url}?pgbouncer=false", models=[]).pgbouncer is False


async def test_500_sessions_through_a_10_connection_pool(db: DatabaseManager,
                                                         bouncer_url: str) -> None:
    async def one(manager: DatabaseManager, i: int) -> None:
        async with manager.session() as session:
            repo = _Users(session)
            if i % 2:
                await repo.create({"email": f"u{i}@x.org", "name": f"user {i}"})
            assert await repo.get_by_id(10**9) is None
            assert (await session.execute("SELECT :i::int AS i", {"i": i})).scalar() == i

    # 50 client connections, PgBouncer's 10 server connections: it multiplexes them.
    big = DatabaseManager(f"{bouncer_url}?pgbouncer=true", models=EXAMPLE_MODELS,
                          pool_size=50, max_overflow=0, pool_timeout=30)
    started = time.perf_counter()
    try:
        results = await asyncio.gather(*(one(big, i) for i in range(500)),
                                       return_exceptions=True)
    finally:
        await big.close()
    errors = [r for r in results if isinstance(r, BaseException)]
    elapsed = time.perf_counter() - started
    print(f"\n500 sessions through a {BOUNCER_POOL_SIZE}-connection PgBouncer pool: "
          f"{elapsed:.2f} s, {len(errors)} errors")
    assert errors == []
    async with db.session() as session:
        assert await _Users(session).count() == 250


async def test_without_the_flag_the_first_failure_names_it(db: DatabaseManager,
                                                           bouncer_url: str) -> None:
    async with db.session() as session:
        await _Users(session).create({"email": "a@x.org", "name": "a"})
    plain = DatabaseManager(bouncer_url, models=EXAMPLE_MODELS, pool_size=20,
                            max_overflow=0, pool_timeout=10)

    async def read() -> None:
        async with plain.session() as session:
            await session.execute("SELECT count(*) FROM users WHERE name = :n", {"n": "a"})
            await _Users(session).count()

    async def rounds() -> None:
        for _ in range(20):
            await asyncio.gather(*(read() for _ in range(20)))

    try:
        with pytest.raises(ConfigurationError, match=r"\?pgbouncer=true") as caught:
            await rounds()
    finally:
        await plain.close()
    root = driver_error(caught.value)
    assert isinstance(root, (asyncpg.DuplicatePreparedStatementError,
                             asyncpg.InvalidSQLStatementNameError)), repr(root)


async def test_raw_sql_details_through_the_bouncer(db: DatabaseManager) -> None:
    async with db.session() as session:
        # No row: the column names come from the statement's description (unnamed here).
        result = await session.execute("SELECT id, email FROM users WHERE false")
        assert result.keys() == ("id", "email")
        assert result.all() == []
        await session.execute("SET LOCAL statement_timeout = 5000")
        assert (await session.execute("SHOW statement_timeout")).scalar() == "5s"
    async with db.session() as session:  # SET LOCAL ended with the transaction
        assert (await session.execute("SHOW statement_timeout")).scalar() == "0"

"""Roles that change under open pools (what Patroni does): a replica's node promoted, a
primary that turned read-only, and SQLSTATE 25006 outside and inside readonly sessions."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from aegis_tortoise import (
    DatabaseConnectionError,
    DatabaseManager,
    TransactionError,
    _replicas,
    is_transient,
    with_db_retry,
)
from aegis_tortoise.examples.models import User
from aegis_tortoise.repository import BaseRepository
from tests.cluster.conftest import (
    REPLICATED,
    ClusterFactory,
    Topology,
    make_pair,
    visible_on,
    where,
)
from tests.conftest import EXAMPLE_MODELS

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("standbys_back")]


class Users(BaseRepository[User]):
    pass


async def test_a_replica_url_on_a_primary_is_skipped_while_a_standby_is_healthy(
        truncated: Topology) -> None:
    """replica_urls over every node (as under Patroni, where any node may be the primary):
    the one that is a primary now serves no readonly session while a standby is usable."""
    primary, s1 = truncated.primary, truncated.standbys["s1"]
    db = DatabaseManager(primary.url(REPLICATED), models=EXAMPLE_MODELS,
                         replica_urls=[primary.url(REPLICATED), s1.url(REPLICATED)],
                         read_your_writes=0, pool_size=2, max_overflow=0, pool_timeout=10)
    only_primary = DatabaseManager(primary.url(REPLICATED), models=EXAMPLE_MODELS,
                                   replica_urls=[primary.url(REPLICATED)], read_your_writes=0,
                                   pool_size=2, max_overflow=0, pool_timeout=10)
    try:
        async with db.session() as session:
            await Users(session).create({"email": "p@x.org", "name": "p"})
        await visible_on(s1, "p@x.org")
        for _ in range(6):
            async with db.session(readonly=True) as session:
                assert await where(session) == (True, s1.port)
                assert await Users(session).count() == 1
        assert db.stats()["replica_reads"] == 6
        # No standby among the replicas: the primary serves, as a fallback (counted).
        for _ in range(2):
            async with only_primary.session(readonly=True) as session:
                assert await where(session) == (False, primary.port)
        assert only_primary.stats()["replica_fallbacks"] == 2
    finally:
        await db.close()
        await only_primary.close()


async def test_25006_is_transient_outside_readonly_sessions(truncated: Topology) -> None:
    """A write that reaches a read-only server (a standby, a demoted primary) is a
    connection-class error that with_db_retry retries; in a readonly session it stays the
    caller's mistake (TransactionError, never retried)."""
    s1 = truncated.standbys["s1"]
    on_standby = DatabaseManager(s1.url(REPLICATED), models=EXAMPLE_MODELS, pool_size=1,
                                 max_overflow=0, pool_timeout=10)
    try:
        with pytest.raises(DatabaseConnectionError, match="read-only") as caught:
            async with on_standby.session() as session:
                await Users(session).create({"email": "q@x.org", "name": "q"})
        assert caught.value.details["sqlstate"] == "25006"
        assert is_transient(caught.value)
        raw = await asyncpg.connect(s1.url(REPLICATED))
        try:
            with pytest.raises(asyncpg.ReadOnlySQLTransactionError) as raw_error:
                await raw.execute("INSERT INTO users (email, name) VALUES ('r', 'r')")
        finally:
            await raw.close()
        assert is_transient(raw_error.value)
        with pytest.raises(TransactionError, match="readonly session") as in_readonly:
            async with on_standby.session(readonly=True) as session:
                await session.execute("DELETE FROM users")
        assert not is_transient(in_readonly.value)
    finally:
        await on_standby.close()


async def test_a_fenced_primary_is_left_for_the_new_one(cluster_factory: ClusterFactory) -> None:
    """The primary turns read-only under an open pool (fenced with
    default_transaction_read_only, as an orchestrator may before it promotes another node)
    and the standby is promoted: the pooled connection's write fails with 25006, the
    connection is not reused, and with_db_retry's next attempt lands on the new primary."""
    old, new = make_pair(cluster_factory, "fence")
    url = (f"postgresql://postgres@127.0.0.1:{old.port},127.0.0.1:{new.port}/postgres"
           "?target_session_attrs=read-write")
    db = DatabaseManager(url, models=[], pool_size=1, max_overflow=0, pool_timeout=10)
    attempts: list[int] = []

    @with_db_retry(max_attempts=5, backoff_factor=0.05)
    async def write(key: str) -> int:
        async with db.session() as session:
            attempts.append((await where(session))[1])
            await session.execute("INSERT INTO fenced VALUES (:k)", {"k": key})
            return (await where(session))[1]

    try:
        async with db.session() as session:
            await session.execute("CREATE TABLE fenced (k text PRIMARY KEY)")
        assert await write("before") == old.port
        await old.fetchval("ALTER SYSTEM SET default_transaction_read_only = on")
        await old.fetchval("SELECT pg_reload_conf()")
        new.promote()
        attempts.clear()
        assert await write("after") == new.port
        assert attempts == [old.port, new.port]  # the pooled connection once, then the new
        assert await new.fetchval("SELECT count(*) FROM fenced") == 2
    finally:
        await db.close()
        new.stop("immediate")
        old.stop("immediate")


async def test_a_standby_back_serves_again_before_down_for(truncated: Topology) -> None:
    """With no replica usable, those skipped as down are checked again in the background
    (at most once per CHECK_EVERY): a standby that restarted (an old primary rejoining, under
    Patroni) serves readonly sessions again without their waiting out DOWN_FOR."""
    s2 = truncated.standbys["s2"]
    db = DatabaseManager(truncated.primary.url(REPLICATED), models=EXAMPLE_MODELS,
                         replica_urls=[s2.url(REPLICATED)], read_your_writes=0, pool_size=2,
                         max_overflow=0, pool_timeout=10)
    try:
        s2.stop("immediate")
        marked_down = time.monotonic()
        async with db.session(readonly=True) as session:
            assert (await where(session))[0] is False
        await asyncio.to_thread(s2.start)
        while True:
            async with db.session(readonly=True) as session:
                if await where(session) == (True, s2.port):
                    break
            assert time.monotonic() - marked_down < _replicas.DOWN_FOR - 0.5
            await asyncio.sleep(0.05)
    finally:
        await db.close()


async def test_a_skipped_replica_gives_its_turns_to_every_standby(
        truncated: Topology, monkeypatch: pytest.MonkeyPatch) -> None:
    """Round-robin over the replicas not known to be skipped: the primary's turns do not all
    go to the node listed after it."""
    monkeypatch.setattr(_replicas, "CHECK_EVERY", 600.0)  # measured once, in this test
    primary, s1, s2 = truncated.primary, truncated.standbys["s1"], truncated.standbys["s2"]
    db = DatabaseManager(primary.url(REPLICATED), models=EXAMPLE_MODELS,
                         replica_urls=[c.url(REPLICATED) for c in (primary, s1, s2)],
                         read_your_writes=0, pool_size=2, max_overflow=0, pool_timeout=10)
    try:
        ports = []
        for _ in range(7):
            async with db.session(readonly=True) as session:
                recovery, port = await where(session)
                assert recovery is True
                ports.append(port)
        # The first session found the primary (and took s1); then s1 and s2 take turns.
        assert ports.count(s1.port) == 4
        assert ports.count(s2.port) == 3
    finally:
        await db.close()

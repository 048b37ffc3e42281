"""Read replicas on real standbys: where readonly sessions land, skipping, read-your-writes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import httpx
import pytest
from fastapi import FastAPI

from aegis_tortoise import (
    DatabaseConnectionError,
    DatabaseManager,
    DatabaseSettings,
    Session,
    TransactionError,
    TransactionManager,
    _copy,
    _replicas,
)
from aegis_tortoise.examples.models import User
from aegis_tortoise.fastapi import session_dependency
from aegis_tortoise.repository import BaseRepository
from tests.cluster.conftest import REPLICATED, Topology, sql, standby_port, visible_on, where
from tests.conftest import EXAMPLE_MODELS

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("standbys_back")]


class Users(BaseRepository[User]):
    pass


def _manager(topology: Topology, *replicas: str, **options: object) -> DatabaseManager:
    urls = [topology.standbys[name].url(REPLICATED) for name in replicas]
    return DatabaseManager(topology.primary.url(REPLICATED), models=EXAMPLE_MODELS,
                           replica_urls=urls, pool_size=5, max_overflow=5, pool_timeout=10,
                           **options)  # type: ignore[arg-type]


async def _write(db: DatabaseManager, email: str) -> None:
    async with db.session() as session:
        await Users(session).create({"email": email, "name": email})


async def test_readonly_sessions_land_on_standbys_round_robin(truncated: Topology) -> None:
    db = _manager(truncated, "s1", "s2", read_your_writes=0, max_replica_lag=0.5)
    try:
        await _write(db, "a@x.org")
        for standby in truncated.standbys.values():
            await visible_on(standby, "a@x.org")
        await asyncio.sleep(0.6)  # idle and caught up: not lagging, however old its last replay
        ports = set()
        for _ in range(4):
            async with db.session(readonly=True) as session:
                ports.add(await standby_port(session))
                # Session state on a replica connection: reset before it is reused.
                await session.execute("SET statement_timeout = 5000")
                users = await Users(session).list(filters={"email": "a@x.org"})
                assert [u.email for u in users] == ["a@x.org"]
                assert await Users(session).count() == 1
        assert ports == {s.port for s in truncated.standbys.values()}
        assert db.stats()["replica_reads"] == 4
        async with db.session() as session:
            assert (await where(session))[0] is False
    finally:
        await db.close()


async def test_writes_in_a_readonly_session_fail_clearly(truncated: Topology) -> None:
    db = _manager(truncated, "s1", read_your_writes=0)
    try:
        with pytest.raises(TransactionError, match=r"readonly session") as caught:
            async with db.session(readonly=True) as session:
                await Users(session).create({"email": "b@x.org", "name": "b"})
        assert caught.value.details["sqlstate"] == "25006"
        with pytest.raises(TransactionError, match=r"db.session\(readonly=True\)"):
            async with db.session(readonly=True) as session:
                await session.execute("DELETE FROM users")
    finally:
        await db.close()


async def test_readonly_on_the_primary_is_still_read_only(truncated: Topology) -> None:
    db = _manager(truncated)  # no replicas: the primary serves, READ ONLY all the same
    try:
        async with db.session(readonly=True) as session:
            assert (await where(session))[0] is False
        with pytest.raises(TransactionError, match=r"readonly"):
            async with db.session(readonly=True) as session:
                await Users(session).create({"email": "c@x.org", "name": "c"})
        assert "replica_fallbacks" not in db.stats()
    finally:
        await db.close()


async def test_a_stopped_standby_is_skipped(truncated: Topology,
                                            caplog: pytest.LogCaptureFixture) -> None:
    db = _manager(truncated, "s1", "s2", read_your_writes=0)
    only_s2 = _manager(truncated, "s2", read_your_writes=0)
    try:
        await _write(db, "d@x.org")
        await visible_on(truncated.standbys["s1"], "d@x.org")
        truncated.standbys["s2"].stop("immediate")
        for _ in range(6):
            async with db.session(readonly=True) as session:
                assert await where(session) == (True, truncated.standbys["s1"].port)
                assert await Users(session).count() == 1
        # None usable: the primary serves, with a WARNING and a counter.
        with caplog.at_level(logging.WARNING, logger="aegis_tortoise.replicas"):
            for _ in range(3):
                async with only_s2.session(readonly=True) as session:
                    assert await where(session) == (False, truncated.primary.port)
                    assert await Users(session).count() == 1
        assert only_s2.stats()["replica_fallbacks"] == 3
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert "no read replica is usable" in warnings[0].getMessage()
        assert "(down)" in warnings[0].getMessage()
    finally:
        await db.close()
        await only_s2.close()


async def _first_statement(session: Session, first: str) -> tuple[bool, int]:
    """Run a readonly session's first statement of the given kind; where it then runs."""
    if first == "execute":  # BEGIN READ ONLY, then the statement
        return await where(session)
    if first == "orm_read":  # a plain read, before any BEGIN
        assert await User.all().count() == 1
        return await where(session)
    async with TransactionManager(session).transaction():  # BEGIN, then a savepoint
        return await where(session)


@pytest.fixture
def lag_stays_fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """No lag check before the sessions below: the dead connection meets their first
    statement, not the measurement (which runs at most once per CHECK_EVERY seconds)."""
    monkeypatch.setattr(_replicas, "CHECK_EVERY", 600.0)


@pytest.mark.usefixtures("lag_stays_fresh")
@pytest.mark.parametrize("first", ["execute", "orm_read", "savepoint"])
async def test_a_dead_pooled_replica_connection_moves_the_session(truncated: Topology,
                                                                  first: str) -> None:
    """A standby stopped a moment ago, before the event loop saw its sockets close: its
    pooled connection fails the session's first statement, which runs on the other standby
    instead. No readonly session fails."""
    s1, s2 = truncated.standbys["s1"], truncated.standbys["s2"]
    db = _manager(truncated, "s1", "s2", read_your_writes=0)
    try:
        await _write(db, "g@x.org")
        for standby in (s1, s2):
            await visible_on(standby, "g@x.org")
        for port in (s1.port, s2.port, s1.port):  # an idle connection in each pool; s2 next
            async with db.session(readonly=True) as session:
                assert await where(session) == (True, port)
        s2.stop("immediate")  # no await until the next session: the loop sees nothing
        for _ in range(6):
            async with db.session(readonly=True) as session:
                assert await _first_statement(session, first) == (True, s1.port)
                assert await Users(session).count() == 1
        assert (db.stats()["replica_reads"], db.stats()["replica_fallbacks"]) == (9, 0)
    finally:
        await db.close()


@pytest.mark.usefixtures("lag_stays_fresh")
async def test_a_dead_connection_of_the_only_replica_moves_to_the_primary(
        truncated: Topology, caplog: pytest.LogCaptureFixture) -> None:
    s2 = truncated.standbys["s2"]
    db = _manager(truncated, "s2", read_your_writes=0)
    try:
        await _write(db, "h@x.org")
        await visible_on(s2, "h@x.org")
        async with db.session(readonly=True) as session:
            assert await where(session) == (True, s2.port)
        s2.stop("immediate")
        with caplog.at_level(logging.WARNING, logger="aegis_tortoise.replicas"):
            for first in ("orm_read", "execute", "savepoint"):
                async with db.session(readonly=True) as session:
                    assert await _first_statement(session, first) == (
                        False, truncated.primary.port)
                with pytest.raises(TransactionError, match=r"readonly session"):
                    async with db.session(readonly=True) as session:  # READ ONLY there too
                        await Users(session).create({"email": "i@x.org", "name": "i"})
        # Counted once each, where they ran: 1 on the replica, 6 on the primary.
        assert (db.stats()["replica_reads"], db.stats()["replica_fallbacks"]) == (1, 6)
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert "no read replica is usable" in warnings[0]
        assert "(down)" in warnings[0]
    finally:
        await db.close()


async def test_a_replica_lost_after_the_first_statement_fails_the_session(
        truncated: Topology) -> None:
    """Only the first statement moves: later, the session has read on that replica."""
    s2 = truncated.standbys["s2"]
    db = _manager(truncated, "s2", read_your_writes=0)

    async def lost_midway() -> None:
        async with db.session(readonly=True) as session:
            assert await where(session) == (True, s2.port)
            s2.stop("immediate")
            await where(session)

    try:
        with pytest.raises(DatabaseConnectionError):
            await lost_midway()
        async with db.session(readonly=True) as session:  # the next one: the primary
            assert await where(session) == (False, truncated.primary.port)
    finally:
        await db.close()


async def test_a_standby_held_behind_is_skipped_then_used_again(
        truncated: Topology, caplog: pytest.LogCaptureFixture) -> None:
    s1 = truncated.standbys["s1"]
    db = _manager(truncated, "s1", read_your_writes=0, max_replica_lag=1.0)
    try:
        async with db.session(readonly=True) as session:
            assert (await where(session))[0] is True
        await sql(s1, "SELECT pg_wal_replay_pause()")
        await _write(db, "e@x.org")  # s1 (synchronous) receives it, does not replay it
        await asyncio.sleep(1.2)  # past max_replica_lag, and past CHECK_EVERY
        with caplog.at_level(logging.WARNING, logger="aegis_tortoise.replicas"):
            for _ in range(5):
                async with db.session(readonly=True) as session:
                    assert (await where(session))[0] is False
                    assert await Users(session).count() == 1  # the primary has it
        assert db.stats()["replica_fallbacks"] == 5
        assert any("lag" in r.getMessage() for r in caplog.records
                   if r.levelno == logging.WARNING)
        await sql(s1, "SELECT pg_wal_replay_resume()")
        await visible_on(s1, "e@x.org")
        await asyncio.sleep(1.1)  # the lag measurement is cached for CHECK_EVERY
        async with db.session(readonly=True) as session:
            assert (await where(session))[0] is True
            assert await Users(session).count() == 1
    finally:
        await db.close()


async def test_read_your_writes_with_replay_paused(truncated: Topology) -> None:
    s1 = truncated.standbys["s1"]
    db = _manager(truncated, "s1", read_your_writes=2.0, max_replica_lag=60)
    try:
        await sql(s1, "SELECT pg_wal_replay_pause()")
        await _write(db, "f@x.org")
        started = time.monotonic()
        async with db.session(readonly=True) as session:
            assert (await where(session))[0] is False  # this task wrote: the primary
            assert await Users(session).get_by_id(
                (await Users(session).list())[0].id) is not None

        async def other_task() -> tuple[bool, int]:
            async with db.session(readonly=True) as session:
                recovery = (await where(session))[0]
                return recovery, await Users(session).count()

        # Another task (request) did not write: the replica, which has not replayed it.
        assert await asyncio.create_task(other_task()) == (True, 0)
        await asyncio.sleep(max(0.0, 2.1 - (time.monotonic() - started)))
        async with db.session(readonly=True) as session:
            assert (await where(session))[0] is True  # the window is over
        assert db.stats()["read_your_writes_reads"] == 1
    finally:
        await db.close()


async def _only_reads(db: DatabaseManager) -> None:
    """Sessions that read in a transaction of theirs (session.execute begins one), and one
    whose write was rolled back before it read and committed."""
    async with db.session() as session:
        await session.execute("SELECT count(*) FROM users")
        await session.execute("SELECT * FROM users WHERE email = :e", {"e": "j@x.org"})
        assert await Users(session).count() == 0
        assert await User.filter(email="j@x.org").exists() is False
        await session.execute("SELECT lower(email) FROM users ORDER BY 1 LIMIT 5")
    async with db.session() as session:
        await Users(session).create({"email": "j@x.org", "name": "j"})
        await session.rollback()
        await session.execute("SELECT count(*) FROM users")


async def _insert_rows(session: Session) -> None:
    await session.execute("INSERT INTO users (email, name, created_at, updated_at) "
                          "VALUES ('k@x.org', 'k', now(), now())")


async def _create_many_by_copy(session: Session) -> None:
    rows = [{"email": f"{i}@x.org", "name": "c"} for i in range(_copy.COPY_THRESHOLD)]
    assert len(await Users(session).create_many(rows)) == _copy.COPY_THRESHOLD


WRITES: dict[str, Callable[[Session], Awaitable[object]]] = {
    "execute": _insert_rows,  # after a read in the same transaction
    "repository": lambda session: Users(session).create({"email": "k@x.org", "name": "k"}),
    "tortoise": lambda session: User.create(email="k@x.org", name="k"),
    "update": lambda session: User.filter(email="nobody").update(name="n"),  # no row
    "copy": _create_many_by_copy,
}


@pytest.mark.parametrize("write", list(WRITES))
async def test_read_your_writes_starts_only_after_a_write(truncated: Topology,
                                                          write: str) -> None:
    db = _manager(truncated, "s1", read_your_writes=60, max_replica_lag=60)
    try:
        await _only_reads(db)
        async with db.session(readonly=True) as session:
            assert (await where(session))[0] is True  # nothing written: the replica
        assert db.stats()["read_your_writes_reads"] == 0
        async with db.session() as session:
            await session.execute("SELECT count(*) FROM users")
            await WRITES[write](session)
        async with db.session(readonly=True) as session:
            assert (await where(session))[0] is False  # this task wrote: the primary
        assert db.stats()["read_your_writes_reads"] == 1
    finally:
        await db.close()


async def test_session_dependency_readonly(truncated: Topology) -> None:
    db = _manager(truncated, "s1", read_your_writes=0)
    app = FastAPI()

    readonly = session_dependency(db, readonly=True)
    writable = session_dependency(db)

    @app.get("/where")
    async def on_a_replica(session: Session = readonly) -> dict[str, bool]:
        return {"replica": (await where(session))[0]}

    @app.get("/primary")
    async def on_the_primary(session: Session = writable) -> dict[str, bool]:
        return {"replica": (await where(session))[0]}

    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/where")).json() == {"replica": True}
            assert (await client.get("/primary")).json() == {"replica": False}
    finally:
        await db.close()


def test_replica_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_REPLICA_URLS", "postgresql://u@r1/db, postgresql://u:pw@r2/db")
    monkeypatch.setenv("DATABASE_MAX_REPLICA_LAG", "3")
    monkeypatch.setenv("DATABASE_READ_YOUR_WRITES", "0")
    settings = DatabaseSettings()
    assert settings.database_replica_urls == ["postgresql://u@r1/db", "postgresql://u:pw@r2/db"]
    assert "pw" not in repr(settings)
    db = DatabaseManager("postgresql://u@p/db", models=[])
    assert [r.url.host for r in db._replicas.replicas] == ["r1", "r2"]
    assert (db._replicas.max_replica_lag, db._replicas.read_your_writes) == (3.0, 0.0)


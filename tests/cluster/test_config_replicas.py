"""Replicas and PgBouncer with a Tortoise config (the drop-in path), on real standbys.

``DatabaseManager.from_tortoise_config(config, replica_urls=[...])`` and
``RegisterTortoise(app, config=..., replica_urls=...)`` put readonly sessions on standbys as
``DatabaseManager(url, replica_urls=...)`` does. A config's own router (a "replica"
connection for ``db_for_read``) keeps routing plain Tortoise calls outside sessions exactly
as under ``Tortoise.init``; inside a session, the session wins. ``?pgbouncer=true`` works
on every connection of a config and on a replica URL, not only on the sessions' connection.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI, Request
from tortoise import Tortoise, connections
from tortoise.models import Model
from tortoise.router import router
from tortoise.transactions import in_transaction

from aegis_tortoise import DatabaseManager, TransactionError
from aegis_tortoise.examples.models import User
from aegis_tortoise.fastapi import RegisterTortoise, register_tortoise
from aegis_tortoise.repository import BaseRepository
from tests.cluster.conftest import (
    REPLICATED,
    Bouncer,
    Cluster,
    ClusterFactory,
    Topology,
    replayed,
    sql,
    standby_port,
    visible_on,
    where,
)
from tests.conftest import EXAMPLE_MODELS
from tests.dropin.archive_models import Record

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("standbys_back")]


class Users(BaseRepository[User]):
    pass


class ReadReplicaRouter:
    """The read/write split Tortoise documents: reads on "replica", writes on "default"."""

    def db_for_read(self, model: type[Model]) -> str:
        return "replica"

    def db_for_write(self, model: type[Model]) -> str:
        return "default"


def tortoise_url(server: Cluster | Bouncer, **query: Any) -> str:
    """The replicated database's URL on ``server``, as a Tortoise config writes it."""
    return server.url(REPLICATED, **query).replace("postgresql://", "postgres://", 1)


def tortoise_config(primary: Cluster, **query: Any) -> dict[str, Any]:
    """A service's ``TORTOISE_ORM``: one connection, the primary, and the example models."""
    return {"connections": {"default": tortoise_url(primary, **query)},
            "apps": {"models": {"models": EXAMPLE_MODELS, "default_connection": "default"}}}


def in_empty_context(make: Callable[[], Awaitable[Any]]) -> asyncio.Task[Any]:
    """Run ``make()`` in a task that inherits no context variable (as a worker's task)."""
    async def run() -> Any:
        return await make()

    return asyncio.get_running_loop().create_task(run(), context=contextvars.Context())


# -- from_tortoise_config(config, replica_urls=...) ------------------------------------------------


async def test_from_tortoise_config_reads_on_standbys_writes_on_the_primary(
        truncated: Topology) -> None:
    primary, s1, s2 = truncated.primary, truncated.standbys["s1"], truncated.standbys["s2"]
    # maxsize in the config sizes the pool, the replicas' too (they take the primary's options)
    config = tortoise_config(primary, maxsize=4)
    db = DatabaseManager.from_tortoise_config(
        config, replica_urls=[s1.url(REPLICATED), s2.url(REPLICATED)], read_your_writes=0,
        pool_timeout=10)
    only_s2 = DatabaseManager.from_tortoise_config(
        config, replica_urls=[s2.url(REPLICATED)], read_your_writes=0, pool_timeout=10)
    try:
        async with db.session() as session:
            assert await where(session) == (False, primary.port)
            await Users(session).create({"email": "a@x.org", "name": "a"})
        for standby in (s1, s2):
            await visible_on(standby, "a@x.org")
        ports = set()
        for _ in range(4):
            async with db.session(readonly=True) as session:
                ports.add(await standby_port(session))
                assert await Users(session).count() == 1
                assert await User.filter(email="a@x.org").count() == 1  # plain Tortoise too
        assert ports == {s1.port, s2.port}
        assert db.stats()["replica_reads"] == 4
        assert db.stats()["max_size"] == 4
        assert [r.pool.get_max_size() for r in db._replicas.replicas] == [4, 4]
        with pytest.raises(TransactionError, match=r"readonly session"):
            async with db.session(readonly=True) as session:
                await Users(session).create({"email": "b@x.org", "name": "b"})

        # Asynchronous: the primary keeps committing without it. Its pooled connections are
        # dead before the event loop notices: the next session's first statement moves on.
        s2.stop("immediate")
        for _ in range(4):
            async with db.session(readonly=True) as session:
                assert await where(session) == (True, s1.port)
        # Its only replica down: the primary serves, the session still READ ONLY.
        for _ in range(2):
            async with only_s2.session(readonly=True) as session:
                assert await where(session) == (False, primary.port)
                assert await Users(session).count() == 1
        assert only_s2.stats()["replica_fallbacks"] == 2
        with pytest.raises(TransactionError, match=r"readonly session"):
            async with only_s2.session(readonly=True) as session:
                await Users(session).create({"email": "c@x.org", "name": "c"})
    finally:
        await db.close()
        await only_s2.close()


async def test_replica_settings_apply_to_a_tortoise_config(
        truncated: Topology, monkeypatch: pytest.MonkeyPatch) -> None:
    """A registration that passes no replica options gets them from the environment, while
    the database itself is the config's (DATABASE_URL is not this manager's)."""
    s2 = truncated.standbys["s2"]
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@elsewhere:1/none")
    monkeypatch.setenv("DATABASE_REPLICA_URLS", s2.url(REPLICATED))
    monkeypatch.setenv("DATABASE_READ_YOUR_WRITES", "0")
    db = DatabaseManager.from_tortoise_config(tortoise_config(truncated.primary))
    try:
        async with db.session(readonly=True) as session:
            assert await where(session) == (True, s2.port)
        async with db.session() as session:
            assert await where(session) == (False, truncated.primary.port)
    finally:
        await db.close()


# -- RegisterTortoise(app, config=..., replica_urls=...) ------------------------------------------


def _app(topology: Topology, how: str) -> FastAPI:
    """A service's app: a config with the primary, one replica (s2) given to the registration."""
    # read_your_writes=0: httpx's ASGITransport runs every request in the test's own task.
    options = {"replica_urls": [topology.standbys["s2"].url(REPLICATED)],
               "read_your_writes": 0, "pool_timeout": 10}
    config = tortoise_config(topology.primary)
    if how == "RegisterTortoise":
        @asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[None]:
            async with RegisterTortoise(app, config=config, **options):
                yield

        app = FastAPI(lifespan=lifespan)
    else:
        app = FastAPI()
        register_tortoise(app, config=config, **options)

    @app.post("/users", status_code=201)
    async def create_user(email: str) -> dict[str, int]:
        user = await User.create(email=email, name=email)  # plain Tortoise, no session
        return {"id": user.id}

    @app.get("/where")
    async def where_it_runs(request: Request, readonly: bool = True) -> dict[str, Any]:
        db: DatabaseManager = request.app.state.db
        async with db.session(readonly=readonly) as session:
            recovery, port = await where(session)
            return {"replica": recovery, "port": port, "users": await User.all().count()}

    return app


@pytest.mark.parametrize("how", ["RegisterTortoise", "register_tortoise"])
async def test_register_tortoise_with_replica_urls(truncated: Topology, how: str) -> None:
    primary, s2 = truncated.primary, truncated.standbys["s2"]
    app = _app(truncated, how)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            created = await client.post("/users", params={"email": "r@x.org"})
            assert created.status_code == 201
            assert await sql(primary, "SELECT count(*) FROM users") == 1
            await visible_on(s2, "r@x.org")
            on_replica = {"replica": True, "port": s2.port, "users": 1}
            on_primary = {"replica": False, "port": primary.port, "users": 1}
            assert (await client.get("/where")).json() == on_replica
            assert (await client.get("/where", params={"readonly": False})).json() == on_primary
            s2.stop("immediate")
            assert (await client.get("/where")).json() == on_primary  # no request fails
            stats = app.state.db.stats()
            assert (stats["replica_reads"], stats["replica_fallbacks"]) == (1, 1)


# -- a router in the config ----------------------------------------------------------------------


def routed_config(topology: Topology) -> dict[str, Any]:
    """A config with two connections, the primary and s1, and a router reading from s1."""
    config = tortoise_config(topology.primary)
    config["connections"]["replica"] = tortoise_url(topology.standbys["s1"])
    config["routers"] = [ReadReplicaRouter]
    return config


async def routed_calls(topology: Topology) -> dict[str, Any]:
    """Plain Tortoise calls outside any session, with s1's replay paused: what each saw."""
    primary, s1 = topology.primary, topology.standbys["s1"]
    await s1.fetchval("SELECT pg_wal_replay_pause()")
    seen: dict[str, Any] = {}
    await User.create(email="w@x.org", name="w")  # s1 would refuse a write
    seen["written_on_the_primary"] = await sql(primary, "SELECT count(*) FROM users")
    seen["routed_read"] = await User.filter(email="w@x.org").exists()  # s1: not replayed
    seen["read_on_default"] = await User.filter(email="w@x.org").using_db(
        connections.get("default")).exists()
    async with in_transaction("default") as conn:
        await User.create(email="t@x.org", name="t")
        seen["routed_read_in_transaction"] = await User.filter(email="t@x.org").exists()
        seen["read_in_transaction"] = await User.filter(email="t@x.org").using_db(
            conn).exists()
    seen["updated"] = await User.filter(email="w@x.org").update(name="w2")  # a routed write
    seen["name_on_the_primary"] = await sql(primary,
                                            "SELECT name FROM users WHERE email = 'w@x.org'")
    await s1.fetchval("SELECT pg_wal_replay_resume()")
    await replayed(topology)
    seen["routed_after_replay"] = sorted(await User.all().values_list("name", flat=True))
    replica = connections.get("replica")
    seen["replica_in_recovery"] = (await replica.execute_query_dict(
        "SELECT pg_is_in_recovery() AS r"))[0]["r"]
    return seen


# What Tortoise itself does with this config (the Tortoise.init case below shows it).
ROUTED = {
    "written_on_the_primary": 1, "routed_read": False, "read_on_default": True,
    "routed_read_in_transaction": False, "read_in_transaction": True, "updated": 1,
    "name_on_the_primary": "w2", "routed_after_replay": ["t", "w2"],
    "replica_in_recovery": True,
}


async def _under_tortoise_init(topology: Topology) -> dict[str, Any]:
    await Tortoise.init(config=routed_config(topology))
    try:
        return await routed_calls(topology)
    finally:
        await Tortoise.close_connections()


async def _under_a_manager(topology: Topology) -> dict[str, Any]:
    db = DatabaseManager.from_tortoise_config(routed_config(topology), global_context=True,
                                              pool_timeout=10)
    await db.init()
    try:
        return await routed_calls(topology)
    finally:
        await db.close()


async def _under_register_tortoise(topology: Topology) -> dict[str, Any]:
    async with RegisterTortoise(config=routed_config(topology), pool_timeout=10):
        return await routed_calls(topology)


RUNS: dict[str, Callable[[Topology], Awaitable[dict[str, Any]]]] = {
    "Tortoise.init": _under_tortoise_init,
    "from_tortoise_config": _under_a_manager,
    "RegisterTortoise": _under_register_tortoise,
}


@pytest.fixture
def process_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tortoise.init rewrites the process-wide router and time zone: put them back after."""
    monkeypatch.setattr(router, "_routers", router._routers)
    for name in ("USE_TZ", "TIMEZONE"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("process_state")
@pytest.mark.parametrize("run", list(RUNS))
async def test_plain_tortoise_follows_the_configs_router(truncated: Topology, run: str) -> None:
    seen = await in_empty_context(lambda: RUNS[run](truncated))
    assert seen == ROUTED


class SplitRouter:
    """Reads on "replica" (s1), writes on "writer" (a second connection to the primary)."""

    def db_for_read(self, model: type[Model]) -> str:
        return "replica"

    def db_for_write(self, model: type[Model]) -> str:
        return "writer"


def split_config(topology: Topology) -> dict[str, Any]:
    """``routed_config`` with writes routed away from the sessions' connection too, and the
    archive app on a connection of its own ("archive", the primary)."""
    config = routed_config(topology)
    config["connections"]["writer"] = tortoise_url(topology.primary)
    config["connections"]["archive"] = tortoise_url(topology.primary)
    config["apps"]["archive"] = {"models": ["tests.dropin.archive_models"],
                                 "default_connection": "archive"}
    config["routers"] = [SplitRouter]
    return config


async def test_inside_a_session_the_session_wins_over_the_router(truncated: Topology) -> None:
    """Inside a session, plain Tortoise calls on the models of the session's connection run
    in its transaction whatever the router says: a routed read sees the session's
    uncommitted writes, a routed write is rolled back with it. Models of another connection
    still follow the router."""
    primary, s1 = truncated.primary, truncated.standbys["s1"]
    db = DatabaseManager.from_tortoise_config(split_config(truncated), pool_timeout=10)
    try:
        await db.generate_schemas()  # the archive's table, on the primary
        await replayed(truncated)
        await s1.fetchval("SELECT pg_wal_replay_pause()")  # from here on s1 sees nothing new
        await sql(primary, "INSERT INTO dropin_archive_record (text) VALUES ('on the primary')")
        async with db.session() as session:
            user = await User.create(email="s@x.org", name="s")  # routed to "writer"
            assert await sql(primary, "SELECT count(*) FROM users") == 0  # uncommitted
            assert await User.filter(email="s@x.org").exists()  # routed to "replica"
            assert await User.filter(email="s@x.org").update(name="s2") == 1
            assert (await User.get(id=user.id)).name == "s2"
            assert await Users(session).get_by_id(user.id) is not None
            assert await Record.filter(text="on the primary").exists() is False  # s1's view
        assert await sql(primary, "SELECT name FROM users WHERE email = 's@x.org'") == "s2"

        async def rolled_back() -> None:
            async with db.session():
                await User.create(email="gone@x.org", name="gone")
                assert await User.filter(name="gone").exists()
                raise RuntimeError

        with pytest.raises(RuntimeError):
            await rolled_back()
        assert await sql(primary, "SELECT count(*) FROM users WHERE name = 'gone'") == 0
        # The router's connection is no replica for readonly sessions (replica_urls are), and
        # in one the session wins too: s1 has not replayed the user, the session sees it.
        async with db.session(readonly=True) as session:
            assert await where(session) == (False, primary.port)
            assert await User.filter(email="s@x.org").exists()
    finally:
        await db.close()


# -- ?pgbouncer=true beyond the sessions' connection ---------------------------------------------


@pytest.fixture(scope="module")
def standby_bouncer(cluster_factory: ClusterFactory, replicated: Topology) -> Bouncer:
    """A PgBouncer (transaction pooling, 10 server connections) in front of standby s2."""
    return cluster_factory.bouncer(replicated.standbys["s2"], "bouncer_s2")


async def _rounds(read: Callable[[], Awaitable[None]]) -> None:
    """400 reads, 20 at a time: through PgBouncer, named prepared statements would fail."""
    for _ in range(20):
        await asyncio.gather(*(read() for _ in range(20)))


async def test_a_second_connection_of_a_config_through_pgbouncer(truncated: Topology) -> None:
    assert truncated.bouncer is not None
    config = tortoise_config(truncated.primary)
    config["connections"]["archive"] = tortoise_url(truncated.bouncer, pgbouncer="true",
                                                    maxsize=20)
    config["apps"]["archive"] = {"models": ["tests.dropin.archive_models"],
                                 "default_connection": "archive"}
    db = DatabaseManager.from_tortoise_config(config, global_context=True, pool_timeout=10)
    assert db.pgbouncer is False  # the sessions' connection is direct
    try:
        await db.generate_schemas()
        await Record.all().delete()
        await Record.create(text="a")

        async def read() -> None:
            assert await Record.filter(text="a").count() == 1
            assert await Record.filter(text="b").exists() is False

        await _rounds(read)
    finally:
        await db.close()


async def test_a_replica_url_through_pgbouncer(truncated: Topology,
                                               standby_bouncer: Bouncer) -> None:
    s2 = truncated.standbys["s2"]
    db = DatabaseManager.from_tortoise_config(
        tortoise_config(truncated.primary),
        replica_urls=[standby_bouncer.url(REPLICATED, pgbouncer="true")], read_your_writes=0,
        pool_size=20, max_overflow=0, pool_timeout=10)
    assert db.pgbouncer is False  # the primary is reached directly

    async def read() -> None:
        async with db.session(readonly=True) as session:
            assert await where(session) == (True, s2.port)
            await session.execute("SELECT count(*) FROM users WHERE name = :n", {"n": "a"})
            assert await Users(session).count() == 0

    try:
        await _rounds(read)
        assert (db.stats()["replica_reads"], db.stats()["replica_fallbacks"]) == (400, 0)
    finally:
        await db.close()

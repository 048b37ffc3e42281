"""The plugin with a FastAPI app: rollback isolation, the app on the test's database,
@pytest.mark.aegis_commit, and a clear failure without models. Run as a user runs it."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from tests.conftest import PLUGIN_INI, PgServer

pytest_plugins = ["pytester"]

INI = PLUGIN_INI

APP_TESTS = '''
from contextlib import asynccontextmanager

import pytest
from fastapi import FastAPI
from tortoise.contrib.fastapi import tortoise_exception_handlers

from aegis_tortoise import DatabaseManager, Session
from aegis_tortoise.examples.models import User
from aegis_tortoise.examples.repositories import UserRepository
from aegis_tortoise.fastapi import RegisterTortoise, session_dependency

# The app's own database: under the plugin it is never used, the test's is.
CONFIG = {"connections": {"default": "sqlite:///nonexistent-dir/app.db"},
          "apps": {"models": {"models": ["aegis_tortoise.examples.models"]}}}
own_db = DatabaseManager("sqlite:///nonexistent-dir/other.db",
                         models=["aegis_tortoise.examples.models"])


@asynccontextmanager
async def lifespan(app):
    async with RegisterTortoise(app, config=CONFIG):
        yield


def make_app():
    app = FastAPI(lifespan=lifespan, exception_handlers=tortoise_exception_handlers())

    @app.get("/users/{user_id}")
    async def plain_get(user_id: int):
        user = await User.get(id=user_id)  # plain Tortoise: 404 by the handlers
        return {"id": user.id, "email": user.email}

    @app.post("/users")
    async def plain_create(body: dict):
        user = await User.create(**body)  # IntegrityError -> 422 by the handlers
        return {"id": user.id}

    @app.get("/count")
    async def count(session: Session = session_dependency(own_db)):
        return {"users": await UserRepository(session).count()}

    return app


@pytest.fixture
def app():
    return make_app()


@pytest.mark.parametrize("run", range(3))
async def test_app_sees_what_the_test_wrote(db_session, aegis_client, run):
    user = await User.create(email=f"t{run}@x", name="T")  # uncommitted, in db_session
    assert user.id == 1  # every test starts on empty tables, ids at 1
    got = await aegis_client.get(f"/users/{user.id}")
    assert got.status_code == 200
    assert got.json() == {"id": 1, "email": f"t{run}@x"}
    assert (await aegis_client.get("/count")).json() == {"users": 1}
    assert (await aegis_client.get("/users/99")).status_code == 404


async def test_a_failed_request_leaves_the_test_usable(db_session, aegis_client):
    await User.create(email="dup@x", name="first")
    response = await aegis_client.post("/users", json={"email": "dup@x", "name": "again"})
    assert response.status_code == 422
    assert (await aegis_client.post("/users", json={"email": "new@x", "name": "n"})
            ).status_code == 200
    assert await User.all().count() == 2
    assert (await aegis_client.get("/count")).json() == {"users": 2}


async def test_nested_sessions_and_plain_calls(db_manager, db_session):
    await User.create(email="outer@x", name="o")
    async with db_manager.session() as inner:  # sqlite too: a savepoint, not a deadlock
        assert await UserRepository(inner).count() == 1
        await UserRepository(inner).create({"email": "inner@x", "name": "i"})
    assert await User.all().count() == 2


async def test_plain_calls_without_a_session(db_manager):
    await User.create(email="plain@x", name="p")
    async with db_manager.session() as session:
        assert await UserRepository(session).count() == 1


@pytest.mark.aegis_commit
async def test_real_commits_when_marked(db_manager):
    async with db_manager.session():
        await User.create(email="committed@x", name="c")
    if db_manager.url.is_memory:  # one connection: a later session must see it
        async with db_manager.session() as session:
            assert await UserRepository(session).count() == 1
        return
    other = DatabaseManager(db_manager.url.masked().replace("***", ""),
                            models=["aegis_tortoise.examples.models"])
    try:
        async with other.session() as session:  # another connection sees the commit
            assert await UserRepository(session).count() == 1
    finally:
        await other.close()


async def test_after_the_marked_test_tables_are_empty(db_manager):
    async with db_manager.session() as session:
        assert await UserRepository(session).count() == 0
'''

NO_MODELS = '''
async def test_needs_models(db_session):
    pass
'''


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    pytester.makeini(INI)
    pytester.makepyfile(test_app=APP_TESTS)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=120)


def test_app_on_the_test_database_sqlite(pytester: pytest.Pytester) -> None:
    result = _run(pytester)
    result.assert_outcomes(passed=8)


@pytest.mark.postgres
def test_app_on_the_test_database_postgres(pytester: pytest.Pytester,
                                           pg_server: PgServer) -> None:
    database = pg_server.create_database(f"plugin_app_{uuid.uuid4().hex[:8]}")
    url = pg_server.url_for(database)
    result = _run(pytester, f"--aegis-db-url={url}")
    result.assert_outcomes(passed=8)
    assert asyncio.run(_count_users(url)) == 0  # nothing of the run stayed


def test_app_on_a_sqlite_file(pytester: pytest.Pytester) -> None:
    result = _run(pytester, f"--aegis-db-url=sqlite:///{pytester.path}/tests.db")
    result.assert_outcomes(passed=8)


async def _count_users(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        count: int = await conn.fetchval("SELECT count(*) FROM users")
        return count
    finally:
        await conn.close()


def test_without_models_the_failure_names_the_setting(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI.replace("aegis_models = aegis_tortoise.examples.models", ""))
    pytester.makepyfile(test_none=NO_MODELS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=60)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*db_manager needs the Tortoise model modules*aegis_models*"])
    assert "cannot be None" not in result.stdout.str()


XDIST_TESTS = '''
import os

import pytest

from aegis_tortoise.examples.models import User


@pytest.mark.parametrize("i", range(8))
async def test_on_the_workers_database(db_manager, db_session, i):
    worker = os.environ["PYTEST_XDIST_WORKER"]
    assert db_manager.url.database.endswith(f"_{worker}") or \\
        db_manager.url.database.endswith(f"_{worker}.db")
    user = await User.create(email=f"x{i}@x", name="x")
    assert user.id == 1
'''


@pytest.mark.postgres
def test_xdist_workers_get_databases_of_their_own(pytester: pytest.Pytester,
                                                  pg_server: PgServer,
                                                  tmp_path_factory: pytest.TempPathFactory
                                                  ) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(test_workers=XDIST_TESTS)
    database = f"plugin_xdist_{uuid.uuid4().hex[:8]}"
    url = pg_server.url_for(database)  # the base name: never created itself
    try:
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2",
                                               f"--aegis-db-url={url}", timeout=120)
        result.assert_outcomes(passed=8)
        names = asyncio.run(_databases(pg_server.admin_url, database))
        assert names == [f"{database}_gw0", f"{database}_gw1"]
    finally:
        asyncio.run(_drop(pg_server.admin_url, database))
    folder = tmp_path_factory.mktemp("xdist_sqlite")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2",
                                           f"--aegis-db-url=sqlite:///{folder}/tests.db",
                                           timeout=120)
    result.assert_outcomes(passed=8)
    assert sorted(p.name for p in folder.iterdir()) == ["tests_gw0.db", "tests_gw1.db"]


async def _databases(admin_url: str, prefix: str) -> list[str]:
    conn = await asyncpg.connect(admin_url)
    try:
        rows = await conn.fetch("SELECT datname FROM pg_database WHERE datname LIKE $1 "
                                "ORDER BY datname", f"{prefix}%")
        return [row["datname"] for row in rows]
    finally:
        await conn.close()


async def _drop(admin_url: str, prefix: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        for name in await _databases(admin_url, prefix):
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


OVERLAPPING = '''
import asyncio

import pytest
from tortoise import connections
from tortoise.transactions import in_transaction

from aegis_tortoise import DatabaseConnectionError
from aegis_tortoise.examples.models import User

async def test_concurrent_session_rollback_and_plain(db_manager):
    errors = []
    async def plain():
        for _ in range(5):
            try:
                await connections.get("default").execute_query("select pg_sleep(0.05)")
            except Exception as e:
                errors.append(repr(e))
    async def sess():
        await asyncio.sleep(0.01)
        try:
            async with db_manager.session() as s:
                await User.create(email="a@x", name="a")
                await asyncio.sleep(0.06)
                raise RuntimeError("fail")
        except RuntimeError:
            pass
    await asyncio.gather(plain(), sess())
    assert errors == []
    await User.create(email="b@x", name="b")
    assert await User.all().count() == 1



async def test_concurrent_session_commit(db_manager):
    async def b():
        async with db_manager.session() as s:
            await User.create(email="b@x", name="b")
            for _ in range(5):
                await s.execute("select pg_sleep(0.05)")
    async def s2():
        await asyncio.sleep(0.02)
        async with db_manager.session() as s:
            await User.create(email="a@x", name="a")
            await asyncio.sleep(0.06)
    await asyncio.gather(b(), s2())
    assert await User.all().count() == 2


async def test_in_tx_and_plain_concurrently(db_manager):
    errors = []
    async def tx():
        async with in_transaction() as conn:
            await User.create(email="t@x", name="t")
            await asyncio.sleep(0.03)
    async def plain():
        for i in range(6):
            try:
                await User.create(email=f"{i}@x", name="p")
            except Exception as e:
                errors.append(repr(e)[:150])
            await asyncio.sleep(0.01)
    res = await asyncio.gather(tx(), plain(), return_exceptions=True)
    assert not errors and not any(isinstance(r, Exception) for r in res)
    assert await User.all().count() == 7


async def test_zz_a_lost_connection(db_manager):
    await User.create(email="lost@x", name="l")
    with pytest.raises(DatabaseConnectionError):  # the server ends the connection under it
        async with db_manager.session() as session:
            await session.execute("SELECT pg_terminate_backend(pg_backend_pid())")
            await session.execute("SELECT 1")


async def test_zz_the_next_test_starts_afresh(db_manager):
    assert await User.all().count() == 0
    user = await User.create(email="next@x", name="n")
    assert user.id == 1
'''


@pytest.mark.postgres
def test_overlapping_sessions_and_a_lost_connection_under_the_pin(
        pytester: pytest.Pytester, pg_server: PgServer) -> None:
    """Review cases: gathered sessions, in_transaction() beside plain calls, a session that
    fails while another runs, and a connection the server ends (the next test still starts
    on empty tables with ids at 1, on a new connection)."""
    pytester.makeini(INI)
    pytester.makepyfile(test_overlap=OVERLAPPING)
    url = pg_server.url_for(pg_server.create_database(f"plugin_pin_{uuid.uuid4().hex[:8]}"))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--aegis-db-url={url}",
                                           timeout=120)
    # The lost connection's teardown reports the broken connection, as it should.
    result.assert_outcomes(passed=5, errors=1)
    result.stdout.fnmatch_lines(["*test_zz_a_lost_connection*"])

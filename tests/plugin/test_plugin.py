"""The pytest plugin, run as a user runs it: a separate pytest process on a temp project.

The inner test files use nothing but the plugin's fixtures and the example models; the
inner project pins ``asyncio_default_fixture_loop_scope = session`` to show that the
plugin's fixtures stay on the test's loop regardless.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import asyncpg
import pytest

from aegis_tortoise.testing import ENV_DATABASE_URL, settings_from_config
from tests.conftest import PgServer

pytest_plugins = ["pytester"]

INI = """
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = session
asyncio_default_test_loop_scope = function
filterwarnings = error
aegis_models = aegis_tortoise.examples.models
"""

USER_TESTS = '''
import pytest
from tortoise.exceptions import IntegrityError

from aegis_tortoise import DatabaseManager, Session
from aegis_tortoise.examples.models import Policy, User


@pytest.mark.parametrize("run", range(3))
async def test_session_starts_empty(db_session, run):
    assert await User.all().count() == 0
    user = await User.create(email="same@example.com", name=f"run {run}")
    assert user.id == 1
    await Policy.create(user=user, title="committed")
    await db_session.commit()  # committed: only the plugin can make the next test clean


@pytest.mark.parametrize("run", range(3))
async def test_manager_starts_empty(db_manager, run):
    async with db_manager.session() as session:
        assert (await session.execute("SELECT count(*) FROM policies")).scalar() == 0
        user = await User.create(email="same@example.com", name=f"run {run}")
        assert user.id == 1
    async with db_manager.session():
        assert await User.filter(email="same@example.com").exists()


async def test_failed_statement_then_teardown(db_session):
    await User.create(email="dup@example.com", name="a")
    with pytest.raises(IntegrityError):
        await User.create(email="dup@example.com", name="b")


async def test_fixture_types(db_manager, db_session):
    assert isinstance(db_manager, DatabaseManager)
    assert isinstance(db_session, Session)
    assert db_session.manager is db_manager
    assert db_session.is_active


async def test_uncommitted_rows_are_rolled_back(db_session):  # the file's last test
    await User.create(email="uncommitted@example.com", name="u")
'''

LEAK_CHECK = '''
import asyncio, json, os, threading, time

import asyncpg


async def _pg_connections(url):
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()")
    finally:
        await conn.close()


def pytest_sessionfinish(session):
    deadline = time.monotonic() + 3
    while True:
        threads = sorted(t.name for t in threading.enumerate()
                         if t is not threading.main_thread())
        url = os.environ.get("LEAK_CHECK_PG_URL")
        pg = asyncio.run(_pg_connections(url)) if url else 0
        if (not threads and not pg) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    with open("leaks.json", "w") as f:
        json.dump({"threads": threads, "pg_connections": pg}, f)
'''


def _project(pytester: pytest.Pytester, tests: str = USER_TESTS) -> None:
    pytester.makeini(INI)
    pytester.makeconftest(LEAK_CHECK)
    pytester.makepyfile(test_users=tests)


def _leaks(pytester: pytest.Pytester) -> dict[str, object]:
    result: dict[str, object] = json.loads((pytester.path / "leaks.json").read_text())
    return result


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (ENV_DATABASE_URL, "DATABASE_MODELS", "DATABASE_URL", "LEAK_CHECK_PG_URL"):
        monkeypatch.delenv(name, raising=False)


def test_sqlite_by_default(pytester: pytest.Pytester) -> None:
    _project(pytester)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=60)
    result.assert_outcomes(passed=9)
    result.stdout.fnmatch_lines([
        "aegis-tortoise: db_manager on sqlite+aiosqlite:///:memory: (default); "
        "models: aegis_tortoise.examples.models"])
    assert _leaks(pytester) == {"threads": [], "pg_connections": 0}


async def _stale_schema(url: str) -> None:
    """A ``users`` table from some older model version, with a row in it."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("CREATE TABLE users (id int, legacy text); "
                           "INSERT INTO users VALUES (42, 'old')")
    finally:
        await conn.close()


async def _emails(url: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        return [row["email"] for row in await conn.fetch("SELECT email FROM users")]
    finally:
        await conn.close()


@pytest.mark.postgres
def test_postgres_by_option_then_by_environment(pytester: pytest.Pytester,
                                                pg_server: PgServer,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    database = pg_server.create_database(f"plugin_{uuid.uuid4().hex[:8]}")
    url = pg_server.url_for(database)
    asyncio.run(_stale_schema(url))
    _project(pytester)
    monkeypatch.setenv("LEAK_CHECK_PG_URL", url)

    # A password in the URL (ignored by a trust-auth server) never reaches the output.
    with_password = url.replace("://postgres@", "://postgres:hunter2@", 1)
    assert with_password != url
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider",
                                           f"--aegis-db-url={with_password}", timeout=60)
    result.assert_outcomes(passed=9)
    result.stdout.fnmatch_lines([f"aegis-tortoise: db_manager on *{database} (--aegis-db-url)*"])
    assert "hunter2" not in result.stdout.str()
    assert _leaks(pytester) == {"threads": [], "pg_connections": 0}
    assert asyncio.run(_emails(url)) == []  # db_session's uncommitted rows were rolled back

    # A second run on the same database (the last test's rows are still there) via the
    # environment variable; the models this time from DATABASE_MODELS.
    pytester.makeini(INI.replace("aegis_models = aegis_tortoise.examples.models", ""))
    monkeypatch.setenv(ENV_DATABASE_URL, url.replace("postgresql://", "postgresql+asyncpg://"))
    monkeypatch.setenv("DATABASE_MODELS", "aegis_tortoise.examples.models")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=60)
    result.assert_outcomes(passed=9)
    result.stdout.fnmatch_lines([f"aegis-tortoise: db_manager on *{database} "
                                 f"({ENV_DATABASE_URL}); models: aegis_tortoise.examples.models"])
    assert _leaks(pytester) == {"threads": [], "pg_connections": 0}


WRONG_LOOPS = '''
import pytest
import pytest_asyncio


@pytest.mark.asyncio(loop_scope="module")
async def test_on_module_loop(db_manager):
    pass


@pytest_asyncio.fixture(loop_scope="session")
async def on_session_loop(db_manager):
    async with db_manager.session():
        pass


async def test_fixture_on_session_loop(on_session_loop):
    pass


async def test_on_function_loop(db_manager):
    async with db_manager.session():
        pass
'''


def test_other_event_loops_are_refused(pytester: pytest.Pytester) -> None:
    _project(pytester, WRONG_LOOPS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=60)
    result.assert_outcomes(passed=1, errors=2)
    result.stdout.fnmatch_lines([
        "*test_on_module_loop runs on a module-scoped event loop, but db_manager/db_session "
        "belong to the test function's loop*",
        "*TransactionError: db_manager was used on another event loop than the test's*",
    ], consecutive=False)


def test_settings_resolution(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makeini("[pytest]\naegis_models =\n    app.models\n    app.other\n")
    monkeypatch.setenv("DATABASE_MODELS", "env.models")
    config = pytester.parseconfig()
    settings = settings_from_config(config)
    assert settings.url == "sqlite+aiosqlite:///:memory:"
    assert settings.models == ("app.models", "app.other")

    monkeypatch.setenv(ENV_DATABASE_URL, "postgresql://u:pw@db/test")
    config = pytester.parseconfig("--aegis-models", "cli.models, cli.more",
                                  "--aegis-db-url", "sqlite:///tests.db")
    settings = settings_from_config(config)
    assert (settings.url, settings.source) == ("sqlite:///tests.db", "--aegis-db-url")
    assert settings.models == ("cli.models", "cli.more")

    pytester.makeini("[pytest]\n")
    config = pytester.parseconfig()
    settings = settings_from_config(config)
    assert (settings.url, settings.source) == ("postgresql://u:pw@db/test", ENV_DATABASE_URL)
    assert settings.models == ("env.models",)

    with pytest.raises(pytest.UsageError, match="'mysql'") as info:
        settings_from_config(pytester.parseconfig("--aegis-db-url", "mysql://u:secret@h/db"))
    assert "secret" not in str(info.value)

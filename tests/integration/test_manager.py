"""DatabaseManager: every URL form, lazy init, close/re-init, passwords never shown."""

from __future__ import annotations

import asyncio
import logging
import traceback
from pathlib import Path

import pytest

from aegis_tortoise import (
    ConfigurationError,
    DatabaseConnectionError,
    DatabaseManager,
    PoolTimeoutError,
)
from aegis_tortoise.examples.models import User
from tests.conftest import EXAMPLE_MODELS, PgServer, count_rows, reset_pg_schema

SECRET = "S3cr3t-Pa55"


def _texts(exc: BaseException) -> list[str]:
    """Everything an error can show: message, repr, to_dict, chain, formatted traceback."""
    texts = ["".join(traceback.format_exception(exc))]
    current: BaseException | None = exc
    while current is not None:
        texts += [str(current), repr(current), str(getattr(current, "details", ""))]
        if hasattr(current, "to_dict"):
            texts.append(str(current.to_dict()))
        current = current.__cause__ or current.__context__
    return texts


def _log_text(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)


async def _works(url: str) -> str:
    db = DatabaseManager(url, models=EXAMPLE_MODELS, pool_timeout=5)
    try:
        await db.generate_schemas()
        async with db.session() as session:
            await User.create(email="u@x", name="U")
            name = (await session.execute("SELECT name FROM users")).scalar_one()
        assert await count_rows(db) == 1
        return str(name)
    finally:
        await db.close()


@pytest.mark.parametrize("scheme", ["postgresql+asyncpg", "postgresql", "postgres", "asyncpg"])
async def test_postgres_url_forms(scheme: str, pg_server: PgServer) -> None:
    database = pg_server.create_database(f"url_{scheme.replace('+', '_')}")
    url = pg_server.url_for(database).replace("postgresql://", f"{scheme}://", 1)
    assert await _works(url) == "U"


@pytest.mark.parametrize(("url", "file"), [
    ("sqlite+aiosqlite:///rel_a.db", "rel_a.db"),
    ("sqlite:///rel_b.db", "rel_b.db"),
    ("sqlite://rel_c.db", "rel_c.db"),
    ("sqlite+aiosqlite:///:memory:", None),
    ("sqlite:///:memory:", None),
    ("sqlite://:memory:", None),
])
async def test_sqlite_url_forms(
    url: str, file: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert await _works(url) == "U"
    if file is not None:  # relative to the working directory, as in SQLAlchemy
        assert (tmp_path / file).is_file()
    else:
        assert not any(tmp_path.iterdir())  # noqa: ASYNC240 - the test's own tmp_path


async def test_sqlite_absolute_url(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "abs.db"
    path.parent.mkdir()
    assert str(path).startswith("/")
    assert await _works(f"sqlite:///{path}") == "U"  # sqlite:////tmp/.../abs.db
    assert path.is_file()
    # Another manager, on the other spelling of the same path, sees the row: the same file.
    db = DatabaseManager(f"sqlite+aiosqlite:///{path}", models=EXAMPLE_MODELS)
    try:
        assert await count_rows(db) == 1
    finally:
        await db.close()


async def test_unknown_scheme_is_a_configuration_error_naming_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ConfigurationError) as info:
        DatabaseManager(f"mysql+aiomysql://root:{SECRET}@127.0.0.1/app", models=EXAMPLE_MODELS)
    assert "mysql+aiomysql" in str(info.value)
    for text in [*_texts(info.value), _log_text(caplog)]:
        assert SECRET not in text


async def test_refused_connection_never_shows_password(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    db = DatabaseManager(f"postgresql://postgres:{SECRET}@127.0.0.1:1/nothing",
                         models=EXAMPLE_MODELS, pool_timeout=5)
    try:
        with pytest.raises(DatabaseConnectionError) as info:
            async with db.session():
                pass
        assert not isinstance(info.value, PoolTimeoutError)
        assert isinstance(info.value.__cause__, OSError)
        for text in [*_texts(info.value), _log_text(caplog), repr(db), str(db.url)]:
            assert SECRET not in text
        assert "***" in repr(db)
    finally:
        await db.close()


async def test_working_connection_with_password_never_logs_it(
    pg_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # The test server trusts local connections: the password is sent and ignored.
    url = pg_database.replace("postgres@", f"postgres:{SECRET}@", 1)
    db = DatabaseManager(url, models=EXAMPLE_MODELS, echo=True)
    try:
        await db.generate_schemas()
        async with db.session() as session:
            await session.execute("SELECT 1")
            assert SECRET not in repr(session)
        assert SECRET not in repr(db)
        assert caplog.records  # echo=True and DEBUG: there was something to leak
        assert SECRET not in _log_text(caplog)
    finally:
        await db.close()


async def test_missing_postgres_database_is_a_configuration_error(pg_server: PgServer) -> None:
    db = DatabaseManager(pg_server.url_for("aegis_no_such_database"), models=EXAMPLE_MODELS)
    try:
        with pytest.raises(ConfigurationError, match="does not exist"):
            async with db.session():
                pass
    finally:
        await db.close()


async def test_lazy_initialisation_and_reinit_after_close(db_url: str, backend: str) -> None:
    db = DatabaseManager(db_url, models=EXAMPLE_MODELS, pool_size=2, max_overflow=0)
    assert not db.is_initialized
    assert "not connected" in repr(db)
    await db.generate_schemas()
    assert db.is_initialized
    if backend == "postgres":
        pool = db._client()._pool
        assert pool.get_size() == 1  # generate_schemas used exactly one connection
    await db.close()
    assert not db.is_initialized
    await db.close()  # closing twice is harmless
    async with db.session() as session:  # a later session initialises again
        assert (await session.execute("SELECT 1")).scalar() == 1
    await db.close()


async def test_no_connection_before_first_session(pg_database: str, pg_admin: object) -> None:
    import asyncpg

    assert isinstance(pg_admin, asyncpg.Connection)
    url = pg_database + "?application_name=aegis_lazy"
    db = DatabaseManager(url, models=EXAMPLE_MODELS)

    async def connections() -> int:
        value: int = await pg_admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'aegis_lazy'")
        return value

    try:
        assert await connections() == 0
        async with db.session() as session:
            await session.execute("SELECT 1")
            assert await connections() == 1
    finally:
        await db.close()


async def test_async_with_manager_closes_it(db_url: str, backend: str) -> None:
    async with DatabaseManager(db_url, models=EXAMPLE_MODELS) as db:
        async with db.get_session() as session:  # get_session is session's alias
            assert (await session.execute("SELECT 2")).scalar() == 2
        assert db.is_initialized
    assert not db.is_initialized


async def test_model_modules_may_be_given_as_modules(db_url: str, backend: str) -> None:
    from aegis_tortoise.examples import models

    if backend == "postgres":  # the shared test database may hold other tests' rows
        await reset_pg_schema(db_url)
    async with DatabaseManager(db_url, models=[models]) as db:
        await db.generate_schemas()
        async with db.session():
            await User.create(email="m@x", name="M")
        assert await count_rows(db) == 1


def test_manager_carries_on_in_a_new_event_loop(db_url: str, backend: str) -> None:
    """A second ``asyncio.run`` (or a test's own loop) with a manager made in the first."""
    if backend == "postgres":
        asyncio.run(reset_pg_schema(db_url))
    db = DatabaseManager(db_url, models=EXAMPLE_MODELS)

    async def add(email: str) -> int:
        async with db.session():
            await User.create(email=email, name="L")
            return int(await User.all().count())

    first = asyncio.new_event_loop()
    try:
        first.run_until_complete(db.generate_schemas())
        assert first.run_until_complete(add("first@x")) == 1
        second = asyncio.new_event_loop()
        try:
            # sqlite keeps its connection (an in-memory database its rows); PostgreSQL opens
            # a new pool on this loop. The data is the same database's either way.
            assert second.run_until_complete(add("second@x")) == 2
        finally:
            second.run_until_complete(db.close())
            second.close()
        first.run_until_complete(asyncio.sleep(0))  # let the dropped pool finish closing
    finally:
        first.close()
    assert not db.is_initialized


def test_close_from_another_event_loop_closes_the_connection(tmp_path: Path) -> None:
    db = DatabaseManager(f"sqlite:///{tmp_path}/loops.db", models=EXAMPLE_MODELS)
    asyncio.run(db.generate_schemas())
    client = db._client()
    asyncio.run(db.close())  # not a new connection made and closed: this one
    assert client._connection is None


async def test_echo_logs_every_statement(
    db_url: str, backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    if backend == "postgres":
        await reset_pg_schema(db_url)
    async with DatabaseManager(db_url, models=EXAMPLE_MODELS, echo=True) as db:
        await db.generate_schemas()
        with caplog.at_level(logging.INFO, logger="aegis_tortoise.sql"):
            async with db.session() as session:
                await User.create(email="echo@x", name="E")
                await session.execute("SELECT count(*) FROM users WHERE name = :n", {"n": "E"})
    sql = [r.getMessage() for r in caplog.records if r.name == "aegis_tortoise.sql"]
    assert any("INSERT INTO" in line and "echo@x" in line for line in sql)
    assert any("SELECT count(*) FROM users WHERE name =" in line for line in sql)
    assert all(r.levelno == logging.INFO for r in caplog.records if r.name == "aegis_tortoise.sql")

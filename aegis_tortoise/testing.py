"""pytest plugin (entry point ``pytest11``): the ``db_manager`` and ``db_session`` fixtures.

Installed with the package; nothing to enable. Configuration:

- database: ``--aegis-db-url`` or ``AEGIS_TEST_DATABASE_URL``; default in-memory sqlite.
- models: ``--aegis-models``, the ini setting ``aegis_models`` or ``DATABASE_MODELS``
  (comma- or newline-separated module paths).

Every test starts on empty tables whose ids start at 1. In-memory sqlite: a new database per
test. PostgreSQL (or a sqlite file): the models' tables are dropped and created once per test
run, then emptied (``TRUNCATE ... RESTART IDENTITY``) before each test; point the option at a
database reserved for tests.

Both fixtures run on the test function's event loop (pinned ``loop_scope="function"``,
whatever ``asyncio_default_fixture_loop_scope`` says): a connection opened on one loop and
used on another would silently reconnect to a new, empty in-memory database. A test or
fixture that uses ``db_manager`` on another loop fails with a clear error instead.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
from collections.abc import AsyncIterator, Callable
from typing import Any, NoReturn

import pytest

from aegis_tortoise.config import DatabaseURL, parse_database_url
from aegis_tortoise.errors import ConfigurationError, TransactionError
from aegis_tortoise.manager import DatabaseManager
from aegis_tortoise.session import Session

__all__ = ["ENV_DATABASE_URL", "db_manager", "db_session"]

ENV_DATABASE_URL = "AEGIS_TEST_DATABASE_URL"
DEFAULT_URL = "sqlite+aiosqlite:///:memory:"
_FIXTURES = frozenset({"db_manager", "db_session"})

# Persistent databases whose tables this process has (re)created: (url, models).
_prepared: set[tuple[str, tuple[str, ...]]] = set()


@dataclasses.dataclass(frozen=True)
class PluginSettings:
    """Where ``db_manager`` connects and which models it loads."""

    url: str
    parsed: DatabaseURL
    models: tuple[str, ...]
    source: str


_SETTINGS = pytest.StashKey[PluginSettings]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("aegis-tortoise", "aegis-tortoise database fixtures")
    group.addoption(
        "--aegis-db-url", dest="aegis_db_url", default=None, metavar="URL",
        help=f"database for the db_manager/db_session fixtures (env {ENV_DATABASE_URL}; "
             "default in-memory sqlite). Its model tables are dropped, re-created and "
             "emptied: use a database reserved for tests")
    group.addoption(
        "--aegis-models", dest="aegis_models", default=None, metavar="MODULES",
        help="comma-separated Tortoise model modules for db_manager "
             "(default: ini aegis_models, then DATABASE_MODELS)")
    parser.addini("aegis_models", "Tortoise model modules for the db_manager fixture "
                  "(comma- or newline-separated)", default="")


def _split(raw: str) -> tuple[str, ...]:
    return tuple(item for item in re.split(r"[,\s]+", raw) if item)


def settings_from_config(config: pytest.Config) -> PluginSettings:
    """Resolve the database URL and models from options, ini and environment."""
    url = config.getoption("aegis_db_url", None)
    source = "--aegis-db-url"
    if not url:
        url, source = os.environ.get(ENV_DATABASE_URL), ENV_DATABASE_URL
    if not url:
        url, source = DEFAULT_URL, "default"
    try:
        parsed = parse_database_url(url)
    except ConfigurationError as exc:
        raise pytest.UsageError(f"aegis-tortoise: {source}: {exc.message}") from None
    models = _split(config.getoption("aegis_models", None) or "")
    if not models:
        models = _split(str(config.getini("aegis_models") or ""))
    if not models:
        models = _split(os.environ.get("DATABASE_MODELS", ""))
    return PluginSettings(url=url, parsed=parsed, models=models, source=source)


def _settings(config: pytest.Config) -> PluginSettings:
    if _SETTINGS not in config.stash:
        config.stash[_SETTINGS] = settings_from_config(config)
    return config.stash[_SETTINGS]


def pytest_configure(config: pytest.Config) -> None:
    _settings(config)  # a bad URL is a usage error before any test runs


def pytest_report_header(config: pytest.Config) -> str:
    s = _settings(config)
    return (f"aegis-tortoise: db_manager on {s.parsed.masked()} ({s.source}); "
            f"models: {', '.join(s.models) or 'none'}")


def _test_loop_scope(item: pytest.Item) -> str | None:
    marker = item.get_closest_marker("asyncio")
    if marker is None:
        return None
    scope = marker.kwargs.get("loop_scope") or marker.kwargs.get("scope")
    return str(scope or item.config.getini("asyncio_default_test_loop_scope") or "function")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if not _FIXTURES.intersection(getattr(item, "fixturenames", ())):
        return
    scope = _test_loop_scope(item)
    if scope not in (None, "function"):
        pytest.fail(
            f"{item.nodeid} runs on a {scope}-scoped event loop, but db_manager/db_session "
            "belong to the test function's loop (a connection used on another loop would "
            "reconnect to a new, empty in-memory database). Use the default "
            "loop_scope='function' for tests that use them", pytrace=False)


class _FixtureManager(DatabaseManager):
    """A DatabaseManager that refuses to be used on an event loop other than its own."""

    _aegis_loop: asyncio.AbstractEventLoop | None = None

    def session(self) -> Session:
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # not in async code; nothing can connect yet
            loop = None
        if loop is not None and self._aegis_loop is not None and loop is not self._aegis_loop:
            raise TransactionError(
                "db_manager was used on another event loop than the test's: its connections "
                "belong to the test function's loop (with in-memory sqlite another loop "
                "would silently see a new, empty database). Run the fixtures that use it "
                "with loop_scope='function'")
        return super().session()

    get_session = session


def _quote(name: str, schema: str | None = None) -> str:
    quoted = '"' + name.replace('"', '""') + '"'
    return f'"{schema}".{quoted}' if schema else quoted


def _tables(manager: DatabaseManager) -> list[str]:
    """The quoted tables of the manager's models, m2m join tables included."""
    tables: dict[str, None] = {}
    for model in manager._models:
        meta = model._meta
        tables[_quote(meta.db_table, meta.schema)] = None
        for name in sorted(meta.m2m_fields):
            field: Any = meta.fields_map[name]
            tables[_quote(field.through, field.through_schema or meta.schema)] = None
    return list(tables)


async def _drop_and_create(manager: DatabaseManager) -> None:
    """Replace the models' tables: a schema left by an older version of the models goes."""
    async with manager.session() as session:  # initialises the manager: models are known
        tables = _tables(manager)
        if not tables:
            return
        if manager.dialect == "postgres":
            await session.execute(f"DROP TABLE IF EXISTS {', '.join(tables)} CASCADE")
        else:
            await session.execute("PRAGMA defer_foreign_keys = ON")
            for table in tables:
                await session.execute(f"DROP TABLE IF EXISTS {table}")
    await manager.generate_schemas(safe=False)


async def _empty(manager: DatabaseManager) -> None:
    """Delete every row of the models' tables and restart their ids at 1."""
    async with manager.session() as session:
        tables = _tables(manager)
        if not tables:
            return
        if manager.dialect == "postgres":
            # A session a previous test left open would block TRUNCATE: fail, don't hang.
            await session.execute("SET LOCAL lock_timeout = '10s'")
            await session.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
            return
        await session.execute("PRAGMA defer_foreign_keys = ON")
        for table in tables:
            await session.execute(f"DELETE FROM {table}")  # noqa: S608 - the models' tables
        has_sequences = (await session.execute(
            "SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_sequence'")).scalar()
        if has_sequences:
            names = [t.strip('"').replace('""', '"') for t in tables]
            await session.execute(
                f"DELETE FROM sqlite_sequence WHERE name IN ({', '.join('?' * len(names))})",  # noqa: S608
                names)


async def _db_manager(request: pytest.FixtureRequest) -> AsyncIterator[DatabaseManager]:
    """A DatabaseManager on empty tables of the configured models (ids start at 1).

    Closed after the test. Open sessions with ``async with db_manager.session() as s:``.
    """
    s = _settings(request.config)
    manager = _FixtureManager(s.url, models=list(s.models), pool_size=5, max_overflow=10,
                              pool_timeout=30, pool_recycle=3600)
    manager._aegis_loop = asyncio.get_running_loop()
    try:
        key = (s.url, s.models)
        if s.parsed.is_memory:
            await manager.generate_schemas(safe=False)
        elif key not in _prepared:
            await _drop_and_create(manager)
            _prepared.add(key)
        else:
            await _empty(manager)
        yield manager
    finally:
        await manager.close()


async def _db_session(db_manager: DatabaseManager) -> AsyncIterator[Session]:
    """An open session of ``db_manager``, rolled back after the test.

    Plain Tortoise calls and repositories in the test run in its transaction; call
    ``await db_session.commit()`` to make rows visible to other sessions. On sqlite a second
    session of the same manager in the same test is refused (sqlite has one connection).
    """
    async with db_manager.session() as session:
        yield session
        # Like SQLAlchemy's AsyncSession closed without commit(): what the test did not
        # commit is rolled back (and a transaction the test left aborted ends quietly).
        if session.is_active:
            await session.rollback()


def _missing_pytest_asyncio() -> NoReturn:
    pytest.fail("aegis-tortoise's db_manager/db_session fixtures need pytest-asyncio: "
                "pip install 'aegis-tortoise[test]'", pytrace=False)


def _fixture(function: Callable[..., Any], name: str) -> Any:
    try:
        import pytest_asyncio
    except ImportError:  # pragma: no cover - pytest itself must keep working without it
        return pytest.fixture(name=name)(_missing_pytest_asyncio)
    return pytest_asyncio.fixture(loop_scope="function", name=name)(function)


db_manager = _fixture(_db_manager, "db_manager")
db_session = _fixture(_db_session, "db_session")

"""pytest plugin (entry point ``pytest11``): the ``db_manager`` and ``db_session`` fixtures.

Installed with the package; nothing to enable. Configuration:

- database: ``--aegis-db-url`` or ``AEGIS_TEST_DATABASE_URL``; default in-memory sqlite.
- models: ``--aegis-models``, the ini setting ``aegis_models`` or ``DATABASE_MODELS``
  (comma- or newline-separated module paths).
- pytest-xdist: each worker gets a database of its own (``app_test_gw0``, created when
  missing; a sqlite file ``tests_gw0.db``).

Every test starts on empty tables whose ids start at 1 (the models' tables are created once
per test run on PostgreSQL or a sqlite file; in-memory sqlite is a new database per test).

Isolation is by rollback, Django TestCase style: the manager is pinned to one connection
and one outer transaction, every session of the test (``db_session``, the app's request
sessions, sessions the test opens) is a savepoint on it, and the outer transaction is rolled
back when the test ends. A session therefore sees what another wrote, even uncommitted, and
costs no TRUNCATE. A test that needs real commits (other connections, several event loops,
``LISTEN``) is marked ``@pytest.mark.aegis_commit``: its tables are emptied with
``TRUNCATE ... RESTART IDENTITY`` before and after it instead.

``aegis_client`` runs the test's FastAPI app (a fixture named ``app``) with its lifespan
on the test's manager and yields an httpx client (see :func:`app_client`).

Both fixtures run on the test function's event loop (pinned ``loop_scope="function"``,
whatever ``asyncio_default_fixture_loop_scope`` says): a connection opened on one loop and
used on another would silently reconnect to a new, empty in-memory database. A test or
fixture that uses ``db_manager`` on another loop fails with a clear error instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import os
import re
from collections.abc import AsyncIterator, Callable
from typing import Any, NoReturn
from urllib.parse import quote, urlsplit, urlunsplit

import pytest
from tortoise.context import _current_context

from aegis_tortoise._loop_bridge import close_all
from aegis_tortoise._pinned import pin
from aegis_tortoise._register import test_manager
from aegis_tortoise.config import DatabaseURL, parse_database_url, split_hosts
from aegis_tortoise.errors import ConfigurationError, TransactionError
from aegis_tortoise.manager import DatabaseManager
from aegis_tortoise.session import Session

__all__ = ["ENV_DATABASE_URL", "aegis_client", "app_client", "db_manager", "db_session"]

ENV_DATABASE_URL = "AEGIS_TEST_DATABASE_URL"
DEFAULT_URL = "sqlite+aiosqlite:///:memory:"
_FIXTURES = frozenset({"db_manager", "db_session", "aegis_client"})
COMMIT_MARKER = "aegis_commit"

# Persistent databases whose tables this process has (re)created: (url, models).
_prepared: set[tuple[str, tuple[str, ...]]] = set()


@dataclasses.dataclass(frozen=True)
class PluginSettings:
    """Where ``db_manager`` connects and which models it loads."""

    # Not in repr(): pytest -l shows a failing fixture's locals; ``parsed`` masks it.
    url: str = dataclasses.field(repr=False)
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
    url, parsed = _per_worker(url, parsed)
    models = _split(config.getoption("aegis_models", None) or "")
    if not models:
        models = _split(str(config.getini("aegis_models") or ""))
    if not models:
        models = _split(os.environ.get("DATABASE_MODELS", ""))
    return PluginSettings(url=url, parsed=parsed, models=models, source=source)


def _per_worker(url: str, parsed: DatabaseURL) -> tuple[str, DatabaseURL]:
    """Under pytest-xdist, a database of each worker's own: ``app_test`` becomes
    ``app_test_gw0`` (created when missing), ``tests.db`` becomes ``tests_gw0.db``."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker or parsed.is_memory:
        return url, parsed
    if parsed.dialect == "sqlite":
        database = str(parsed.database)
        stem, dot, suffix = database.rpartition(".")
        path = f"{stem}_{worker}.{suffix}" if dot and "/" not in suffix else (
            f"{database}_{worker}")
        scheme, sep, rest = url.partition("://")  # the path, never the scheme
        url = scheme + sep + rest.replace(database, path, 1)
    else:
        # No database in the URL: PostgreSQL's default, the user's name.
        database = parsed.database or parsed.user or "postgres"
        parts = urlsplit(url)
        url = urlunsplit(parts._replace(path=f"/{quote(database)}_{worker}"))
    return url, parse_database_url(url)


_created: set[str] = set()

# What the plugin's error messages tell a user to install and configure (#20).
INSTALL_HINT = ("pip install -e '.[test]' in a checkout of aegis-tortoise, or pip install "
                "'aegis_tortoise-<version>-py3-none-any.whl[test]' (a wheel built with "
                "python -m build)")
PYTHONPATH_HINT = ('plain pytest imports your models only with the project root on sys.path: '
                   'add pythonpath = ["."] to [tool.pytest.ini_options] in pyproject.toml '
                   "(or pythonpath = . under [pytest] in pytest.ini)")


class _Unreachable(Exception):  # noqa: N818 - reported as one line, not raised to users
    """The test database cannot be reached or created: one line that says what to do."""


async def _ensure_database(parsed: DatabaseURL, source: str = ENV_DATABASE_URL) -> None:
    """Create the test's PostgreSQL database when it does not exist yet (once a process).

    Raises:
        _Unreachable: the server cannot be reached or refuses the user, naming ``source``
            (``--aegis-db-url`` or ``AEGIS_TEST_DATABASE_URL``) and what to start or set.
    """
    if parsed.dialect != "postgres" or parsed.database in _created:
        return
    import asyncpg

    options: dict[str, Any] = {"host": parsed.host, "port": parsed.port, "user": parsed.user,
                               "password": parsed.password, "timeout": 10}
    if parsed.host and "," in parsed.host:  # h1:5432,h2:5433: asyncpg takes lists
        options["host"], options["port"] = split_hosts(parsed.host, parsed.port)
    where = f"{parsed.masked()} ({source})"
    try:
        try:
            await (await asyncpg.connect(database=parsed.database, **options)).close()
        except asyncpg.InvalidCatalogNameError:
            admin = await asyncpg.connect(database="postgres", **options)
            try:
                name = str(parsed.database).replace('"', '""')
                await admin.execute(f'CREATE DATABASE "{name}"')
            except asyncpg.DuplicateDatabaseError:
                pass  # another worker created it meanwhile
            finally:
                await admin.close()
    except (OSError, TimeoutError) as exc:
        raise _Unreachable(
            f"aegis-tortoise: cannot reach PostgreSQL at {where}: {type(exc).__name__}; "
            f"start the server, or set {source} to one that runs (or unset it to test on "
            "in-memory sqlite)") from None
    except asyncpg.PostgresError as exc:
        raise _Unreachable(
            f"aegis-tortoise: PostgreSQL at {where} refused the test database: "
            f"{type(exc).__name__} ({exc.sqlstate}); check the user, password and database "
            f"in {source}; the user needs CREATEDB to create a missing one") from None
    _created.add(str(parsed.database))


def _settings(config: pytest.Config) -> PluginSettings:
    if _SETTINGS not in config.stash:
        config.stash[_SETTINGS] = settings_from_config(config)
    return config.stash[_SETTINGS]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{COMMIT_MARKER}: the db_manager fixture commits for real (TRUNCATE "
        "before and after the test) instead of rolling back one outer transaction")
    _settings(config)  # a bad URL is a usage error before any test runs


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    """Reach (and create) the PostgreSQL test database once, before any test runs.

    An unreachable server would otherwise fail every test with a traceback of its own.
    """
    s = _settings(config)
    if s.parsed.dialect != "postgres" or not any(
            _FIXTURES.intersection(getattr(item, "fixturenames", ())) for item in items):
        return
    try:
        asyncio.run(_ensure_database(s.parsed, s.source))
    except _Unreachable as exc:
        pytest.exit(str(exc), returncode=pytest.ExitCode.USAGE_ERROR)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    close_all()  # the run's PostgreSQL connection of rollback isolation, and its thread


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

    def session(self, readonly: bool = False, *, isolation: str | None = None) -> Session:
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
        return super().session(readonly, isolation=isolation)

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

    Rolled back (or, with ``@pytest.mark.aegis_commit``, emptied) and closed after the test.
    Plain Tortoise calls in the test run on it. Open sessions with
    ``async with db_manager.session() as s:``.
    """
    s = _settings(request.config)
    if not s.models:
        pytest.fail("aegis-tortoise: db_manager needs the Tortoise model modules of your app: "
                    "set the ini option aegis_models (e.g. 'aegis_models = app.models' in "
                    "pytest.ini or [tool.pytest.ini_options]), --aegis-models or "
                    "DATABASE_MODELS", pytrace=False)
    # Every option given: no DatabaseSettings() to read from the environment per test.
    manager = _FixtureManager(s.url, models=list(s.models), pool_size=5, max_overflow=10,
                              pool_timeout=30, pool_recycle=3600, echo=False)
    manager._aegis_loop = asyncio.get_running_loop()
    commits = request.node.get_closest_marker(COMMIT_MARKER) is not None
    try:
        await _ensure_database(s.parsed, s.source)
    except _Unreachable as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        key = (s.url, s.models)
        try:
            if s.parsed.is_memory:
                await manager.generate_schemas(safe=False)
            elif key not in _prepared:
                await _drop_and_create(manager)
                _prepared.add(key)
            elif commits:
                await _empty(manager)
            # Plain Tortoise calls in the test (and its fixtures) find the manager's context.
            await manager.init()
        except ConfigurationError as exc:
            if "Model module" not in exc.message or "not found" not in exc.message:
                raise
            pytest.fail(f"aegis-tortoise: {exc.message}. {PYTHONPATH_HINT}", pytrace=False)
        token = _current_context.set(manager._ctx)
        try:
            if commits:
                yield manager
                await _empty(manager)
            else:
                async with pin(manager, _tables):
                    yield manager
        finally:
            with contextlib.suppress(ValueError):  # torn down in another context than set
                _current_context.reset(token)
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


def _request_context(app: Any, manager: DatabaseManager) -> Any:
    """``app`` with each request run in a context of its own, bound to ``manager`` only.

    A request must not inherit the test's open ``db_session``: as in production, the app's
    plain Tortoise calls autocommit (a savepoint each, under rollback isolation) and its
    sessions are its own (savepoints too), instead of joining the test's transaction.
    """

    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        context = contextvars.Context()
        context.run(_current_context.set, manager._ctx)
        context.run(test_manager.set, manager)
        task = asyncio.get_running_loop().create_task(app(scope, receive, send),
                                                      context=context)
        await task

    return asgi


@contextlib.asynccontextmanager
async def app_client(app: Any, manager: DatabaseManager, *, base_url: str = "http://test"
                     ) -> AsyncIterator[Any]:
    """Run ``app``'s lifespan on ``manager`` and yield an httpx client for it.

    While it runs, the app's ``RegisterTortoise``/``register_tortoise`` and
    ``session_dependency`` use ``manager`` (the test's database) instead of their own, so
    what the test writes through its fixtures is what the app's requests see::

        async def test_get_user(app, db_manager, db_session):
            await User.create(email="a@example.com", name="A")
            async with app_client(app, db_manager) as client:
                assert (await client.get("/users/1")).status_code == 200

    Needs httpx; a FastAPI/Starlette app's lifespan runs in the test's task.
    """
    import httpx

    token = test_manager.set(manager)
    try:
        lifespan = getattr(getattr(app, "router", None), "lifespan_context", None)
        async with lifespan(app) if lifespan is not None else contextlib.nullcontext():
            transport = httpx.ASGITransport(app=_request_context(app, manager))
            async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
                yield client
    finally:
        test_manager.reset(token)


async def _aegis_client(request: pytest.FixtureRequest,
                        db_manager: DatabaseManager) -> AsyncIterator[Any]:
    """An httpx client of the test's ``app`` fixture, running on ``db_manager``."""
    async with app_client(request.getfixturevalue("app"), db_manager) as client:
        yield client


def _missing_pytest_asyncio() -> NoReturn:
    pytest.fail("aegis-tortoise's db_manager/db_session fixtures need pytest-asyncio: "
                f"{INSTALL_HINT}", pytrace=False)


def _fixture(function: Callable[..., Any], name: str) -> Any:
    try:
        import pytest_asyncio
    except ImportError:  # pragma: no cover - pytest itself must keep working without it
        return pytest.fixture(name=name)(_missing_pytest_asyncio)
    return pytest_asyncio.fixture(loop_scope="function", name=name)(function)


db_manager = _fixture(_db_manager, "db_manager")
db_session = _fixture(_db_session, "db_session")
aegis_client = _fixture(_aegis_client, "aegis_client")

"""DatabaseManager: one database, its own Tortoise context and pool, sessions, close().

Each manager owns a :class:`tortoise.context.TortoiseContext`, so several managers (different
databases, same or different models) live in one process and event loop independently.
Tortoise 1.1.9 keeps some state on the model classes themselves (the connection alias and the
SQL dialect of the prepared base queries); :func:`_activate` switches it between dialects
only while no session of another dialect uses those models, and raises a clear error
otherwise.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
import weakref
from collections.abc import Callable, Iterable
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any, Self

from tortoise.context import TortoiseContext, _current_context
from tortoise.log import db_client_logger
from tortoise.utils import generate_schema_for_client

from aegis_tortoise._backends import Backend, PostgresBackend, SqliteBackend
from aegis_tortoise.config import DatabaseSettings, DatabaseURL, parse_database_url
from aegis_tortoise.errors import (
    ConfigurationError,
    DatabaseConnectionError,
    TransactionError,
    TransactionOutcomeUnknownError,
    translate_errors,
    translate_exception,
)
from aegis_tortoise.session import Session

if TYPE_CHECKING:
    from tortoise.models import Model

__all__ = ["DatabaseManager"]

logger = logging.getLogger("aegis_tortoise.manager")
sql_logger = logging.getLogger("aegis_tortoise.sql")

APP_LABEL = "models"
_ids = itertools.count(1)

# --- model state shared between managers (Tortoise keeps it on the model classes) ------------

_managers: weakref.WeakSet[DatabaseManager] = weakref.WeakSet()
_prepared_dialect: dict[type[Model], str] = {}
_executor_keys: dict[tuple[str, str | None, str], type[Model]] = {}
_generation = 0


def _conflicting_manager(manager: DatabaseManager,
                         models: Iterable[type[Model]]) -> DatabaseManager | None:
    """Another manager, of another dialect, with a session open on some of ``models``."""
    wanted = set(models)
    for other in list(_managers):
        if other is manager or other.dialect == manager.dialect or not other._active_sessions:
            continue
        if wanted & set(other._models):
            return other
    return None


def _dialect_error(manager: DatabaseManager, other: DatabaseManager) -> TransactionError:
    return TransactionError(
        f"Cannot open a {manager.dialect} session on {manager.url.masked()} while a "
        f"{other.dialect} session on {other.url.masked()} is using the same model classes: "
        "Tortoise ORM keeps one SQL dialect per model class, so managers of different "
        "dialects that share models must work one after the other",
        details={"dialect": manager.dialect, "busy_dialect": other.dialect},
    )


def _prepare(manager: DatabaseManager, models: Iterable[type[Model]]) -> None:
    """Point the model classes at the manager's alias and build their base queries in its
    dialect (synchronous, so atomic on the event loop)."""
    global _generation
    query_class = manager._client().query_class
    for model in models:
        # Mirrors tortoise.apps.Apps._build_initial_querysets (Tortoise 1.1.9).
        meta = model._meta
        meta.default_connection = manager.alias
        basequery = query_class.from_(meta.basetable)
        meta.basequery = basequery
        meta.basequery_all_fields = basequery.select(*meta.db_fields)
        _prepared_dialect[model] = manager.dialect
    _generation += 1


def _activate(manager: DatabaseManager) -> None:
    """Make the manager's models build SQL of its dialect, unless another dialect's open
    session uses them."""
    if manager._generation_seen == _generation:
        return
    stale = [m for m in manager._models if _prepared_dialect.get(m) != manager.dialect]
    if stale:
        other = _conflicting_manager(manager, stale)
        if other is not None:
            raise _dialect_error(manager, other)
        _prepare(manager, stale)
    manager._generation_seen = _generation


class _EchoLog:
    """Stands in for Tortoise's client logger when ``echo=True``: SQL at INFO level."""

    def debug(self, msg: str, *args: Any) -> None:
        sql_logger.info(msg, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(sql_logger, name)


class DatabaseManager:
    """Connections and sessions for one database.

    Args:
        database_url: SQLAlchemy- or Tortoise-style URL; ``None`` takes
            ``settings.database_url`` (``DATABASE_URL``, default in-memory sqlite).
        models: Tortoise model modules (``["app.models"]``); default
            ``settings.database_models``.
        pool_size: Connections kept for reuse; with ``max_overflow`` the pool's maximum.
        max_overflow: Extra connections allowed under load.
        pool_timeout: Seconds a session waits for a free connection (and for connecting)
            before :class:`PoolTimeoutError`.
        pool_recycle: Connections idle longer than this many seconds are closed and replaced.
        echo: Log every SQL statement (logger ``aegis_tortoise.sql``, INFO).
        settings: A :class:`DatabaseSettings` supplying every value not given here.
        **driver_options: Passed to the driver (asyncpg ``connect()`` keywords such as
            ``ssl``, ``command_timeout``, ``server_settings``; sqlite pragmas).

    Nothing connects until the first :meth:`session`.
    """

    def __init__(
        self,
        database_url: str | None = None,
        models: Iterable[str | ModuleType] | None = None,
        *,
        pool_size: int | None = None,
        max_overflow: int | None = None,
        pool_timeout: float | None = None,
        pool_recycle: float | None = None,
        echo: bool | None = None,
        settings: DatabaseSettings | None = None,
        **driver_options: Any,
    ) -> None:
        if settings is None and None in (database_url, models, pool_size, max_overflow,
                                         pool_timeout, pool_recycle, echo):
            settings = DatabaseSettings()
        self.settings = settings
        self.url: DatabaseURL = parse_database_url(
            database_url if database_url is not None else settings.database_url  # type: ignore[union-attr]
        )
        self.models: list[str | ModuleType] = list(
            models if models is not None else settings.database_models  # type: ignore[union-attr]
        )
        self.pool_size = _positive_int("pool_size", pool_size, settings, minimum=1)
        self.max_overflow = _positive_int("max_overflow", max_overflow, settings, minimum=0)
        self.pool_timeout = _seconds("pool_timeout", pool_timeout, settings, allow_zero=False)
        self.pool_recycle = _seconds("pool_recycle", pool_recycle, settings, allow_zero=True)
        self.echo = bool(echo if echo is not None else settings.database_echo)  # type: ignore[union-attr]
        self.driver_options = driver_options
        self.id = next(_ids)
        self.dialect: str = self.url.dialect
        # One alias per dialect: Tortoise 1.1.9 caches insert/delete SQL by alias + table, and
        # stores the alias on the model classes, which managers sharing models have in common.
        self.alias = f"aegis_{self.dialect}"
        self._backend: Backend = (
            PostgresBackend(self) if self.dialect == "postgres" else SqliteBackend(self)
        )
        self._sql_log: Any = _EchoLog() if self.echo else db_client_logger
        self._ctx: TortoiseContext | None = None
        self._root_client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._init_lock: asyncio.Lock | None = None
        self._models: tuple[type[Model], ...] = ()
        self._module_names = tuple(m if isinstance(m, str) else m.__name__ for m in self.models)
        self._generation_seen = -1
        self._active_sessions = 0
        # The session this manager has open in the current task (for nested-session rules).
        self._current: contextvars.ContextVar[Session | None] = contextvars.ContextVar(
            f"aegis_session_{self.id}", default=None)
        _managers.add(self)

    def __repr__(self) -> str:
        state = "open" if self._ctx is not None else "not connected"
        return (f"<DatabaseManager #{self.id} {self.url.masked()!r} {state}, "
                f"pool_size={self.pool_size}, max_overflow={self.max_overflow}, "
                f"active_sessions={self._active_sessions}>")

    @classmethod
    def from_settings(cls, settings: DatabaseSettings | None = None, **overrides: Any) -> Self:
        """A manager configured entirely from settings (``DatabaseSettings()`` by default)."""
        settings = settings if settings is not None else DatabaseSettings()
        return cls(settings=settings, **overrides)

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def is_initialized(self) -> bool:
        """Whether the Tortoise context is set up (it is, after the first session)."""
        return self._ctx is not None

    def _client(self) -> Any:
        """The manager's own Tortoise client (it owns the pool), never a session's."""
        if self._root_client is None:
            raise TransactionError("The manager is not initialised; open a session first")
        return self._root_client

    async def _ensure_initialized(self) -> TortoiseContext:
        loop = asyncio.get_running_loop()
        if self._ctx is not None and self._loop is not loop:
            self._move_to_loop(loop)
        if self._ctx is not None:
            return self._ctx
        if self._init_lock is None:
            self._init_lock = asyncio.Lock()
        async with self._init_lock:
            ctx = self._ctx
            if ctx is None:
                ctx = await self._initialize()
            return ctx

    def _move_to_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Carry on in another event loop (a second ``asyncio.run``, a test's own loop).

        Connections are bound to the loop that opened them: asyncpg's pool cannot be used
        from another one, so it is dropped and the manager initialises again; aiosqlite's
        thread serves any loop, so sqlite keeps its connection (and an in-memory database
        its data) and only gets new locks.
        """
        logger.info("%r is used from a new event loop", self)
        self._init_lock = None
        if self._backend.move_to_loop(self._root_client):
            self._loop = loop
        else:
            self._ctx = None
            self._root_client = None
            self._generation_seen = -1

    async def _initialize(self) -> TortoiseContext:
        global _generation
        # The pool's own settings win over driver options of the same name (the backend
        # already bounds a given connect timeout by pool_timeout).
        connection = self.url.tortoise_connection(
            **{**self.driver_options, **self._backend.pool_options()})
        if self.dialect == "sqlite":
            connection["engine"] = "aegis_tortoise._sqlite"  # a daemon aiosqlite thread
        ctx = TortoiseContext()
        token = _current_context.set(ctx)
        try:
            with translate_errors(connecting=True):
                if self.models:
                    await ctx.init(config={
                        "connections": {self.alias: connection},
                        # Tortoise 1.1.9's config takes module paths only, not module objects.
                        "apps": {APP_LABEL: {"models": list(self._module_names),
                                             "default_connection": self.alias}},
                    })
                else:
                    # Tortoise 1.1.9 rejects a config without models; a manager used only for
                    # raw SQL (session.execute) needs just the connection.
                    await ctx.connections._init({self.alias: connection}, False)
        except Exception:
            await ctx.close_connections()
            raise
        finally:
            _current_context.reset(token)
        models = tuple(m for app in (ctx.apps.apps.values() if ctx.apps else ())
                       for m in app.values())
        # Tortoise's init has just prepared the model classes for this dialect. If another
        # dialect's open session uses some of them, put those back before anything awaits
        # (the other session's next query must not see this dialect), then refuse. The
        # check is by class, so a module that re-exports another's models is caught too.
        other = _conflicting_manager(self, models)
        if other is not None:
            _prepare(other, [m for m in models if m in other._models])
            await ctx.close_connections()
            raise _dialect_error(self, other)
        for model in models:
            key = (self.alias, model._meta.schema, model._meta.db_table)
            known = _executor_keys.setdefault(key, model)
            if known is not model:
                await ctx.close_connections()
                raise ConfigurationError(
                    f"Models {known.__module__}.{known.__name__} and "
                    f"{model.__module__}.{model.__name__} both map to table "
                    f"{model._meta.db_table!r}; Tortoise ORM caches SQL per table, so give "
                    "one of them another db_table",
                    details={"table": model._meta.db_table},
                )
            _prepared_dialect[model] = self.dialect
        _generation += 1
        self._models = models
        self._generation_seen = _generation
        # Read once, outside any session: inside one, connections.get(alias) answers with
        # the session's transaction client, which the contextvar binds to the alias.
        self._root_client = ctx.connections.get(self.alias)
        self._loop = asyncio.get_running_loop()
        self._ctx = ctx
        logger.info("initialised %r with %d models", self, len(models))
        return ctx

    async def generate_schemas(self, safe: bool = True) -> None:
        """Create the models' tables (for tests and demos; use aerich migrations in production).

        Args:
            safe: Skip tables that already exist.
        """
        async with self.session() as session:
            await generate_schema_for_client(session.connection, safe)

    async def close(self) -> None:
        """Close every connection. A later :meth:`session` initialises the manager again."""
        self._ctx = None
        client, self._root_client = self._root_client, None
        self._generation_seen = -1
        if client is not None:
            # The client itself, not TortoiseContext.close_connections(): Tortoise 1.1.9
            # looks the client up again, and from another event loop than the one that
            # opened it, it makes (and closes) a new one and leaves the open one running
            # (aiosqlite's thread then keeps the process from exiting).
            await self._backend.close(client, same_loop=self._loop is asyncio.get_running_loop())
            logger.info("closed %r", self)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    # -- sessions -----------------------------------------------------------------------------

    def session(self) -> Session:
        """A new session: ``async with db.session() as session: ...``.

        It commits when the block ends normally and rolls back on any exception.
        """
        return Session(self)

    get_session = session

    async def _open_session(self, session: Session) -> None:
        outer = self._current.get()
        if outer is not None and outer.is_active and self.dialect == "sqlite":
            raise TransactionError(
                "A sqlite session is already open in this task; sqlite has a single "
                "connection, so a nested session would deadlock. Use the open session, or "
                "TransactionManager(session).transaction() for a savepoint",
                details={"dialect": "sqlite"},
            )
        ctx = await self._ensure_initialized()
        _activate(self)
        client = self._client()
        self._active_sessions += 1
        try:
            await self._backend.acquire(session, client)
        except BaseException as exc:
            self._active_sessions -= 1
            if isinstance(exc, Exception):
                translated = translate_exception(exc, connecting=True)
                if translated is not exc:
                    raise translated from exc
            raise
        session._lease = client
        session._lock = session._client._lock
        session._ctx = ctx
        session._ctx_token = _current_context.set(ctx)
        session._storage_token = ctx.connections.set(self.alias, session._client)
        session._task_token = self._current.set(session)

    async def _close_session(self, session: Session, exc: BaseException | None) -> None:
        from aegis_tortoise.session import _SessionState

        if session._state is not _SessionState.OPEN:
            return
        error: BaseException | None = None
        try:
            if session._began:
                if exc is None:
                    await self._commit(session, reopen=False)
                else:
                    await self._rollback_quietly(session)
        except BaseException as end_exc:  # noqa: BLE001 - re-raised below
            error = end_exc
        finally:
            session._state = _SessionState.CLOSED
            session._began = False
            self._active_sessions -= 1
            self._unbind(session)
            try:
                await self._backend.release(session, session._lease)
            except Exception:
                logger.warning("could not return a connection to the pool", exc_info=True)
        if error is not None:
            raise error
        if exc is not None and isinstance(exc, Exception):
            translated = translate_exception(exc)
            if translated is not exc:
                raise translated from exc

    def _unbind(self, session: Session) -> None:
        """Undo what _open_session bound to the context, newest first.

        A context variable can only be reset in the context that set it. A session closed
        elsewhere (its ``__aexit__`` called from another task) must still give its
        connection back, so a failed reset is logged, not raised.
        """
        ctx: TortoiseContext | None = session._ctx

        def reset_storage() -> None:
            if ctx is not None:
                ctx.connections.reset(session._storage_token)

        resets: list[Callable[[], object]] = [
            lambda: self._current.reset(session._task_token),
            reset_storage,
            lambda: _current_context.reset(session._ctx_token),
        ]
        for reset in resets:
            try:
                reset()
            except (ValueError, RuntimeError):
                logger.warning("%r was closed in another task than the one that opened it; "
                               "open and close a session in the same task", session)
                break

    async def _commit(self, session: Session, *, reopen: bool = True) -> None:
        client = session._client
        if self._backend.is_broken(session):
            session._began = False
            raise DatabaseConnectionError(
                "The connection was lost before COMMIT; nothing of this transaction was "
                "committed")
        if session._failed is not None:
            # Commit never lies: a statement failed outside a savepoint, so nothing is written.
            error = session._pending_error(rolled_back=True)
            await self._rollback_quietly(session)
            if reopen:
                client._finalized = False
            raise error
        try:
            await self._backend.commit(session)
        except Exception as exc:
            session._began = False
            if reopen:
                client._finalized = False  # the transaction is over either way
            translated = translate_exception(exc)
            # The connection failed, or the driver's command_timeout gave up waiting for the
            # reply (asyncpg then cancels, maybe too late): either way the server may have
            # committed.
            if isinstance(translated, DatabaseConnectionError) or isinstance(exc, TimeoutError):
                raise TransactionOutcomeUnknownError(
                    "COMMIT was sent but its reply never came (the connection failed or the "
                    "statement timed out): the transaction may or may not have been "
                    "committed. Check before retrying, or make the unit of work idempotent",
                    cause=exc) from exc
            if translated is exc:
                raise
            raise translated from exc
        session._began = False
        if reopen:
            client._finalized = False

    async def _rollback(self, session: Session) -> None:
        client = session._client
        session._began = False
        session._clear_failure()
        try:
            with translate_errors():
                await client.rollback()
        finally:
            client._finalized = False

    async def _rollback_quietly(self, session: Session) -> None:
        """Roll back after an error; a failure here must not hide the original error."""
        session._began = False
        session._clear_failure()
        if self._backend.is_broken(session):
            return  # the server has already discarded the transaction
        try:
            await session._client.rollback()
        except BaseException as exc:
            logger.warning("rollback failed; the connection will be discarded", exc_info=True)
            self._backend.discard(session)
            if not isinstance(exc, Exception):
                raise  # cancellation: the connection is gone, let it propagate

    def _echo_sql(self, sql: str, values: list[Any]) -> None:
        if self.echo:
            sql_logger.info("%s %r", sql, values)


def _positive_int(name: str, value: int | None, settings: DatabaseSettings | None, *,
                  minimum: int) -> int:
    if value is None:
        value = getattr(settings, f"database_{name}")
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(f"{name} must be an integer >= {minimum}, got {value!r}",
                                 details={"field": name})
    return value


def _seconds(name: str, value: float | None, settings: DatabaseSettings | None, *,
             allow_zero: bool) -> float:
    if value is None:
        value = getattr(settings, f"database_{name}")
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (
        value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigurationError(f"{name} must be a number of seconds {bound}, got {value!r}",
                                 details={"field": name})
    return float(value)

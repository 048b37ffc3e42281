"""DatabaseManager: one database, its own Tortoise context and pool, sessions, close().

Each manager owns a :class:`tortoise.context.TortoiseContext`, so several managers (different
databases, same or different models) live in one process and event loop independently.
Tortoise 1.1.9 keeps some state on the model classes themselves (the connection name and the
SQL dialect of the prepared base queries); :mod:`aegis_tortoise._model_state` switches it
between managers, and raises a clear error when two dialects want it at once. Time zone and
routers are per context (:mod:`aegis_tortoise._tortoise_state`).
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any, Self

from tortoise.config import TortoiseConfig
from tortoise.context import TortoiseContext, _current_context
from tortoise.exceptions import BaseORMException
from tortoise.utils import generate_schema_for_client

from aegis_tortoise import _cursor, _isolation, _model_state, _tortoise_state
from aegis_tortoise._backends import Backend, PostgresBackend, SqliteBackend
from aegis_tortoise._modules import check_model_modules
from aegis_tortoise._observe import acquire as observed_acquire
from aegis_tortoise._observe import client_log, sql_logger
from aegis_tortoise._observe import stats as observed_stats
from aegis_tortoise._options import flag, positive_int, seconds, zone
from aegis_tortoise._replicas import ReadonlySession, ReplicaSet
from aegis_tortoise._tortoise_config import (
    DEFAULT_CONNECTION,
    config_source,
    context_config,
    load_tortoise_config,
    pool_from_credentials,
    primary_connection,
    url_of_connection,
)
from aegis_tortoise._tortoise_state import keep_process_state, publish_context, unpublish_context
from aegis_tortoise.config import (
    DEFAULT_DATABASE_URL,
    DatabaseSettings,
    DatabaseURL,
    default_url_in_use,
    parse_database_url,
    pgbouncer_option,
)
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

_ids = itertools.count(1)


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
        use_tz: Timezone-aware datetimes, as Tortoise's ``use_tz`` (this manager's own).
        timezone: The time zone of naive datetimes and ``auto_now`` fields, as Tortoise's.
        routers: Tortoise database routers (dotted paths or classes), this manager's own.
        global_context: Publish the manager's Tortoise context as the process's fallback
            (as ``Tortoise.init(_enable_global_fallback=True)``): plain Tortoise calls
            outside any session then run on this database. At most one per process.
        pgbouncer: Connections go through PgBouncer in transaction pooling mode: no named
            prepared statements (asyncpg ``statement_cache_size=0``), no session state kept
            on connections. ``None``: the URL's ``?pgbouncer=true``, else
            ``DATABASE_PGBOUNCER``.
        replica_urls: Read replicas for ``session(readonly=True)``; ``None``:
            ``DATABASE_REPLICA_URLS`` (see :mod:`aegis_tortoise._replicas`).
        max_replica_lag: Seconds a replica may lag before readonly sessions skip it.
        read_your_writes: Seconds after a task committed a write during which its readonly
            sessions use the primary; 0 disables.
        cursor_secret: The key that signs keyset cursors (at least 16 bytes); ``None``:
            ``DATABASE_CURSOR_SECRET`` (see :mod:`aegis_tortoise._cursor`).
        isolation_level: The isolation level of every session's transactions:
            ``"read committed"``, ``"repeatable read"`` or ``"serializable"``; None:
            ``DATABASE_ISOLATION_LEVEL``, else the server's ``default_transaction_isolation``.
            ``db.session(isolation=...)`` overrides it per session. sqlite transactions are
            serializable whatever is asked.
        **driver_options: Passed to the driver (asyncpg ``connect()`` keywords such as
            ``ssl``, ``command_timeout``, ``server_settings``; sqlite pragmas).

    Nothing connects until the first :meth:`session` (or :meth:`init`). The connection is
    named ``"default"``, as Tortoise names the connection of a bare URL.
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
        use_tz: bool = True,
        timezone: str = "UTC",
        routers: Sequence[str | type] | None = None,
        global_context: bool = False,
        pgbouncer: bool | None = None,
        replica_urls: Sequence[str] | None = None,
        max_replica_lag: float | None = None,
        read_your_writes: float | None = None,
        cursor_secret: str | bytes | None = None,
        isolation_level: str | None = None,
        _tortoise_config: dict[str, Any] | None = None,
        **driver_options: Any,
    ) -> None:
        # Importing the library changes nothing in Tortoise; the first manager does.
        _tortoise_state.install()
        _model_state.install()
        config = _tortoise_config
        if config is not None:
            self.alias = primary_connection(config)
            database_url = "unused"
            models = [m for app in config["apps"].values() for m in app["models"]]
        if settings is None and None in (database_url, models, pool_size, max_overflow,
                                         pool_timeout, pool_recycle, echo, isolation_level):
            # A Tortoise config names the database and the models itself: DATABASE_URL and
            # DATABASE_MODELS are not this manager's, even when set (or invalid).
            settings = (DatabaseSettings() if config is None else DatabaseSettings(
                database_url=DEFAULT_DATABASE_URL, database_models=[]))
        self.settings = settings
        #: The URL is the in-memory default: nothing set DATABASE_URL (see check_health).
        self.url_is_default = config is None and database_url is None and default_url_in_use(
            settings)
        if config is None:
            self.alias = DEFAULT_CONNECTION
            self.url: DatabaseURL = parse_database_url(
                database_url if database_url is not None else settings.database_url  # type: ignore[union-attr]
            )
        else:
            self.url = url_of_connection(self.alias, config["connections"][self.alias])
        self.models: list[str | ModuleType] = list(
            models if models is not None else settings.database_models  # type: ignore[union-attr]
        )
        self.pool_size = positive_int("pool_size", pool_size, settings, minimum=1)
        self.max_overflow = positive_int("max_overflow", max_overflow, settings, minimum=0)
        self.pool_timeout = seconds("pool_timeout", pool_timeout, settings, allow_zero=False)
        self.pool_recycle = seconds("pool_recycle", pool_recycle, settings, allow_zero=True)
        self.echo = bool(echo if echo is not None else settings.database_echo)  # type: ignore[union-attr]
        self.driver_options = driver_options
        self.isolation_level = _isolation.isolation_level(
            isolation_level if isolation_level is not None or settings is None
            else settings.database_isolation_level, "isolation_level")
        self.id = next(_ids)
        self.dialect: str = self.url.dialect
        if config is not None:
            # Tortoise's precedence: the config's own use_tz/timezone/routers win.
            use_tz = config.get("use_tz", use_tz)
            timezone = config.get("timezone", timezone)
            routers = config.get("routers", routers)
        self.use_tz = flag("use_tz", use_tz)
        self.timezone = zone(timezone)
        self.routers: list[str | type] = list(routers or ())
        self.global_context = flag("global_context", global_context)
        self.pgbouncer = pgbouncer_option(pgbouncer, self.url, config, self.alias, settings)
        self._replicas = ReplicaSet.configure(self, replica_urls, max_replica_lag,
                                              read_your_writes)
        self._tortoise_config = config
        # None until the first cursor needs it: then the setting, else the fallbacks.
        self._cursor_key = _cursor.checked_secret(cursor_secret, "cursor_secret")
        self._backend: Backend = (
            PostgresBackend(self) if self.dialect == "postgres" else SqliteBackend(self)
        )
        self._sql_log: Any = client_log(self.echo)
        self._init_runtime_state()
        _model_state.register(self)

    def _init_runtime_state(self) -> None:
        """What the first session fills in: the context, the loop, the models."""
        self._ctx: TortoiseContext | None = None
        self._root_client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._init_lock: asyncio.Lock | None = None
        self._models: tuple[type[Model], ...] = ()
        self._model_connections: dict[type[Model], str] = {}
        self._generation_seen = -1
        self._active_sessions = 0
        self._create_db = False
        # The session this manager has open in the current task (for nested-session rules).
        self._current: contextvars.ContextVar[Session | None] = contextvars.ContextVar(
            f"aegis_session_{self.id}", default=None)

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

    @classmethod
    def from_tortoise_config(
        cls, config: Mapping[str, Any] | TortoiseConfig | str | None = None, *,
        db_url: str | None = None, modules: Mapping[str, Iterable[str | ModuleType]] | None = None,
        **options: Any,
    ) -> Self:
        """A manager for a plain Tortoise config, honoured whole.

        Args:
            config: A ``TORTOISE_ORM`` dict, a ``TortoiseConfig``, a dotted path to either
                (``"app.config.TORTOISE_ORM"``) or a ``.json``/``.yml`` file. Its URLs keep
                Tortoise's meaning (``sqlite:///tmp/x.db`` is ``/tmp/x.db``).
            db_url: Instead of ``config``: a Tortoise URL, with ``modules``
                (``{"models": ["app.models"]}``), as ``Tortoise.init(db_url=, modules=)``.
            modules: The app labels and model modules that go with ``db_url``.
            **options: This library's options (``pool_size``, ``pool_timeout``, ``echo``,
                ``global_context``...); ``use_tz``/``timezone``/``routers`` apply where the
                config does not set them, as in ``Tortoise.init``.

        Every app label and connection of the config is loaded. Sessions run on the
        ``"default"`` connection (else the only one, else the first app's); the others
        serve their models as plain Tortoise does. Without ``pool_size``, an asyncpg
        ``maxsize`` in the session connection's credentials sizes the pool.
        """
        loaded = load_tortoise_config(config_source(config, db_url=db_url, modules=modules))
        return cls(_tortoise_config=loaded, **pool_from_credentials(loaded, options))

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
            unpublish_context(self._ctx)
            self._ctx = None
            self._root_client = None
            self._generation_seen = -1

    def _config(self) -> dict[str, Any]:
        """The Tortoise config this manager initialises its context with."""
        return context_config(self.url, self.models, self.alias,
                              tortoise_config=self._tortoise_config,
                              driver_options=self.driver_options,
                              pool_options=self._backend.pool_options())

    async def init(self) -> None:
        """Set up the Tortoise context now (the first session does it otherwise).

        With ``global_context=True`` this publishes the context, so plain Tortoise calls
        outside sessions work from here on. Connections are still opened on first use.
        """
        await self._ensure_initialized()

    async def _initialize(self) -> TortoiseContext:
        check_model_modules(self.models)  # a wrong module: our ConfigurationError, naming it
        config = self._config()
        ctx = TortoiseContext()
        token = _current_context.set(ctx)
        try:
            # keep_process_state: the context keeps its own time zone and routers; the
            # process-wide copies that Tortoise 1.1.9's init rewrites are put back.
            with translate_errors(connecting=True), keep_process_state():
                if self.models:
                    await ctx.init(config=config, use_tz=self.use_tz, timezone=self.timezone,
                                   routers=self.routers, _create_db=self._create_db)
                else:
                    # Tortoise 1.1.9 rejects a config without models; a manager used only for
                    # raw SQL (session.execute) needs just the connection.
                    await ctx.connections._init(config["connections"], self._create_db)
                    ctx._inited = True
                    ctx._use_tz, ctx._timezone = self.use_tz, self.timezone
            if self.global_context:
                publish_context(ctx, self)
        except BaseException:
            await ctx.close_connections()
            raise
        finally:
            _current_context.reset(token)
        models = tuple(m for app in (ctx.apps.apps.values() if ctx.apps else ())
                       for m in app.values())
        self._model_connections = {m: str(m._meta.default_connection) for m in models}
        # Tortoise's init has just prepared the model classes for this manager. If another
        # manager's open session needs them otherwise (another dialect or connection name),
        # put those back before anything awaits
        # (the other session's next query must not see this dialect), then refuse. The
        # check is by class, so a module that re-exports another's models is caught too.
        other = _model_state.conflicting_manager(self, models)
        if other is not None:
            _model_state.prepare(other, [m for m in models if m in other._models])
            await self._close_context(ctx)
            raise _model_state.dialect_error(self, other)
        for model in models:
            key = (self._model_connections[model], model._meta.schema, model._meta.db_table)
            known = _model_state.table_owners.setdefault(key, model)
            if known is not model:
                await self._close_context(ctx)
                raise ConfigurationError(
                    f"Models {known.__module__}.{known.__name__} and "
                    f"{model.__module__}.{model.__name__} both map to table "
                    f"{model._meta.db_table!r}; Tortoise ORM caches SQL per table, so give "
                    "one of them another db_table",
                    details={"table": model._meta.db_table},
                )
        self._models = models
        _model_state.record(self, models)
        _tortoise_state.bind_sessions(ctx, self.alias, self._current)  # sessions beat routers
        self._generation_seen = _model_state.generation()
        # Read once, outside any session: inside one, connections.get(alias) answers with
        # the session's transaction client, which the contextvar binds to the alias.
        self._root_client = ctx.connections.get(self.alias)
        self._loop = asyncio.get_running_loop()
        self._ctx = ctx
        logger.info("initialised %r with %d models", self, len(models))
        return ctx

    async def _close_context(self, ctx: TortoiseContext) -> None:
        unpublish_context(ctx)
        await ctx.close_connections()

    async def generate_schemas(self, safe: bool = True) -> None:
        """Create the models' tables (for tests and demos; use aerich migrations in production).

        Args:
            safe: Skip tables that already exist.
        """
        async with self.session() as session:
            await generate_schema_for_client(session.connection, safe)
            # A config's other connections serve their own apps' models (plain clients).
            ctx = session._ctx
            for name in ctx.connections.db_config:
                if name != self.alias:
                    await generate_schema_for_client(ctx.connections.get(name), safe)

    async def close(self) -> None:
        """Close every connection. A later :meth:`session` initialises the manager again."""
        ctx, self._ctx = self._ctx, None
        client, self._root_client = self._root_client, None
        self._generation_seen = -1
        if ctx is not None:
            unpublish_context(ctx)
            same_loop = self._loop is asyncio.get_running_loop()
            # The config's other connections (not the sessions'): as Tortoise closes them.
            for name, other in list(ctx.connections._get_storage().items()):
                if name != self.alias and same_loop:
                    await other.close()
        await self._replicas.close()
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

    def session(self, readonly: bool = False, *, isolation: str | None = None) -> Session:
        """A new session: ``async with db.session() as session: ...``.

        It commits when the block ends normally and rolls back on any exception. With
        ``readonly=True`` it runs on a healthy replica (the primary when none is usable, or
        within ``read_your_writes`` of this task's last write) in a READ ONLY transaction.
        ``isolation``: ``"read committed"``, ``"repeatable read"`` or ``"serializable"``
        for the session's transactions; None: the manager's ``isolation_level``.
        """
        level = self.isolation_level if isolation is None else isolation
        return ReadonlySession(self, level) if readonly else Session(self, level)

    get_session = session

    async def _open_session(self, session: Session) -> None:
        outer = self._current.get()
        if (outer is not None and outer.is_active and self.dialect == "sqlite"
                and not getattr(self._backend, "pinned", False)):
            raise TransactionError(
                "A sqlite session is already open in this task; sqlite has a single "
                "connection, so a nested session would deadlock. Use the open session, or "
                "TransactionManager(session).transaction() for a savepoint",
                details={"dialect": "sqlite"},
            )
        ctx = await self._ensure_initialized()
        _model_state.activate(self)
        client = self._client()
        self._active_sessions += 1
        try:
            await observed_acquire(self, session, client)  # the backend's, counted and timed
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
            session._end_transaction()
            self._active_sessions -= 1
            self._unbind(session)
            try:
                await self._backend.release(session, session._lease)
            except Exception:
                logger.warning("could not return a connection to the pool", exc_info=True)
        if error is not None:
            raise error
        # Tortoise's own exceptions (DoesNotExist, IntegrityError...) come from plain
        # Tortoise calls in the block: they leave it as they are, so the service's handlers
        # (tortoise_exception_handlers) keep matching. Raw driver errors are translated.
        if isinstance(exc, Exception) and not isinstance(exc, BaseORMException):
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
            session._end_transaction()
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
            session._end_transaction()
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
        self._replicas.note_commit(session)  # read-your-writes, if it wrote
        session._end_transaction()
        if reopen:
            client._finalized = False

    async def _rollback(self, session: Session) -> None:
        client = session._client
        session._end_transaction()
        session._clear_failure()
        try:
            with translate_errors():
                await client.rollback()
        finally:
            client._finalized = False

    async def _rollback_quietly(self, session: Session) -> None:
        """Roll back after an error; a failure here must not hide the original error."""
        session._end_transaction()
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

    def stats(self) -> dict[str, Any]:
        """Pool state, waits, timeouts, statement and retry counts (see ``_observe.stats``)."""
        return {**observed_stats(self), **self._replicas.stats()}

    def _echo_sql(self, sql: str, values: list[Any]) -> None:
        if self.echo:
            sql_logger.info("%s %r", sql, values)

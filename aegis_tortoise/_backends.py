"""Per-dialect connection handling for sessions: acquire with a timeout, release, raw SQL.

Tortoise 1.1.9 acquires pooled connections without a timeout and creates its transaction
clients itself; a session needs both under its own control, so the two backends reuse
Tortoise's transaction clients (so model calls work unchanged) around connections they
acquire themselves. This module holds the PostgreSQL (asyncpg pool) backend and the
``Backend`` union; the sqlite backend is in :mod:`aegis_tortoise._sqlite_backend`.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

import asyncpg
from asyncpg.transaction import TransactionState
from tortoise.backends.asyncpg.client import AsyncpgDBClient
from tortoise.backends.asyncpg.client import TransactionWrapper as AsyncpgTransactionWrapper
from tortoise.backends.base.client import ConnectionWrapper, TransactionContext

from aegis_tortoise import _acquire
from aegis_tortoise._isolation import asyncpg_isolation
from aegis_tortoise._lazy_reads import LazyReads
from aegis_tortoise._observe import pg_connection_init
from aegis_tortoise._operations import BeginningConnectionWrapper, NestedContext
from aegis_tortoise._sqlite_backend import SqliteBackend, _SqliteSessionClient
from aegis_tortoise.config import split_hosts
from aegis_tortoise.errors import (
    DatabaseConnectionError,
    PoolTimeoutError,
    TransactionError,
)
from aegis_tortoise.session import Result, Session

if TYPE_CHECKING:
    from aegis_tortoise.manager import DatabaseManager

# The names other modules import from here; SqliteBackend and _SqliteSessionClient are
# re-exported from aegis_tortoise._sqlite_backend.
__all__ = [
    "Backend",
    "PostgresBackend",
    "SqliteBackend",
    "_AcquireAttempt",
    "_PgSessionClient",
    "_SqliteSessionClient",
    "_acquire_attempt",
    "left_its_role",
    "reports_primary",
    "reports_read_only",
]

logger = logging.getLogger("aegis_tortoise.pool")


async def _no_reset(conn: Any) -> None:
    """asyncpg's ``reset=`` hook: nothing beyond the ROLLBACK asyncpg does itself.

    A session that may have left state on its connection runs the full reset query itself
    before handing it back (PostgresBackend.release); the others skip that round trip.

    It runs on every release, plain Tortoise calls' outside sessions too: a connection whose
    server no longer is what its URL's ``target_session_attrs`` asks for (a primary fenced or
    demoted under ``read-write``) is closed rather than pooled, so a retry finds the current
    primary instead of that connection again. Terminating it here returns its slot (asyncpg
    0.32: ``Connection._cleanup`` -> ``_release_on_close``); the pool then skips its own
    release steps for it.
    """
    if left_its_role(conn):
        conn.terminate()


class _PgSessionClient(LazyReads, AsyncpgTransactionWrapper):
    """Tortoise's asyncpg transaction client on a connection the session acquired."""

    async def fetch_rows(self, query: str, values: list[Any] | None = None) -> list[Any]:
        async def run(client: Any, sql: str, params: list[Any] | None) -> list[Any]:
            async with client.acquire_connection() as connection:
                client.log.debug("%s: %s", sql, params)
                rows: list[Any] = await connection.fetch(sql, *(params or ()))
                return rows

        async def fetch(sql: str, params: list[Any] | None) -> list[Any]:
            # As Tortoise's execute_query_dict, minus the dict per row; driver errors get
            # Tortoise's own translation (OperationalError, IntegrityError, ... chained to
            # asyncpg's), so an error chains to the same causes as on the QuerySet path.
            # Tortoise 1.1.9 annotates _translate_exceptions as returning an Exception.
            return cast(list[Any], await self._translate_exceptions(run, sql, params))

        result: list[Any] = await self._read(fetch, query, values)
        return result

    def __init__(self, parent: AsyncpgDBClient, conn: Any, session: Session, log: Any) -> None:
        super().__init__(parent)
        self._connection = conn
        self._aegis_session = session
        self.log = log
        self._proxy: Any = None  # the pool's proxy of conn, handed back on release
        self._home: Any = None  # the pool it came from (the primary's, or a replica's)
        self._replica: Any = None  # the replica that pool belongs to (None: the primary)
        self._pgbouncer = False  # that pool reaches the server through PgBouncer

    async def begin(self) -> None:
        try:
            if self._retry_first:
                await self._first_statement(self._begin)
            else:
                await self._begin()
        except asyncio.CancelledError:
            # Cancelled while BEGIN was on the way (a cancelled iterate, a timeout): asyncpg
            # 0.32 has sent it and keeps the interrupted transaction registered, so the
            # session's next BEGIN went out as a SAVEPOINT outside any transaction. Undo
            # both, as release() does; the session's next statement begins anew.
            await asyncio.shield(self._undo_begin())
            raise

    async def _undo_begin(self) -> None:
        raw = self._connection
        if raw.is_closed():
            return
        raw._top_xact = None
        try:
            await raw.execute("ROLLBACK")  # PostgreSQL only warns when no BEGIN got through
        except Exception:  # a lost connection: the session's end discards it
            logger.debug("ROLLBACK after a cancelled BEGIN failed", exc_info=True)

    async def _begin(self) -> None:
        # db.session(readonly=True): READ ONLY, on a replica and on the primary alike.
        # isolation None: plain BEGIN, the server's default_transaction_isolation.
        level = self._aegis_session._isolation
        if level == "serializable" and self._replica is not None:
            level = "repeatable read"  # a hot standby refuses SERIALIZABLE; the same snapshot
        self.transaction = self._connection.transaction(
            readonly=getattr(self._aegis_session, "readonly", False),
            isolation=asyncpg_isolation(level))
        await self.transaction.start()

    async def _first_statement(self, send: Callable[[], Awaitable[Any]]) -> Any:
        # A readonly session's first statement may move to another replica connection
        # (aegis_tortoise._replicas.ReplicaSet.first_statement).
        replicas = self._aegis_session._manager._replicas
        return await replicas.first_statement(self, send)

    def acquire_connection(self) -> ConnectionWrapper[Any]:
        return BeginningConnectionWrapper(self._lock, self)

    def _in_transaction(self) -> TransactionContext:
        return NestedContext(AsyncpgTransactionWrapper(self), self._aegis_session)


class _AcquireAttempt:
    """One session's wait for a pooled connection: did it have to open one?"""

    __slots__ = ("connecting",)

    def __init__(self) -> None:
        self.connecting = False


_acquire_attempt: contextvars.ContextVar[_AcquireAttempt | None] = contextvars.ContextVar(
    "aegis_acquire_attempt", default=None)


async def _connect(*args: Any, **kwargs: Any) -> Any:
    """asyncpg's ``connect``, noting on the session's acquire attempt that it connects.

    The pool calls it inside ``acquire()``, in a task that inherits the caller's context.
    """
    attempt = _acquire_attempt.get()
    if attempt is not None:
        attempt.connecting = True
    host = kwargs.get("host")
    if isinstance(host, str) and "," in host:
        # A multi-host URL: Tortoise 1.1.9 takes one port (int(port)); asyncpg takes lists.
        kwargs["host"], kwargs["port"] = split_hosts(host, kwargs.get("port"))
    return await asyncpg.connect(*args, **kwargs)


class PostgresBackend:
    """asyncpg pool: bounded acquire, idle recycling, connect timeout."""

    dialect = "postgres"

    def __init__(self, manager: DatabaseManager) -> None:
        self.manager = manager
        self._pool_lock = asyncio.Lock()

    def pool_options(self) -> dict[str, Any]:
        """Tortoise credentials that size and tune the asyncpg pool."""
        m = self.manager
        return {
            # No connection before first use; at most pool_size + max_overflow.
            "minsize": 0,
            "maxsize": m.pool_size + m.max_overflow,
            # asyncpg has no maximum age: pool_recycle closes connections idle that long.
            "max_inactive_connection_lifetime": float(m.pool_recycle),
            # A connect outlives the session that started it when pool_timeout expires (it
            # joins the pool, aegis_tortoise._acquire): bounded by _acquire.CONNECT_TIMEOUT
            # (asyncpg's default is 60 s), or a shorter one given (URL connect_timeout=, or
            # timeout= among the driver options).
            "timeout": min([max(m.pool_timeout, _acquire.CONNECT_TIMEOUT),
                            *_given_connect_timeouts(m)]),
            "connect": _connect,
            "init": pg_connection_init(m),  # times each statement (aegis_tortoise._observe)
            "reset": _no_reset,
            # PgBouncer (transaction pooling) may run each transaction on another server
            # connection: asyncpg's named, cached statements would not be there.
            **({"statement_cache_size": 0} if m.pgbouncer else {}),
        }

    async def _pool(self, client: AsyncpgDBClient) -> Any:
        if client._pool is None:
            async with self._pool_lock:
                if client._pool is None:
                    await client.create_connection(with_db=True)
        return client._pool

    async def acquire(self, session: Session, client: Any) -> None:
        pool = await self._pool(client)
        taken = None
        if getattr(session, "readonly", False):
            taken = await self.manager._replicas.acquire()  # None: the primary serves
        session._client = _PgSessionClient(client, None, session, self.manager._sql_log)
        await self._bind(session, pool, taken)

    async def _bind(self, session: Session, pool: Any, taken: tuple[Any, Any] | None) -> None:
        """Give the session (and its client) the replica connection ``taken`` (the proxy and
        the replica), else one of the primary's ``pool``."""
        bound: _PgSessionClient = session._client
        if taken is None:
            proxy, replica = await self._acquire(pool), None
            bound._home, bound._pgbouncer = pool, self.manager.pgbouncer
        else:
            proxy, replica = taken
            bound._home, bound._pgbouncer = replica.pool, replica.pgbouncer
        # The session and its Tortoise client use the connection itself, not asyncpg's pool
        # proxy: asyncpg 0.32 detaches the proxy of a connection the server closed (and
        # gives its slot back) at once, after which every call on the proxy, is_closed()
        # included, raises "released back to the pool" instead of saying what happened.
        raw = proxy._con
        if raw is None:
            # The server closed it while the pool handed it out (a failover, a terminated
            # backend): asyncpg already detached it and took its slot back. Seen under a
            # failover with 20 writers (tests/cluster/test_failover.py): without this the
            # session's BEGIN failed on None with an AttributeError.
            raise DatabaseConnectionError(
                "Database connection failed: the connection was closed as the pool handed "
                "it out", details={"url": self.manager.url.masked()})
        session._conn = bound._connection = raw
        bound._proxy, bound._replica = proxy, replica
        bound._retry_first = replica is not None

    async def _acquire(self, pool: Any) -> Any:
        timeout = self.manager.pool_timeout
        # asyncpg 0.32's acquire(timeout) bounds waiting for a free slot and connecting
        # together, and both end in the same TimeoutError. _connect marks the attempt when a
        # connection is being opened, so a timeout then means "server unreachable" (a
        # retryable connection error), and otherwise "every connection busy" (never retried).
        # The acquire itself is aegis_tortoise._acquire's: a connect in progress is never
        # cancelled by the timeout, it finishes and joins the pool (a cold pool's burst).
        attempt = _AcquireAttempt()
        token = _acquire_attempt.set(attempt)
        try:
            proxy = await _acquire.acquire(pool, timeout, attempt)
        except TimeoutError as exc:
            if attempt.connecting:
                raise DatabaseConnectionError(
                    f"Could not connect to {self.manager.url.masked()} within "
                    f"pool_timeout={timeout} s", details={"timeout": timeout},
                ) from exc
            raise PoolTimeoutError(
                f"No database connection became free within pool_timeout={timeout} s "
                f"(pool_size={self.manager.pool_size}, "
                f"max_overflow={self.manager.max_overflow}); raise the pool size or shorten "
                "the sessions that hold connections",
                details={"timeout": timeout, "max_connections":
                         self.manager.pool_size + self.manager.max_overflow},
            ) from exc
        finally:
            _acquire_attempt.reset(token)
        return proxy

    async def release(self, session: Session, client: Any) -> None:
        raw = session._conn
        if raw is None:
            return
        session._conn = None
        proxy = session._client._proxy
        pool = session._client._home if client._pool is not None else None
        handed_back = False
        try:
            if pool is None:
                raw.terminate()
                return
            if self._left_primary(session, raw):
                raw.terminate()  # its slot goes back (asyncpg 0.32: _release_on_close)
                return
            if not raw.is_closed() and (raw._top_xact is not None or raw.is_in_transaction()):
                # A BEGIN that failed or was cancelled: asyncpg 0.32 keeps the transaction
                # registered, and the pool's reset would roll it back but log "Resetting
                # connection with an active transaction" as an event-loop error.
                raw._top_xact = None
                await raw.execute("ROLLBACK")
            # Through PgBouncer the connection is no longer ours once the transaction ended:
            # a reset query would run on whichever server connection it hands out.
            if session._dirty and not raw.is_closed() and not session._client._pgbouncer:
                await raw.execute(raw.get_reset_query())
            handed_back = True
            await pool.release(proxy)  # a no-op when asyncpg released a lost one already
        except BaseException as exc:
            # Cancelled inside pool.release(): asyncpg's shielded release carries on and
            # resets the connection (terminating it would fail that release). Otherwise a
            # connection that cannot be reset must not go back to the pool; terminating it
            # returns its slot (asyncpg 0.32: Connection._cleanup -> _release_on_close).
            if not (handed_back and isinstance(exc, asyncio.CancelledError)):
                raw.terminate()
            raise

    def _left_primary(self, session: Session, raw: Any) -> bool:
        """Whether a connection of the primary's pool is on a server that no longer takes
        writes (demoted, or fenced with default_transaction_read_only) although the URL asks
        for a read-write one: it must not be reused, a new connection finds the primary.
        (Closed here, before the session's ROLLBACK or reset; ``_no_reset`` would anyway.)"""
        return session._client._replica is None and left_its_role(raw)

    def move_to_loop(self, client: Any) -> bool:
        """The pool belongs to the old event loop: drop it. Returns False: reinitialise."""
        self._pool_lock = asyncio.Lock()
        _abandon_pool(client)
        return False

    async def close(self, client: Any, *, same_loop: bool) -> None:
        """Close the pool (from another event loop than its own, drop it)."""
        if same_loop:
            await client.close()
        else:
            _abandon_pool(client)

    def discard(self, session: Session) -> None:
        """Close the session's connection: its transaction state is unknown."""
        raw = session._conn
        if raw is not None and not raw.is_closed():
            raw.terminate()  # the server rolls back; the pool replaces the connection

    def is_broken(self, session: Session) -> bool:
        raw = session._conn
        return raw is None or bool(raw.is_closed())

    async def commit(self, session: Session) -> None:
        """COMMIT, reading the server's answer: PostgreSQL answers a COMMIT of a transaction
        an error aborted with ``ROLLBACK``, which is a failure, not a success.

        Tortoise 1.1.9 commits through asyncpg's ``Transaction.commit()``, which drops the
        status; this is that method (asyncpg 0.32) keeping it.
        """
        client = session._client
        xact = client.transaction
        if xact is None or client._finalized:
            await client.commit()  # Tortoise's own error for a finished transaction
            return
        raw = session._conn
        if raw._top_xact is xact:
            raw._top_xact = None
        try:
            status = await raw.execute("COMMIT;")
        except BaseException:
            xact._state = TransactionState.FAILED
            raise
        xact._state = TransactionState.COMMITTED
        client._finalized = True
        if status != "COMMIT":
            raise TransactionError(
                f"PostgreSQL answered COMMIT with {status}: the transaction had failed "
                "earlier (a statement failed or was cancelled, e.g. by a timeout, and no "
                "rollback followed), so nothing of it was written", details={"status": status})

    async def run_raw(self, conn: Any, sql: str, values: list[Any]) -> Result:
        # asyncpg 0.32's public API returns either rows (fetch) or the status (execute);
        # Connection._execute(return_status=True) gives both in one round trip.
        rows, status, _ = await conn._execute(sql, values, 0, None, return_status=True)
        if rows:
            keys = list(rows[0].keys())
        else:
            # No row to read the column names from (SELECT ... WHERE false): the statement
            # _execute just prepared is in asyncpg's cache and describes them, no round trip.
            statement = await conn._get_statement(sql, None)
            keys = [attribute.name for attribute in statement._get_attributes()]
        return Result(keys, rows, _pg_rowcount(status, len(rows)))


def reports_read_only(conn: Any) -> bool:
    """Whether the server last told this connection that it takes no writes.

    PostgreSQL 14+ reports ``in_hot_standby`` and ``default_transaction_read_only`` to the
    client whenever they change (after the next statement on that connection), and asyncpg
    0.32 keeps the latest values in ``get_settings()``; an older server reports neither.
    """
    settings = conn.get_settings()
    return "on" in (getattr(settings, "in_hot_standby", None),
                    getattr(settings, "default_transaction_read_only", None))


def left_its_role(conn: Any) -> bool:
    """Whether an open connection's server no longer is what the connection's own
    ``target_session_attrs`` asked for when it opened: ``read-write`` and now read-only
    (:func:`reports_read_only`), or ``primary`` and now in hot standby."""
    if conn.is_closed():
        return False
    wanted = getattr(conn._params, "target_session_attrs", None)  # asyncpg 0.32
    if wanted == "read-write":
        return reports_read_only(conn)
    if wanted == "primary":
        return getattr(conn.get_settings(), "in_hot_standby", None) == "on"
    return False


def reports_primary(conn: Any) -> bool:
    """Whether the server last told this connection that it is not in hot standby (see
    :func:`reports_read_only`): a replica's node that is a primary now."""
    return getattr(conn.get_settings(), "in_hot_standby", None) == "off"


def _given_connect_timeouts(manager: DatabaseManager) -> list[float]:
    """Connect timeouts the user gave; 0 means none, as libpq's connect_timeout=0."""
    given = (manager.url.options.get("connect_timeout"), manager.driver_options.get("timeout"))
    return [float(t) for t in given if t is not None and float(t) > 0]


def _abandon_pool(client: Any) -> None:
    pool, client._pool = client._pool, None
    if pool is None:
        return
    try:
        pool.terminate()  # closes the sockets, if their loop still runs
    except RuntimeError:
        logger.debug("the pool's event loop is closed; its connections are dropped")


def _pg_rowcount(status: bytes | str | None, nrows: int) -> int:
    if not status:
        return nrows
    text = status.decode() if isinstance(status, bytes) else status
    last = text.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else nrows


Backend = PostgresBackend | SqliteBackend

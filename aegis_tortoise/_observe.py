"""Observability: statement timings, the slow-query log, pool and retry counters.

Statements are timed when ``slow_query_ms`` (``DATABASE_SLOW_QUERY_MS``) is set, the
``aegis_tortoise.sql`` logger is enabled for DEBUG, or an OpenTelemetry tracer provider is
installed (:mod:`aegis_tortoise._otel`: a span per statement) when a connection opens (timing costs
about 2 us per statement, so it is off otherwise): each duration goes to that logger at
DEBUG, and a statement slower than ``slow_query_ms`` is a WARNING there, with its parameter
values redacted unless ``DATABASE_SLOW_QUERY_PARAMETERS=true``. On PostgreSQL the timing is
asyncpg's own query logger (``Connection.add_query_logger``, attached by the pool's
``init`` to each new connection); on sqlite the manager's aiosqlite connection is wrapped
once. Waits for a connection are always timed, around the backend's ``acquire``.
:func:`stats` reads it all; the manager's ``stats()`` returns it.
"""

from __future__ import annotations

import functools
import logging
import os
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from functools import wraps
from typing import TYPE_CHECKING, Any

from tortoise.log import db_client_logger

from aegis_tortoise._otel import statement_span, tracer
from aegis_tortoise.errors import PoolTimeoutError

if TYPE_CHECKING:
    from aegis_tortoise.config import DatabaseSettings
    from aegis_tortoise.manager import DatabaseManager
    from aegis_tortoise.session import Session

__all__ = ["acquire", "client_log", "count_retry", "instrument_sqlite", "pg_connection_init",
           "pool_state", "sql_logger", "stats"]

sql_logger = logging.getLogger("aegis_tortoise.sql")
_retries = 0
_SQLITE_METHODS = ("execute", "execute_insert", "execute_fetchall", "executemany",
                   "executescript")


class _EchoLog:
    """Stands in for Tortoise's client logger when ``echo=True``: SQL at INFO level."""

    def debug(self, msg: str, *args: Any) -> None:
        sql_logger.info(msg, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(sql_logger, name)


def client_log(echo: bool) -> Any:
    """The logger of the sessions' Tortoise clients: Tortoise's own, or with ``echo=True``
    every statement at INFO on ``aegis_tortoise.sql``."""
    return _EchoLog() if echo else db_client_logger


@functools.lru_cache(maxsize=8)
def _environment_settings(*variables: str | None) -> DatabaseSettings:
    """Settings from the environment (and .env), read once per value of the variables this
    module uses: reading them costs ~2 ms, which a manager per test would pay each time."""
    from aegis_tortoise.config import DatabaseSettings

    return DatabaseSettings()


class _Observer:
    """One manager's counters and slow-query settings."""

    def __init__(self, db: DatabaseManager) -> None:
        settings = db.settings if db.settings is not None else _environment_settings(
            os.environ.get("DATABASE_SLOW_QUERY_MS"),
            os.environ.get("DATABASE_SLOW_QUERY_PARAMETERS"))
        self.url = db.url
        self.tracer: Any = None
        self.slow_query_ms: float | None = settings.database_slow_query_ms
        self.log_parameters = bool(settings.database_slow_query_parameters)
        self.statements = 0
        self.slow_statements = 0
        self.acquired = 0
        self.timeouts = 0
        self.waiting = 0
        self.wait_total = 0.0
        self.wait_max = 0.0

    def timing(self) -> bool:
        """Whether new connections time their statements (and make OpenTelemetry spans)."""
        self.tracer = tracer()
        return (self.slow_query_ms is not None or self.tracer is not None
                or sql_logger.isEnabledFor(logging.DEBUG))

    def statement(self, sql: str, args: Sequence[Any] | None, seconds: float,
                  error: BaseException | None) -> None:
        self.statements += 1
        ms = seconds * 1000
        if self.tracer is not None:
            statement_span(self.tracer, self.url, sql, seconds, error)
        if sql_logger.isEnabledFor(logging.DEBUG):
            sql_logger.debug("%.3f ms%s: %s", ms, " (failed)" if error else "", sql)
        if self.slow_query_ms is not None and ms >= self.slow_query_ms:
            self.slow_statements += 1
            count = len(args) if args else 0
            shown = repr(list(args or ())) if self.log_parameters else (
                f"{count} redacted" if count else "none")
            sql_logger.warning("slow query: %.1f ms (slow_query_ms=%g): %s; parameters: %s",
                               ms, self.slow_query_ms, sql, shown)


_observers: weakref.WeakKeyDictionary[DatabaseManager, _Observer] = (
    weakref.WeakKeyDictionary())


def observer(db: DatabaseManager) -> _Observer:
    """The manager's observer (made on first use; settings are read then)."""
    found = _observers.get(db)
    if found is None:
        found = _observers[db] = _Observer(db)
    return found


def pg_connection_init(db: DatabaseManager) -> Callable[[Any], Awaitable[None]]:
    """asyncpg's pool ``init``: time every statement of each new connection."""
    obs = observer(db)

    def record(query: Any) -> None:  # asyncpg.connection.LoggedQuery
        obs.statement(query.query, query.args, query.elapsed, query.exception)

    async def init(connection: Any) -> None:
        if obs.timing():
            connection.add_query_logger(record)

    return init


def instrument_sqlite(db: DatabaseManager, connection: Any) -> None:
    """Time every statement of the manager's aiosqlite connection (once per connection)."""
    obs = observer(db)
    if getattr(connection, "_aegis_observed", False) or not obs.timing():
        return
    for name in _SQLITE_METHODS:
        setattr(connection, name, _timed(obs, getattr(connection, name)))
    connection._aegis_observed = True


def _timed(obs: _Observer, method: Callable[..., Awaitable[Any]]
           ) -> Callable[..., Awaitable[Any]]:
    @wraps(method)
    async def timed(sql: str, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            return await method(sql, *args, **kwargs)
        except BaseException as exc:
            error = exc
            raise
        finally:
            params = args[0] if args and isinstance(args[0], (list, tuple)) else None
            obs.statement(sql, params, time.perf_counter() - started, error)

    return timed


async def acquire(db: DatabaseManager, session: Session, client: Any) -> None:
    """The backend's ``acquire``, counted and timed (waiting, acquired, timeouts, waits)."""
    obs = observer(db)
    obs.waiting += 1
    started = time.perf_counter()
    try:
        await db._backend.acquire(session, client)
    except PoolTimeoutError:
        obs.timeouts += 1
        raise
    finally:
        obs.waiting -= 1
    waited = time.perf_counter() - started
    obs.acquired += 1
    obs.wait_total += waited
    obs.wait_max = max(obs.wait_max, waited)


def count_retry() -> None:
    """``with_db_retry`` is about to retry (a process-wide count)."""
    global _retries
    _retries += 1


def pool_state(db: DatabaseManager) -> dict[str, Any]:
    """The pool's connections: open (``size``), ``in_use``, ``idle`` and ``max_size``.

    Reads counters only: it never connects or waits. A manager that has not connected yet
    reports ``size == 0``.
    """
    client: Any = db._root_client
    if db.dialect == "sqlite":
        connected = client is not None and client._connection is not None
        in_use = int(connected and client._lock.locked())
        return {"size": int(connected), "in_use": in_use, "idle": int(connected) - in_use,
                "max_size": 1}
    pool: Any = client._pool if client is not None else None
    max_size = db.pool_size + db.max_overflow
    if pool is None:
        return {"size": 0, "in_use": 0, "idle": 0, "max_size": max_size}
    size = int(pool.get_size())
    idle = int(pool.get_idle_size())
    return {"size": size, "in_use": size - idle, "idle": idle, "max_size": max_size}


def stats(db: DatabaseManager) -> dict[str, Any]:
    """The pool's state and the manager's counters since it was created.

    Returns:
        ``size``, ``in_use``, ``idle``, ``max_size`` (connections now); ``waiting``
        (sessions waiting for a connection now); ``acquired`` and ``timeouts`` (connections
        handed to sessions, and ``PoolTimeoutError`` raised); ``wait_mean_ms`` and
        ``wait_max_ms`` (time sessions waited for a connection, connecting included);
        ``statements`` and ``slow_statements`` (timed statements, and those over
        ``slow_query_ms``; statements are timed on connections opened while
        ``slow_query_ms`` was set or ``aegis_tortoise.sql`` was enabled for DEBUG);
        ``retries`` (retries made by ``with_db_retry`` in this process: the decorator does
        not know which manager the wrapped code uses).
    """
    obs = observer(db)
    mean = obs.wait_total / obs.acquired if obs.acquired else 0.0
    return {
        **pool_state(db),
        "waiting": obs.waiting,
        "acquired": obs.acquired,
        "timeouts": obs.timeouts,
        "wait_mean_ms": round(mean * 1000, 3),
        "wait_max_ms": round(obs.wait_max * 1000, 3),
        "statements": obs.statements,
        "slow_statements": obs.slow_statements,
        "slow_query_ms": obs.slow_query_ms,
        "retries": _retries,
    }

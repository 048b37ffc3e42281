"""Read replicas for readonly sessions: choice, health and lag, read-your-writes.

``db.session(readonly=True)`` asks :meth:`ReplicaSet.acquire` for a connection. Replicas are
tried round-robin; each is a plain asyncpg pool with the primary's pool options (size,
``pool_timeout``, ``pool_recycle``, PgBouncer mode, driver options). A replica is skipped
while:

- it failed to connect (for :data:`DOWN_FOR` seconds, then it is tried again; when no
  replica is usable, those down are checked again in the background once per
  :data:`CHECK_EVERY` seconds);
- its node is a primary (promoted by a failover or switchover, under Patroni say): the
  server reports ``in_hot_standby`` on each connection, and the lag check asks
  ``pg_is_in_recovery()``;
- it lags more than ``max_replica_lag`` seconds. Lag is measured on the replica, on the
  connection just taken for the session, at most once per :data:`CHECK_EVERY` seconds:
  ``now() - pg_last_xact_replay_timestamp()`` while replay is behind what was received;
  an idle, caught-up replica lags 0.

A pooled connection can be dead before the event loop has noticed (a standby stopped a
moment ago): when a readonly session's first statement fails on it, the session moves to the
next candidate and the replica is skipped as if it had failed to connect
(:meth:`ReplicaSet.replace`). With no replica usable the primary serves, with a WARNING on
``aegis_tortoise.replicas`` (at most one per :data:`DOWN_FOR` seconds) and
``replica_fallbacks`` in ``db.stats()``.
After a session of the current task committed a write (a transaction that sent anything
but plain reads), that task's readonly sessions use the primary for ``read_your_writes``
seconds: a time window, not a replay-position check.
Every readonly session runs in a READ ONLY transaction, wherever it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import asyncpg

from aegis_tortoise._backends import _acquire_attempt, _AcquireAttempt, reports_primary
from aegis_tortoise.config import DatabaseSettings, DatabaseURL, parse_database_url
from aegis_tortoise.errors import (
    ConfigurationError,
    DatabaseConnectionError,
    translate_exception,
)
from aegis_tortoise.session import Session

if TYPE_CHECKING:
    from aegis_tortoise.manager import DatabaseManager

__all__ = ["CHECK_EVERY", "DOWN_FOR", "ReadonlySession", "ReplicaSet"]

logger = logging.getLogger("aegis_tortoise.replicas")

R = TypeVar("R")

#: Seconds a lag measurement is trusted before the next session measures again.
CHECK_EVERY = 1.0
#: Seconds a replica that failed to connect is skipped before it is tried again.
DOWN_FOR = 5.0

# Whether the node is a standby at all, and the seconds its replay is behind (0 when it has
# replayed all it received).
_LAG_SQL = """
SELECT pg_is_in_recovery(), CASE
  WHEN NOT pg_is_in_recovery() THEN 0
  WHEN pg_last_wal_receive_lsn() IS NULL
    OR pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn() THEN 0
  ELSE coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0)
END::float8
"""


class ReadonlySession(Session):
    """A session of ``db.session(readonly=True)``: a replica, a READ ONLY transaction.

    A write's 25006 (read_only_sql_transaction) in it is the caller's mistake, a
    :class:`~aegis_tortoise.errors.TransactionError`; in any other session it means the server
    turned read-only, a retryable connection error (``errors.note_session_error``).
    """

    __slots__ = ()

    readonly: ClassVar[bool] = True

    def __repr__(self) -> str:
        return "<readonly " + super().__repr__()[1:]


class _Replica:
    """One replica: its pool (created on first use, per event loop) and its health.

    ``pgbouncer``: reached through PgBouncer in transaction pooling mode; the URL's own
    ``?pgbouncer=`` when it has one, else the manager's mode.
    """

    def __init__(self, url: DatabaseURL, pgbouncer: bool) -> None:
        self.url = url
        self.pgbouncer: bool = url.options.get("pgbouncer", pgbouncer)
        self.pool: Any = None
        self.lag: float | None = None
        self.checked = float("-inf")
        self.down_until = float("-inf")
        #: Its node was a primary when last checked (a failover or switchover promoted it).
        self.primary = False

    def __repr__(self) -> str:
        return f"<replica {self.url.masked()!r}>"


class ReplicaSet:
    """A manager's read replicas (none: every readonly session runs on the primary)."""

    def __init__(self, manager: DatabaseManager, urls: Sequence[DatabaseURL],
                 max_replica_lag: float, read_your_writes: float) -> None:
        self.manager = manager
        self.replicas = [_Replica(url, manager.pgbouncer) for url in urls]
        self.max_replica_lag = max_replica_lag
        self.read_your_writes = read_your_writes
        self._next = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writes: weakref.WeakKeyDictionary[asyncio.Task[Any], float] = (
            weakref.WeakKeyDictionary())
        self._warned = float("-inf")
        self._probed = float("-inf")
        self._probe: asyncio.Task[None] | None = None
        self.replica_reads = 0
        self.fallbacks = 0
        self.after_write = 0

    @classmethod
    def configure(cls, manager: DatabaseManager, replica_urls: Sequence[str] | None,
                  max_replica_lag: float | None, read_your_writes: float | None) -> ReplicaSet:
        """The manager's options, else its settings (``DATABASE_REPLICA_URLS``...)."""
        settings = manager.settings
        if settings is None and None in (replica_urls, max_replica_lag, read_your_writes):
            settings = DatabaseSettings()
        if replica_urls is None:
            replica_urls = settings.database_replica_urls  # type: ignore[union-attr]
        if isinstance(replica_urls, str):
            raise ConfigurationError("replica_urls must be a list of URLs, not a string",
                                     details={"field": "replica_urls"})
        urls = [parse_database_url(url) for url in replica_urls]
        if urls and (manager.dialect != "postgres"
                     or any(url.dialect != "postgres" for url in urls)):
            raise ConfigurationError("Read replicas need PostgreSQL: the database URL and "
                                     "every replica URL must be postgresql:// URLs",
                                     details={"field": "replica_urls"})
        lag = _number("max_replica_lag", max_replica_lag,
                      settings.database_max_replica_lag if settings else 0, positive=True)
        window = _number("read_your_writes", read_your_writes,
                         settings.database_read_your_writes if settings else 0,
                         positive=False)
        return cls(manager, urls, lag, window)

    # -- read-your-writes ------------------------------------------------------------------------

    def note_commit(self, session: Session) -> None:
        """A session of the current task committed: a write, if its transaction sent a
        statement that may write (``Session._wrote``; a session that only read opens no
        window)."""
        if self.replicas and self.read_your_writes > 0 and session._wrote and not getattr(
                session, "readonly", False):
            task = asyncio.current_task()
            if task is not None:
                self._writes[task] = time.monotonic()

    def _wrote_recently(self) -> bool:
        if self.read_your_writes <= 0:
            return False
        task = asyncio.current_task()
        wrote = self._writes.get(task) if task is not None else None
        return wrote is not None and time.monotonic() - wrote < self.read_your_writes

    # -- choosing a replica -----------------------------------------------------------------------

    async def acquire(self) -> tuple[Any, _Replica] | None:
        """A connection of a usable replica, and the replica; None: the primary serves."""
        if not self.replicas:
            return None
        if self._wrote_recently():
            self.after_write += 1
            return None
        self._check_loop()
        # Round-robin over the replicas not already known to be skipped (down, a primary,
        # lagging), so one that is skipped does not hand its turns to its neighbour.
        now = time.monotonic()
        candidates = [r for r in self.replicas if not self._known_skipped(r, now)]
        start = next(self._next)
        for i in range(len(candidates)):
            replica = candidates[(start + i) % len(candidates)]
            taken = await self._try(replica)
            if taken is not None:
                self.replica_reads += 1
                return taken, replica
        self.fallbacks += 1
        self._probe_down()
        now = time.monotonic()
        if now - self._warned >= DOWN_FOR:
            self._warned = now
            logger.warning(
                "no read replica is usable (down, or lagging more than max_replica_lag=%g s): "
                "readonly sessions run on the primary %s; replicas: %s", self.max_replica_lag,
                self.manager.url.masked(), ", ".join(self._describe(r) for r in self.replicas))
        return None

    # -- moving a session whose replica connection is dead ----------------------------------

    async def first_statement(self, client: Any, send: Callable[[], Awaitable[R]]) -> R:
        """Send a readonly session's first statement; if its replica connection is dead,
        send it again on the next candidate.

        ``client`` is the session's ``_PgSessionClient`` (see ``_backends``). The session has
        done nothing before its first statement (its BEGIN READ ONLY, or a plain read before
        any BEGIN), so a connection that fails then (a pooled connection of a standby that
        stopped before the event loop saw its sockets close) can be swapped for another: it
        is discarded, its replica is skipped as after a failed health check, and the session
        takes another replica, else the primary. A failure after the first statement is not
        retried.
        """
        while True:
            retry, client._retry_first = client._retry_first, False
            try:
                return await send()
            except Exception as exc:
                if not (retry and isinstance(translate_exception(exc), DatabaseConnectionError)):
                    raise
                await self._move(client._aegis_session, exc)

    async def _move(self, session: Session, exc: BaseException) -> None:
        """Move a readonly session whose first statement found its replica connection dead
        to the next candidate."""
        bound = session._client
        raw, session._conn = session._conn, None
        if not raw.is_closed():
            raw.terminate()  # the pool replaces it
        try:
            await bound._home.release(bound._proxy)
        except Exception:
            logger.debug("could not return a dead replica connection", exc_info=True)
        bound.transaction = None
        backend = self.manager._backend
        pool = await backend._pool(session._lease)  # type: ignore[union-attr]
        # Nothing awaits between taking a replica's connection and binding it: a
        # cancellation cannot leak it.
        taken = await self.replace(bound._replica, exc)
        await backend._bind(session, pool, taken)  # type: ignore[union-attr]

    def _probe_down(self) -> None:
        """No replica is usable: check those skipped as down again, in the background and at
        most once per :data:`CHECK_EVERY` seconds, so a node that came back (a standby
        restarted, an old primary rejoining) serves readonly sessions without their waiting
        out :data:`DOWN_FOR` on the primary."""
        now = time.monotonic()
        down = [r for r in self.replicas if r.down_until > now]
        if not down or now - self._probed < CHECK_EVERY or (
                self._probe is not None and not self._probe.done()):
            return
        self._probed = now
        self._probe = asyncio.get_running_loop().create_task(self._recheck(down))

    async def _recheck(self, replicas: list[_Replica]) -> None:
        for replica in replicas:
            try:
                proxy = await self._try(replica, probe=True)  # fails: down for DOWN_FOR again
            except Exception:
                # Nobody awaits this task: an error left in it would only surface as "Task
                # exception was never retrieved" when it is collected.
                logger.warning("checking %r again failed", replica, exc_info=True)
                continue
            if proxy is not None:
                replica.down_until = float("-inf")
                await _give_back(replica.pool, proxy, broken=False)

    async def replace(self, replica: _Replica, exc: BaseException) -> tuple[Any, _Replica] | None:
        """Choose again for a readonly session whose connection to ``replica`` was found dead
        by its first statement (it has been discarded: :meth:`_move`).

        The replica is skipped for :data:`DOWN_FOR` seconds, as after a failed health check,
        and the session is counted once, where it lands (another replica, else the primary:
        ``replica_fallbacks`` and the WARNING).
        """
        replica.down_until = time.monotonic() + DOWN_FOR
        logger.info("skipping %r for %g s: %r", replica, DOWN_FOR, exc)
        self.replica_reads -= 1
        return await self.acquire()

    def _describe(self, replica: _Replica) -> str:
        if replica.down_until > time.monotonic():
            return f"{replica.url.masked()} (down)"
        if replica.primary:
            return f"{replica.url.masked()} (a primary)"
        if replica.lag is not None:
            return f"{replica.url.masked()} (lag {replica.lag:.1f} s)"
        return replica.url.masked()

    def _known_skipped(self, replica: _Replica, now: float) -> bool:
        """Skipped without asking: down, or a primary or lagging as last measured."""
        if replica.down_until > now:
            return True
        return now - replica.checked < CHECK_EVERY and (replica.primary or (
            replica.lag is not None and replica.lag > self.max_replica_lag))

    async def _try(self, replica: _Replica, *, probe: bool = False) -> Any:
        now = time.monotonic()
        if self._known_skipped(replica, now) and not (probe and replica.down_until > now):
            return None
        fresh = now - replica.checked < CHECK_EVERY
        timeout = self.manager.pool_timeout
        attempt = _AcquireAttempt()  # did the pool have to connect? (see _backends)
        token = _acquire_attempt.set(attempt)
        try:
            if replica.pool is None:
                replica.pool = await asyncpg.create_pool(**self._pool_options(replica))
            proxy = await replica.pool.acquire(timeout=timeout)
        except asyncpg.TargetServerAttributeNotMatched:
            # The URL's own target_session_attrs (standby, read-only) refused every host it
            # names: a node promoted under it, as an in_hot_standby "off" would say.
            replica.primary, replica.checked = True, time.monotonic()
            logger.info("skipping %r: no host of it is a standby now", replica)
            return None
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            if isinstance(exc, TimeoutError) and not attempt.connecting:
                # Every connection of its pool stayed busy: overloaded, not down.
                logger.info("%r had no free connection within pool_timeout=%g s",
                            replica, timeout)
                return None
            replica.down_until = time.monotonic() + DOWN_FOR
            logger.info("skipping %r for %g s: %r", replica, DOWN_FOR, exc)
            return None
        finally:
            _acquire_attempt.reset(token)
        if reports_primary(proxy._con):
            # The server said so on this very connection (after its last statement): no
            # round trip, and no stale measurement, sends a readonly session to a primary.
            replica.primary, replica.checked = True, time.monotonic()
        elif fresh:
            return proxy
        elif not await self._measure(replica, proxy):
            return None
        if replica.primary:
            # A failover or switchover promoted its node. Closed, not pooled: a pool over
            # several hosts (prefer-standby) then connects again, to a standby if one is up.
            await _give_back(replica.pool, proxy, broken=True)
            logger.info("skipping %r: it is a primary now", replica)
            return None
        if replica.lag is not None and replica.lag > self.max_replica_lag:
            await _give_back(replica.pool, proxy, broken=False)
            logger.info("skipping %r: it lags %.1f s (max_replica_lag=%g s)", replica,
                        replica.lag, self.max_replica_lag)
            return None
        return proxy

    async def _measure(self, replica: _Replica, proxy: Any) -> bool:
        """Whether ``replica``'s node is a primary, and its lag, asked on ``proxy``; False:
        that failed, the connection is closed and the replica skipped as down."""
        try:
            standby, lag = await proxy.fetchrow(_LAG_SQL, timeout=self.manager.pool_timeout)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            await _give_back(replica.pool, proxy, broken=True)
            replica.down_until = time.monotonic() + DOWN_FOR
            logger.info("skipping %r for %g s: %r", replica, DOWN_FOR, exc)
            return False
        except BaseException:  # cancelled while measuring: the connection must not leak
            await _give_back(replica.pool, proxy, broken=True)
            raise
        replica.primary, replica.lag = not standby, float(lag)
        replica.checked = time.monotonic()
        return True

    def _pool_options(self, replica: _Replica) -> dict[str, Any]:
        """asyncpg ``create_pool`` keywords: the replica's URL and PgBouncer mode, the
        primary's pool options."""
        manager = self.manager
        credentials: dict[str, Any] = replica.url.tortoise_connection(
            **manager.driver_options)["credentials"]
        options = manager._backend.pool_options()
        options.pop("statement_cache_size", None)  # the primary's PgBouncer mode
        credentials.update(options)
        if replica.pgbouncer:
            credentials["statement_cache_size"] = 0
        server_settings = dict(credentials.pop("server_settings", None) or {})
        name = credentials.pop("application_name", None)
        if name is not None:
            server_settings["application_name"] = name
        schema = credentials.pop("schema", None)
        if schema is not None:
            server_settings["search_path"] = schema
        credentials["min_size"] = credentials.pop("minsize")
        credentials["max_size"] = credentials.pop("maxsize")
        if server_settings:
            credentials["server_settings"] = server_settings
        return credentials

    def _check_loop(self) -> None:
        """Pools belong to the event loop that made them: a new loop gets new ones."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            if self._loop is not None:
                self._abandon()
            self._loop = loop

    def _abandon(self) -> None:
        self._stop_probe()
        for replica in self.replicas:
            pool, replica.pool = replica.pool, None
            if pool is not None:
                try:
                    pool.terminate()
                except RuntimeError:
                    logger.debug("the replica pool's event loop is closed")

    async def close(self) -> None:
        """Close every replica pool (a later readonly session opens them again)."""
        if self._loop is not None and self._loop is not asyncio.get_running_loop():
            self._abandon()
            return
        probe = self._stop_probe()
        if probe is not None:
            await asyncio.wait([probe])  # it gives back what it held; its outcome is moot
        for replica in self.replicas:
            pool, replica.pool = replica.pool, None
            replica.checked = replica.down_until = float("-inf")
            replica.primary = False
            if pool is not None:
                await pool.close()

    def _stop_probe(self) -> asyncio.Task[None] | None:
        probe, self._probe = self._probe, None
        if probe is None or probe.done():
            return None
        with contextlib.suppress(RuntimeError):  # its event loop is closed
            probe.cancel()
        return probe

    def stats(self) -> dict[str, Any]:
        """With replicas: ``replica_reads`` (readonly sessions served by a replica),
        ``replica_fallbacks`` (readonly sessions the primary served because no replica was
        usable) and ``read_your_writes_reads`` (those it served within the read-your-writes
        window). Without: nothing."""
        if not self.replicas:
            return {}
        return {"replica_reads": self.replica_reads, "replica_fallbacks": self.fallbacks,
                "read_your_writes_reads": self.after_write}


async def _give_back(pool: Any, proxy: Any, *, broken: bool) -> None:
    if broken:
        proxy._con.terminate()
    try:
        await pool.release(proxy)
    except Exception:
        logger.debug("could not return a replica connection", exc_info=True)


def _number(name: str, value: float | None, default: float, *, positive: bool) -> float:
    if value is None:
        value = default
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (
        value > 0 if positive else value >= 0)
    if not ok:
        bound = "> 0" if positive else ">= 0"
        raise ConfigurationError(f"{name} must be a number of seconds {bound}, got {value!r}",
                                 details={"field": name})
    return float(value)

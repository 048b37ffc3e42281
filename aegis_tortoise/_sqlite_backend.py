"""The sqlite backend of sessions: one aiosqlite connection, taken in turns.

:class:`SqliteBackend` hands a manager's single aiosqlite connection to one session at a
time (bounded by ``pool_timeout``) and binds :class:`_SqliteSessionClient`, Tortoise's sqlite
transaction client, to it. The PostgreSQL backend and the ``Backend`` union are in
:mod:`aegis_tortoise._backends`, which re-exports both names.
"""

from __future__ import annotations

import asyncio
import sqlite3
from typing import TYPE_CHECKING, Any

from tortoise.backends.base.client import ConnectionWrapper, TransactionContext
from tortoise.backends.sqlite.client import SqliteClient, SqliteTransactionWrapper

from aegis_tortoise._lazy_reads import LazyReads
from aegis_tortoise._observe import instrument_sqlite
from aegis_tortoise._operations import BeginningConnectionWrapper, NestedContext
from aegis_tortoise.errors import (
    LockNotAvailableError,
    PoolTimeoutError,
    TransactionConflictError,
    translate_errors,
)
from aegis_tortoise.session import Result, Session, is_dml

if TYPE_CHECKING:
    from aegis_tortoise.manager import DatabaseManager

__all__ = ["SqliteBackend"]


class _SqliteSessionClient(LazyReads, SqliteTransactionWrapper):
    """Tortoise's sqlite transaction client, bound to a session."""

    def __init__(self, parent: SqliteClient, session: Session, log: Any) -> None:
        super().__init__(parent)
        self._aegis_session = session
        self.log = log

    def acquire_connection(self) -> ConnectionWrapper[Any]:
        return BeginningConnectionWrapper(self._lock, self)

    def _in_transaction(self) -> TransactionContext:
        return NestedContext(SqliteTransactionWrapper(self), self._aegis_session)

    async def begin(self) -> None:
        session = self._aegis_session
        if not session._lock_at_begin:
            await super().begin()
            return
        # for_update / advisory_lock: take the database's write lock at once, so no other
        # connection writes between this transaction's reads and its writes. As Tortoise
        # 1.1.9's begin(), with IMMEDIATE. "nowait" (for_update="nowait",
        # advisory_lock(wait=False)) turns sqlite's busy wait off for this BEGIN, as
        # PostgreSQL's NOWAIT; the connection's busy timeout is put back after it.
        nowait = session._lock_at_begin == "nowait"
        session._lock_at_begin = False
        connection = self._connection
        await connection.commit()
        async with connection.execute("PRAGMA busy_timeout") as cursor:
            row = await cursor.fetchone()
        timeout = int(row[0]) if row else 0
        if nowait:
            await connection.execute("PRAGMA busy_timeout = 0")
        try:
            await connection.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            name = str(getattr(exc, "sqlite_errorname", ""))
            if not name.startswith("SQLITE_BUSY"):
                raise
            details = {"sqlite_errorname": name, "busy_timeout_ms": 0 if nowait else timeout}
            if nowait:
                raise LockNotAvailableError(
                    "Could not take the sqlite database's write lock: another connection "
                    f"holds it ({exc})", details=details, cause=exc) from exc
            raise TransactionConflictError(
                "Could not take the sqlite database's write lock (for_update / advisory_lock) "
                f"within the busy timeout ({timeout / 1000:g} s): another connection holds "
                f"it; retry the unit of work ({exc})", details=details, cause=exc) from exc
        finally:
            if nowait:
                await connection.execute(f"PRAGMA busy_timeout = {timeout}")

    async def commit(self) -> None:
        try:
            await super().commit()
        except BaseException:
            # sqlite keeps the transaction open when COMMIT fails (a deferred foreign key);
            # PostgreSQL ends it. End it here too, so a failed commit means "rolled back" on
            # both and the next statement starts afresh.
            if self._connection.in_transaction:
                await asyncio.shield(self._connection.rollback())
            raise


class SqliteBackend:
    """One aiosqlite connection per manager; sessions take turns, bounded by pool_timeout."""

    dialect = "sqlite"

    def __init__(self, manager: DatabaseManager) -> None:
        self.manager = manager

    def pool_options(self) -> dict[str, Any]:
        return {}

    async def acquire(self, session: Session, client: Any) -> None:
        timeout = self.manager.pool_timeout
        lock: asyncio.Lock = client._lock
        try:
            if lock.locked() or getattr(lock, "_waiters", None):
                async with asyncio.timeout(timeout):
                    await lock.acquire()
            else:
                # Free and nobody queued (a woken waiter that has not run yet still holds its
                # place in asyncio.Lock._waiters, CPython 3.11-3.13): acquire() takes it
                # without suspending, so no timer is needed (arming and cancelling
                # asyncio.timeout cost ~10 us, a twentieth of a sqlite insert).
                await lock.acquire()
        except TimeoutError as exc:
            raise PoolTimeoutError(
                f"The sqlite connection did not become free within pool_timeout={timeout} s; "
                "sqlite has one connection, so sessions run one at a time",
                details={"timeout": timeout},
            ) from exc
        try:
            with translate_errors(connecting=True):
                if client._connection is None:
                    if client.filename != ":memory:":
                        await asyncio.to_thread(_probe_sqlite_file, client.filename)
                    await client.create_connection(with_db=True)
                    instrument_sqlite(self.manager, client._connection)  # statement timings
            if getattr(session, "readonly", False):
                # db.session(readonly=True): sqlite has no replica; writes fail as there.
                await client._connection.execute("PRAGMA query_only = ON")
        except BaseException:
            client._lock.release()
            raise
        session._conn = client._connection
        session._client = _SqliteSessionClient(client, session, self.manager._sql_log)

    async def release(self, session: Session, client: Any) -> None:
        conn = session._conn
        if conn is None:
            return
        session._conn = None
        try:
            if conn.in_transaction:
                # The rollback failed or was interrupted (a second cancellation). Tortoise
                # 1.1.9's sqlite begin() COMMITs whatever is open, so the next session would
                # commit this one's writes: roll back before anyone else gets the connection.
                # aiosqlite runs calls in order, so even if this await is cancelled the
                # rollback runs before any later statement.
                await asyncio.shield(conn.rollback())
        finally:
            try:
                if getattr(session, "readonly", False):
                    await asyncio.shield(conn.execute("PRAGMA query_only = OFF"))
            finally:
                client._lock.release()

    def discard(self, session: Session) -> None:
        """Nothing to close: sqlite's one connection is kept, and release() rolls it back."""

    def move_to_loop(self, client: Any) -> bool:
        """aiosqlite's thread serves any loop: keep the connection, renew the lock.

        Returns True: the manager stays initialised.
        """
        client._lock = asyncio.Lock()
        return True

    async def close(self, client: Any, *, same_loop: bool) -> None:
        """Close the connection (aiosqlite can do that from any event loop)."""
        await client.close()

    def is_broken(self, session: Session) -> bool:
        return session._conn is None

    async def commit(self, session: Session) -> None:
        """COMMIT (sqlite has no aborted-transaction state to check for)."""
        await session._client.commit()

    async def run_raw(self, conn: Any, sql: str, values: list[Any]) -> Result:
        cursor = await conn.execute(sql, values)
        try:
            rows = await cursor.fetchall()
            description = cursor.description
            # The rows the statement itself changed, as PostgreSQL counts them: not those of
            # triggers or ON DELETE CASCADE (which total_changes would add).
            rowcount = cursor.rowcount
        finally:
            await cursor.close()
        if rowcount < 0:
            if description is not None:
                rowcount = len(rows)  # a query, or DML whose RETURNING gives a row per change
            elif is_dml(sql):
                # Python 3.11's sqlite3 reports -1 for DML that starts with WITH.
                rowcount = (await conn.execute_fetchall("SELECT changes()"))[0][0]
            else:
                rowcount = 0  # DDL, PRAGMA: as PostgreSQL's status for them
        keys = [col[0] for col in description] if description else []
        return Result(keys, [tuple(row) for row in rows], rowcount)


def _probe_sqlite_file(path: str) -> None:
    """Open and close the file with sqlite3, so an unopenable path fails here.

    When aiosqlite 0.22 fails to open a file, it stops its worker thread without waiting
    for it; the thread later completes a future on the event loop, and raises in the thread
    if the loop is closed by then (at the end of a test, or of ``asyncio.run``).
    """
    sqlite3.connect(path).close()

"""Rollback isolation for tests: a manager whose every session is a savepoint of one outer
transaction on one connection, rolled back when the test ends (Django TestCase style).

While a manager is pinned (:func:`pin`), its sessions do not take pooled connections: each
is a savepoint on the pinned connection, so a session opened while another is open (the
test's ``db_session`` and the app's request sessions) sees what the other wrote, and
nothing is ever committed. Plain Tortoise calls outside any session run on the same
connection, each in a savepoint of its own, which is what autocommit means inside a
transaction: a failed statement undoes only itself. After the rollback, PostgreSQL
sequences are set back to 1 (``nextval`` is never rolled back), so ids start at 1 in every
test. On PostgreSQL the connection is one for the whole run (:mod:`_loop_bridge`).

Savepoints nest by time. Sessions that overlap without nesting (two requests gathered
at once) are released in whatever order they end: a release that is not the innermost
waits for the inner ones; a rollback of an outer savepoint undoes the inner ones too,
which then raise :class:`TransactionError` instead of claiming a commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from tortoise.backends.base.client import ConnectionWrapper

from aegis_tortoise._backends import Backend, _PgSessionClient, _SqliteSessionClient
from aegis_tortoise._loop_bridge import discard, shared_connection
from aegis_tortoise.errors import TransactionError, translate_errors
from aegis_tortoise.session import Session, _SessionState

if TYPE_CHECKING:
    from aegis_tortoise.manager import DatabaseManager

__all__ = ["pin"]

logger = logging.getLogger("aegis_tortoise.testing")
_names = itertools.count(1)
# Sequences of each database's tables, looked up once per process: (url, tables) -> names.
_sequences: dict[tuple[str, tuple[str, ...]], list[str]] = {}


class _TaskLock:
    """``asyncio.Lock`` that the task holding it may take again.

    Every statement on the pinned connection takes it; a session's commit or rollback at
    the end of its block takes it too, from the same task that may already hold it (its
    ``Session.commit()`` does), so that overlapping sessions never send two statements at
    once on the one connection.
    """

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._owner: asyncio.Task[Any] | None = None
        self._depth = 0

    async def acquire(self) -> bool:
        task = asyncio.current_task()
        if task is not None and self._owner is task:
            self._depth += 1
            return True
        await self._lock.acquire()
        self._owner, self._depth = task, 1
        return True

    def release(self) -> None:
        self._depth -= 1
        if self._depth == 0:
            self._owner = None
            self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self.release()


class _Savepoint:
    __slots__ = ("done", "lost", "name")

    def __init__(self) -> None:
        self.name = f"aegis_pin_{next(_names)}"
        self.done = False
        self.lost = False


class _Pin:
    """The pinned connection: one statement at a time, savepoints kept as a stack."""

    def __init__(self, manager: DatabaseManager, raw: Any) -> None:
        self.manager = manager
        self.raw = raw
        self.lock = _TaskLock()
        self.stack: list[_Savepoint] = []

    async def run(self, *statements: str) -> None:
        if self.manager.dialect == "postgres":
            await self.raw.execute("; ".join(statements))  # one round trip
        else:
            for sql in statements:
                await self.raw.execute(sql)

    async def open(self) -> _Savepoint:
        savepoint = _Savepoint()
        await self.run(f"SAVEPOINT {savepoint.name}")
        self.stack.append(savepoint)
        return savepoint

    async def release(self, savepoint: _Savepoint) -> None:
        if savepoint.lost:
            raise TransactionError(
                "This session's work was undone by an overlapping session that rolled back "
                "(rollback isolation keeps every session of a test on one connection). Run "
                "such a test with @pytest.mark.aegis_commit")
        savepoint.done = True
        while self.stack and self.stack[-1].done:
            await self.run(f"RELEASE SAVEPOINT {self.stack.pop().name}")

    async def rollback(self, savepoint: _Savepoint) -> None:
        if savepoint.lost or savepoint not in self.stack:
            return
        await self.run(f"ROLLBACK TO SAVEPOINT {savepoint.name}",
                       f"RELEASE SAVEPOINT {savepoint.name}")
        while self.stack:
            top = self.stack.pop()
            if top is savepoint:
                break
            top.lost = True


class _PinnedTransactions:
    """begin/commit/rollback of a session client as a savepoint of the pin (mixed in first).

    The caller holds the pin's lock (the session's statement wrapper or its commit), so
    these run on the connection directly.
    """

    _pin: _Pin
    _savepoint: Any

    async def begin(self) -> None:
        with translate_errors():
            self._savepoint = await self._pin.open()

    async def commit(self) -> None:
        savepoint, self._savepoint = self._savepoint, None
        if savepoint is not None:
            with translate_errors():
                async with self._pin.lock:
                    await self._pin.release(savepoint)

    async def rollback(self) -> None:
        savepoint, self._savepoint = self._savepoint, None
        if savepoint is not None:
            with translate_errors():
                async with self._pin.lock:
                    await self._pin.rollback(savepoint)


class _PinnedPgClient(_PinnedTransactions, _PgSessionClient):
    pass


class _PinnedSqliteClient(_PinnedTransactions, _SqliteSessionClient):
    pass


class _AutocommitConnection(ConnectionWrapper[Any]):
    """One plain statement in a savepoint of its own: autocommit inside the pin."""

    __slots__ = ("_savepoint",)

    async def __aenter__(self) -> Any:
        await self._lock.acquire()
        try:
            self._savepoint = await self.client._pin.open()  # type: ignore[attr-defined]
        except BaseException:
            self._lock.release()
            raise
        return self.connection

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        pin: _Pin = self.client._pin  # type: ignore[attr-defined]
        try:
            if exc_type is None:
                await pin.release(self._savepoint)
            else:
                await pin.rollback(self._savepoint)
        finally:
            self._lock.release()


class _HoldingPin:
    """A transaction context that holds the pin's lock from enter to exit."""

    def __init__(self, inner: Any, lock: _TaskLock) -> None:
        self.inner = inner
        self.lock = lock

    async def __aenter__(self) -> Any:
        await self.lock.acquire()
        try:
            return await self.inner.__aenter__()
        except BaseException:
            self.lock.release()
            raise

    async def __aexit__(self, *exc: Any) -> Any:
        try:
            return await self.inner.__aexit__(*exc)
        finally:
            self.lock.release()


def _plain(base: type[Any]) -> type[Any]:
    """The client plain Tortoise calls outside sessions get while pinned."""

    class Plain(base):  # type: ignore[misc]
        def acquire_connection(self) -> ConnectionWrapper[Any]:
            return _AutocommitConnection(self._lock, self)

        def _in_transaction(self) -> Any:
            # in_transaction() outside sessions: a savepoint block that holds the pin for
            # its duration, so other tasks' plain calls wait instead of interleaving.
            return _HoldingPin(super()._in_transaction(), self._pin.lock)

    Plain.__name__ = f"Plain{base.__name__}"
    return Plain


_PlainPgClient = _plain(_PinnedPgClient)
_PlainSqliteClient = _plain(_PinnedSqliteClient)


class PinnedBackend:
    """Stands in for the manager's backend while pinned: sessions share the pin."""

    pinned = True

    def __init__(self, manager: DatabaseManager, real: Backend, pin: _Pin) -> None:
        self.manager = manager
        self.real = real
        self.pin = pin
        self.dialect = real.dialect

    def client_for(self, session: Session, client: Any, cls: type[Any] | None = None) -> Any:
        """A session client of the pin (``cls`` defaults to the dialect's pinned client)."""
        pg = self.dialect == "postgres"
        made: Any = cls or (_PinnedPgClient if pg else _PinnedSqliteClient)
        log = self.manager._sql_log
        bound = made(client, self.pin.raw, session, log) if pg else made(client, session, log)
        bound._pin = self.pin
        bound._savepoint = None
        bound._lock = self.pin.lock
        return bound

    def pool_options(self) -> dict[str, Any]:
        return self.real.pool_options()

    async def acquire(self, session: Session, client: Any) -> None:
        session._conn = self.pin.raw
        session._client = self.client_for(session, client)

    async def release(self, session: Session, client: Any) -> None:
        bound = session._client
        session._conn = None
        if bound is not None and bound._savepoint is not None:
            async with self.pin.lock:
                await bound.rollback()

    async def commit(self, session: Session) -> None:
        """A session's commit under the pin: release its savepoint."""
        await session._client.commit()

    def discard(self, session: Session) -> None:
        """Nothing to close: the pinned connection outlives its sessions."""

    def is_broken(self, session: Session) -> bool:
        return self.real.is_broken(session)

    async def run_raw(self, conn: Any, sql: str, values: list[Any]) -> Any:
        return await self.real.run_raw(conn, sql, values)

    def move_to_loop(self, client: Any) -> bool:
        raise TransactionError("A pinned (rollback-isolated) manager cannot change event loops")

    async def close(self, client: Any, *, same_loop: bool) -> None:
        await self.real.close(client, same_loop=same_loop)


async def _sequences_of(manager: DatabaseManager, raw: Any, tables: list[str]) -> list[str]:
    key = (str(manager.url), tuple(tables))
    names = _sequences.get(key)
    if names is None:
        rows = await raw.fetch(
            "SELECT DISTINCT d.objid::regclass::text AS name FROM pg_depend d "
            "JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' "
            "WHERE d.refobjid = ANY($1::regclass[])", tables)
        names = _sequences[key] = [row["name"] for row in rows]
    return names


async def _connect(manager: DatabaseManager) -> tuple[Any, Any]:
    """The connection to pin, and the lease to give back (sqlite's one connection)."""
    client = manager._client()
    if manager.dialect == "postgres":
        # One connection for the whole run, whatever loop each test has (_loop_bridge).
        return await shared_connection(client), None
    session = Session(manager)
    await manager._backend.acquire(session, client)  # takes the one connection's lock
    return session._conn, session


@asynccontextmanager
async def pin(manager: DatabaseManager,
              tables: Callable[[DatabaseManager], list[str]]) -> AsyncIterator[None]:
    """Pin ``manager`` to one connection and one outer transaction, rolled back at the end.

    Args:
        manager: A manager with no open session.
        tables: Gives the quoted tables whose sequences restart at 1 (PostgreSQL), once
            the manager is initialised.
    """
    await manager.init()
    real = manager._backend
    raw, lease = await _connect(manager)
    ctx = manager._ctx
    assert ctx is not None  # noqa: S101 - init() sets it
    outer: Any = None
    sequences: list[str] = []
    try:
        if manager.dialect == "postgres":
            sequences = await _sequences_of(manager, raw, tables(manager))
            if _reset_pending:
                await _reset_sequences(raw, sequences)  # an earlier test's end failed
            outer = raw.transaction()  # asyncpg's: nested asyncpg transactions are savepoints
            await outer.start()
        else:
            await raw.execute("BEGIN")
        the_pin = _Pin(manager, raw)
        backend = PinnedBackend(manager, real, the_pin)
        # Plain calls outside sessions find the root client in the connection handler's
        # shared default storage (Tortoise 1.1.9: ConnectionHandler._storage_var's default
        # dict, which a context that never called connections.set() sees).
        storage = contextvars.Context().run(ctx.connections._storage_var.get)
        root = storage.get(manager.alias)
        stand_in = Session(manager)
        stand_in._state = _SessionState.OPEN
        stand_in._began = True
        plain_cls = _PlainPgClient if manager.dialect == "postgres" else _PlainSqliteClient
        storage[manager.alias] = backend.client_for(stand_in, manager._client(), plain_cls)
        manager._backend = backend  # type: ignore[assignment]
        try:
            yield
        finally:
            manager._backend = real
            if root is not None:
                storage[manager.alias] = root
            async with the_pin.lock:
                await _end(raw, outer, sequences)
    except BaseException:
        if outer is not None and manager.dialect == "postgres" and raw._target._top_xact:
            with contextlib.suppress(Exception):
                await _end(raw, outer, sequences)
        raise
    finally:
        if lease is not None:
            await real.release(lease, manager._client())


_reset_pending = False


async def _reset_sequences(raw: Any, sequences: list[str]) -> None:
    """Sequences back at 1: ``nextval`` is never rolled back, and the tables are empty."""
    global _reset_pending
    if sequences:
        await raw.execute("SELECT " + ", ".join(
            f"setval('{name}', 1, false)" for name in sequences))
    _reset_pending = False


async def _end(raw: Any, outer: Any, sequences: list[str]) -> None:
    """Roll the test back; on PostgreSQL, put the sequences back at 1."""
    global _reset_pending
    if outer is None:
        await raw.execute("ROLLBACK")
        return
    try:
        await outer.rollback()
        await _reset_sequences(raw, sequences)
    except BaseException:
        # The connection is lost or in an unknown state (a cancelled statement): the next
        # test opens a new one, and puts the sequences back first.
        _reset_pending = True
        await discard(raw)
        raise

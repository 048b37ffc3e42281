"""One operation at a time on a session, and "pending rollback" after a failed statement.

Two pieces of the session's Tortoise client (:mod:`aegis_tortoise._backends` builds them):

- :class:`BeginningConnectionWrapper` wraps every statement: it begins the session's
  transaction lazily, makes a statement from outside the running operation wait for it,
  refuses statements once the transaction needs a rollback, and notes a statement the
  server rejected;
- :class:`NestedContext` is a savepoint block, itself one operation of the session.

An operation is a repository call, ``session.execute``, ``commit``/``rollback`` or a
savepoint block (:meth:`Session._enter_op`). Operations of one session run one after the
other, so a statement of one call never lands inside another call's savepoint (API.md: two
calls at once on one session are serialised, never half of one).
"""

from __future__ import annotations

import sqlite3
from contextlib import nullcontext
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any

import asyncpg
from tortoise.backends.base.client import (
    ConnectionWrapper,
    NestedTransactionContext,
    TransactionalDBClient,
)

from aegis_tortoise._statements import plain_read
from aegis_tortoise.errors import (
    PendingRollback,
    TransactionError,
    driver_error,
    note_session_error,
    translate_exception,
)

if TYPE_CHECKING:
    from aegis_tortoise.session import Session

__all__ = ["BeginningConnectionWrapper", "NestedContext", "operation", "rejected_by_server"]

#: The operation (a repository call, execute, a savepoint block...) the current context runs
#: in; tasks it starts inherit it (create_many's INSERT task).
operation: ContextVar[object | None] = ContextVar("aegis_operation", default=None)


class BeginningConnectionWrapper(ConnectionWrapper[Any]):
    """Tortoise's per-client lock, plus: begin the session's transaction before the first
    statement (so a session that runs nothing costs no BEGIN/COMMIT); wait while another
    task's operation runs on the session; refuse statements once the transaction has failed;
    note a statement the server rejected."""

    __slots__ = ("_turn",)

    async def __aenter__(self) -> Any:
        session: Session = self.client._aegis_session  # type: ignore[attr-defined]
        # A client kept past its session (session.connection, a queryset's using_db)
        # would otherwise run on a connection that now belongs to someone else.
        session._check_open()
        # A statement outside the running operation (a plain Tortoise call in another task)
        # waits for it to end and holds the turn meanwhile, so it never lands in the middle
        # of the operation's savepoint.
        self._turn = session._op is None or operation.get() is not session._op
        if self._turn:
            await session._op_lock.acquire()
            if not session.is_active:  # the block ended while this statement waited
                session._op_lock.release()
                session._check_open()
        try:
            await self._lock.acquire()
        except BaseException:
            if self._turn:
                session._op_lock.release()
            raise
        try:
            if session._failed is not None:
                raise PendingRollback(session._pending_error())  # noqa: TRY301 - released first
            if not session._began and not plain_read.get():
                await session._begin_now()
                # A readonly session's BEGIN may have moved it to another connection.
                self.connection = self.client._connection
        except BaseException:
            self._release()
            raise
        return self.connection

    async def __aexit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        if exc_val is not None:
            session: Session = self.client._aegis_session  # type: ignore[attr-defined]
            # A 25006 is the caller's mistake in a readonly session, else a server that
            # turned read-only (retryable): the error carries which, wherever it is judged.
            note_session_error(exc_val, readonly=getattr(session, "readonly", False))
            if session._began and not plain_read.get():
                session._statement_failed(exc_val)
        self._release()

    def _release(self) -> None:
        self._lock.release()
        if self._turn:
            self.client._aegis_session._op_lock.release()  # type: ignore[attr-defined]


def rejected_by_server(exc: BaseException) -> bool:
    """Whether ``exc`` means the database ran the statement and failed it (PostgreSQL then
    aborts the transaction), not a value the driver could not send."""
    root = driver_error(exc)
    if isinstance(root, asyncpg.PostgresError):
        # asyncpg raises DataError (22000) itself for an argument it cannot encode, before
        # anything is sent: only the server's errors carry a severity.
        return getattr(root, "severity", None) is not None
    return isinstance(root, sqlite3.Error) and not isinstance(
        root, (sqlite3.ProgrammingError, sqlite3.InterfaceError))


class NestedContext(NestedTransactionContext):
    """A savepoint; the session's transaction is begun first (it may still be pending).

    The block is one operation of the session (another task's calls wait for its end). A
    statement that failed inside it and was caught there leaves the block needing a
    rollback: the block's end rolls back to the savepoint and raises TransactionError, on
    both backends (PostgreSQL could not release it anyway).
    """

    __slots__ = ("failure", "ours", "session", "token")

    def __init__(self, client: TransactionalDBClient, session: Session) -> None:
        super().__init__(client)
        self.session = session
        self.failure: BaseException | None = None
        self.token: Token[object | None] | None = None
        # Opened by the library (Session.savepoint) rather than by Tortoise's
        # in_transaction(): its refusals are this library's TransactionError, not Tortoise's.
        self.ours = False

    async def __aenter__(self) -> TransactionalDBClient:
        session = self.session
        session._check_open()
        self.token = await session._enter_op()
        try:
            if session._failed is not None:
                raise self._refusal(session._pending_error())  # noqa: TRY301 - op ends first
            # Under the session client's lock, as the end below: a task that shares the
            # running operation (iterate's finalizer) may have a statement in flight.
            async with session._lock if session._lock is not None else nullcontext():
                if not session._began:
                    await session._begin_now()
                    # A readonly session's BEGIN may have moved it to another connection.
                    self.client._connection = session._client._connection
                client = await super().__aenter__()
        except BaseException:
            session._exit_op(self.token)
            raise
        session._savepoints.append(self)
        return client

    async def __aexit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        session = self.session
        failure = self.failure
        caught = exc_type is None and failure is not None
        try:
            # Tortoise rolls back to the savepoint for any exception type but its own
            # TransactionManagementError. Under the session client's lock: a task that shares
            # this operation (a generator's finalizer closing its cursor, a task the block
            # started) may have a statement in flight, and asyncpg refuses a second one.
            # (No lock: a session of the test plugin's pin, whose statements take the pin's.)
            async with session._lock if session._lock is not None else nullcontext():
                await super().__aexit__(TransactionError if caught else exc_type, exc_val,
                                        exc_tb)
        except BaseException as exc:
            # The savepoint could be neither released nor rolled back: the enclosing level
            # needs the rollback now.
            self._pop()
            session._statement_failed(failure or exc)
            # A raw driver error (the connection lost or terminated: a cancelled block end,
            # session._abandon_operation) leaves our API translated.
            if isinstance(exc, (asyncpg.InterfaceError, asyncpg.PostgresError, sqlite3.Error)):
                raise translate_exception(exc) from exc
            raise
        finally:
            self._pop()
            session._exit_op(self.token)
        if caught:
            raise self._refusal(session._pending_error(failure, savepoint=True))

    def _refusal(self, error: TransactionError) -> Exception:
        return error if self.ours else PendingRollback(error)

    def _pop(self) -> None:
        stack = self.session._savepoints
        if stack and stack[-1] is self:
            stack.pop()

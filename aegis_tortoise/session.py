"""Session: raw SQL with ``:name`` parameters, commit/rollback, a bound client.

A :class:`Session` is one connection and one transaction of a :class:`DatabaseManager`
(``async with db.session() as session``). While it is open, plain Tortoise calls
(``User.create(...)``) and the repositories run in its transaction: the session binds a
Tortoise transaction client to the manager's connection alias for the current task.
The result objects (``Result``, ``Row``, ...) live in :mod:`aegis_tortoise._results` and are
re-exported here.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import re
from collections.abc import Mapping, Sequence
from contextvars import Token
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from tortoise.backends.base.client import (
    BaseDBAsyncClient,
    TransactionContext,
)

from aegis_tortoise._isolation import isolation_level, settable_level
from aegis_tortoise._locks import take_advisory_lock
from aegis_tortoise._operations import NestedContext, operation, rejected_by_server
from aegis_tortoise._results import MappingResult, Result, Row, ScalarResult
from aegis_tortoise._statements import block_comment_end, is_plain_read, is_stateless
from aegis_tortoise.errors import (
    TransactionError,
    ValidationError,
    driver_error,
    translate_errors,
    translate_exception,
)

if TYPE_CHECKING:
    from aegis_tortoise.manager import DatabaseManager

__all__ = ["MappingResult", "Result", "Row", "ScalarResult", "Session", "compile_params"]

logger = logging.getLogger("aegis_tortoise.session")

# --- :name parameters ---------------------------------------------------------------------

_TOKENS = r"""
      '(?:[^']|'')*'                                   # string literal
    | "(?:[^"]|"")*"                                   # quoted identifier
    | --[^\n]*                                         # line comment
    | /\*.*?\*/                                        # block comment
    | \$(?P<tag>(?:[A-Za-z_]\w*)?)\$.*?\$(?P=tag)\$    # dollar-quoted string ($$ or $tag$)
    | ::                                               # PostgreSQL cast
    | :(?P<name>[A-Za-z_]\w*)                          # a :name parameter
"""
# Each dialect's own quoting, tried first. PostgreSQL: E'...' takes backslash escapes (E'\'').
# sqlite: [a:b] and `a:b` are quoted identifiers; on PostgreSQL [ ] are array subscripts
# (arr[:n] holds a parameter), so those are sqlite's only.
_DIALECT_TOKENS = {
    "postgres": r"(?<![\w$])[Ee]'(?:[^'\\]|\\.|'')*' |",
    "sqlite": r"\[[^\]]*\] | `(?:[^`]|``)*` |",
}
_TOKEN_RE = {dialect: re.compile(extra + _TOKENS, re.VERBOSE | re.DOTALL)
             for dialect, extra in _DIALECT_TOKENS.items()}


@lru_cache(maxsize=512)
def _compile(sql: str, dialect: str) -> tuple[str, tuple[str, ...]]:
    """Rewrite ``:name`` to ``$n`` (PostgreSQL) or ``?`` (sqlite); return the names in order."""
    order: list[str] = []
    numbers: dict[str, int] = {}

    def replace(match: re.Match[str]) -> str:
        name = match.group("name")
        if name is None:
            return match.group(0)
        if dialect == "postgres":
            if name not in numbers:
                numbers[name] = len(numbers) + 1
                order.append(name)
            return f"${numbers[name]}"
        order.append(name)
        return "?"

    if dialect != "postgres" or "/*" not in sql:
        return _TOKEN_RE[dialect].sub(replace, sql), tuple(order)
    # PostgreSQL nests block comments (/* a /* b */ :a */ is one comment): the regex cannot
    # count, so each comment's end is found by block_comment_end.
    pattern, out, pos = _TOKEN_RE[dialect], [], 0
    while (match := pattern.search(sql, pos)) is not None:
        out.append(sql[pos:match.start()])
        if match.group(0).startswith("/*"):
            pos = block_comment_end(sql, match.start())
            out.append(sql[match.start():pos])
        else:
            out.append(replace(match))
            pos = match.end()
    out.append(sql[pos:])
    return "".join(out), tuple(order)


def compile_params(
    sql: str, params: Mapping[str, Any] | Sequence[Any] | None, dialect: str
) -> tuple[str, list[Any]]:
    """Translate ``:name`` parameters into the driver's placeholders.

    Args:
        sql: The statement, with ``:name`` placeholders (``::type`` casts are left alone).
        params: A mapping of names to values; a sequence is passed through positionally
            (the statement then uses the driver's own placeholders).
        dialect: ``"postgres"`` or ``"sqlite"``.

    Raises:
        ValidationError: a ``:name`` in the statement has no value in ``params``.
    """
    if params is None:
        return sql, []
    if not isinstance(params, Mapping):
        return sql, list(params)
    compiled, names = _compile(sql, dialect)
    missing = [name for name in dict.fromkeys(names) if name not in params]
    if missing:
        raise ValidationError(
            f"No value for SQL parameter(s) {', '.join(':' + m for m in missing)}; "
            f"given: {', '.join(sorted(params)) or 'none'}",
            details={"missing": missing},
        )
    return compiled, [params[name] for name in names]


def is_dml(sql: str) -> bool:
    """Whether a statement reports a DML row count (INSERT/UPDATE/DELETE/...)."""
    head = sql.lstrip().lstrip("(").lstrip()[:10].upper()
    return head.startswith(("INSERT", "UPDATE", "DELETE", "REPLACE", "WITH", "MERGE"))


# --- transaction clients bound to a session ---------------------------------------------------


class _SessionState(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSED = "closed"


class Session:
    """One connection and one transaction of a :class:`DatabaseManager`.

    Use it as ``async with db.session() as session``: the transaction commits when the block
    ends normally and rolls back on any exception (cancellation included); the connection
    always goes back to the pool.
    """

    __slots__ = (
        "_began", "_client", "_conn", "_ctx", "_ctx_token", "_dirty", "_failed", "_failed_as",
        "_isolation", "_lease", "_lock", "_lock_at_begin", "_manager", "_op", "_op_lock",
        "_savepoints", "_state", "_storage_token", "_task_token", "_wrote",
    )

    def __init__(self, manager: DatabaseManager, isolation: str | None = None) -> None:
        self._manager = manager
        self._state = _SessionState.NEW
        self._began = False
        # The isolation level of the session's transactions (None: the server's default),
        # and whether the next BEGIN takes sqlite's write lock at once (BEGIN IMMEDIATE).
        self._isolation = isolation_level(isolation)
        self._lock_at_begin: bool | str = False  # True, or "nowait": no busy wait
        # Something ran that may leave state on the connection (SET, LISTEN, advisory
        # locks...): it gets asyncpg's full reset when handed back (see _statements.py).
        self._dirty = False
        # The current transaction sent a statement that may write (anything but a plain
        # read, see _statements.py): its commit opens the read-your-writes window.
        self._wrote = False
        self._client: Any = None
        self._conn: Any = None
        self._lease: Any = None
        self._ctx: Any = None
        self._ctx_token: Any = None
        self._storage_token: Any = None
        self._task_token: Any = None
        self._lock: Any = None
        # A statement the server rejected outside any savepoint: the transaction can only be
        # rolled back ("pending rollback"); _failed_as is its translation, for messages.
        self._failed: BaseException | None = None
        self._failed_as: BaseException | None = None
        self._savepoints: list[NestedContext] = []
        # One operation at a time (see _enter_op); _op identifies the running one.
        self._op: object | None = None
        self._op_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return (f"<Session {self._state.value} of {self._manager.url.masked()!r}"
                f"{' in transaction' if self._began else ''}>")

    @property
    def manager(self) -> DatabaseManager:
        """The manager this session belongs to."""
        return self._manager

    @property
    def dialect(self) -> str:
        """``"postgres"`` or ``"sqlite"``."""
        return self._manager.dialect

    @property
    def isolation(self) -> str | None:
        """The isolation level of the session's transactions: ``"read committed"``,
        ``"repeatable read"``, ``"serializable"``, or None for the server's default (sqlite:
        every transaction is serializable, whatever is asked)."""
        return self._isolation

    def set_isolation(self, level: str | None) -> None:
        """Set the isolation level of the session's next transaction (and those after it).

        Raises:
            TransactionError: the transaction has begun (its first statement fixed its level).
            ConfigurationError: an unknown level.
        """
        self._check_open()
        self._isolation = settable_level(self, level)

    async def advisory_lock(self, key: int | str, *, wait: bool = True) -> bool:
        """Take a transaction-scoped advisory lock on ``key`` (until the transaction ends):
        ``pg_advisory_xact_lock``, or with ``wait=False`` ``pg_try_advisory_xact_lock``; a str
        key is hashed as :func:`aegis_tortoise._locks.advisory_key` says. sqlite: the
        database's write lock (``BEGIN IMMEDIATE``). Returns whether it was taken."""
        self._check_open()
        return await take_advisory_lock(self, key, wait=wait)

    @property
    def is_active(self) -> bool:
        """Whether the session is open (inside its ``async with`` block)."""
        return self._state is _SessionState.OPEN

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction has been begun and not yet committed or rolled back."""
        return self._began

    @property
    def connection(self) -> BaseDBAsyncClient:
        """The Tortoise client bound to this session (``Model.all().using_db(...)``)."""
        self._check_open()
        client: BaseDBAsyncClient = self._client
        return client

    def _check_open(self) -> None:
        if self._state is _SessionState.NEW:
            raise TransactionError(
                "The session is not open; use it as 'async with db.session() as session:'"
            )
        if self._state is _SessionState.CLOSED:
            raise TransactionError(
                "The session is already closed; open a new one with db.session()"
            )

    async def __aenter__(self) -> Session:
        if self._state is not _SessionState.NEW:
            raise TransactionError("A session can be entered only once; call db.session() "
                                   "again for a new one")
        await self._manager._open_session(self)
        self._state = _SessionState.OPEN
        return self

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        # The end of the block (commit or rollback, then the release of the connection) is
        # an operation too: it waits for another task's running call (API.md: calls on one
        # session are serialised), and calls made after it find the session closed.
        token, cancelled = await self._end_turn()
        try:
            if cancelled and exc is None:
                exc = asyncio.CancelledError()  # cancelled while waiting: roll back
            # The client's lock, as commit() takes it: a task that shares the running
            # operation may still have a statement in flight.
            async with self._lock if self._lock is not None else contextlib.nullcontext():
                await self._manager._close_session(self, exc)
        finally:
            self._exit_op(token)
        if cancelled:
            raise asyncio.CancelledError

    async def _end_turn(self) -> tuple[Token[object | None] | None, bool]:
        """The block end's turn (see _enter_op), and whether a cancellation arrived while it
        waited.

        A cancellation is held until the turn comes: the connection cannot be rolled back or
        handed back under another task's running statement (asyncpg would refuse, and the
        other task's statement would fail with a connection error that looks retryable).
        The caller then rolls back and raises it. The wait is bounded by that statement.
        """
        if self._op is not None and operation.get() is self._op:
            return None, False
        cancelled = False
        while True:
            try:
                await self._op_lock.acquire()
                break
            except asyncio.CancelledError:
                if not cancelled and await self._abandon_operation():
                    return None, True
                cancelled = True
        op = self._op = object()
        return operation.set(op), cancelled

    async def _abandon_operation(self) -> bool:
        """Cancelled while another task's operation holds the session: on PostgreSQL, end
        the wait instead of holding the cancellation until that operation ends, which may be
        never (a task of the block holding a savepoint open while it waits for the block's
        owner). The statement in flight, if any, finishes first; then the connection is
        terminated (the server rolls back), so nothing that operation sends later runs on a
        connection the pool hands to someone else: it fails with a connection error, and a
        call it starts later is refused (the session is closed). sqlite has one shared
        connection to terminate: there the wait goes on."""
        raw = self._conn
        if self._lock is None or raw is None or not hasattr(raw, "terminate"):
            return False
        async with self._lock:
            if not raw.is_closed():
                logger.warning("session block cancelled while another task's operation "
                               "holds the session: its connection is terminated")
                raw.terminate()
        return True

    # -- one operation at a time, pending rollback ------------------------------------------

    async def _enter_op(self) -> Token[object | None] | None:
        """Begin an operation (a repository call, execute, commit, a savepoint block): wait
        for another task's to end. None when the caller already runs inside this session's
        operation (a repository method calling another, create_many's INSERT task)."""
        if self._op is not None and operation.get() is self._op:
            return None
        await self._op_lock.acquire()
        if self._state is _SessionState.CLOSED:  # the block ended while this call waited
            self._op_lock.release()
            self._check_open()
        op = self._op = object()
        return operation.set(op)

    def _exit_op(self, token: Token[object | None] | None) -> None:
        if token is None:
            return
        try:
            operation.reset(token)
        except ValueError:  # ended in another context than it began (a generator's close)
            operation.set(None)
        self._op = None
        self._op_lock.release()

    def _statement_failed(self, exc: BaseException) -> None:
        """Note a failed statement: the innermost savepoint, else the whole transaction,
        can now only be rolled back."""
        if not rejected_by_server(exc):
            return
        if self._savepoints:
            level = self._savepoints[-1]
            level.failure = level.failure or exc
        elif self._failed is None:
            self._failed = exc

    def _failed_as_shown(self, original: BaseException, shown: BaseException) -> None:
        """The repository's translation of the failure (it names the model and field)."""
        if (self._failed is not None and self._failed_as is None
                and not isinstance(shown, TransactionError)  # the pending error itself
                and driver_error(self._failed) is driver_error(original)):
            self._failed_as = shown

    def _pending_error(self, failure: BaseException | None = None, *,
                       savepoint: bool = False, rolled_back: bool = False) -> TransactionError:
        """The error for a transaction (or savepoint block) that an earlier failed statement
        left needing a rollback."""
        earlier = failure or self._failed
        shown = self._failed_as if failure is None and self._failed_as is not None else (
            translate_exception(earlier) if earlier is not None else None)
        name = f"{type(shown).__name__}: {shown}"
        if savepoint:
            what = ("The savepoint block was rolled back: a statement inside it failed "
                    f"earlier ({name}) and the error was caught inside the block; let it leave "
                    "the block")
        elif rolled_back:
            what = (f"The transaction was rolled back, nothing of it is written: a statement "
                    f"failed earlier ({name}). Let such an error leave the session, or wrap "
                    "the statement in TransactionManager(session).transaction() (a "
                    "savepoint) to keep going after it")
        else:
            what = (f"The session's transaction is aborted and must be rolled back: a "
                    f"statement failed earlier ({name}). Call session.rollback(), or wrap "
                    "statements that may fail in TransactionManager(session).transaction() "
                    "(a savepoint)")
        return TransactionError(what, details={"earlier_error": type(shown).__name__},
                                cause=earlier)

    def _clear_failure(self) -> None:
        self._failed = self._failed_as = None
        self._savepoints.clear()

    # -- transaction control -----------------------------------------------------------------

    async def _begin_now(self) -> None:
        await self._client.begin()
        self._began = True

    def _end_transaction(self) -> None:
        """The transaction is over (committed, rolled back or lost); the next statement
        begins a new one."""
        self._began = False
        self._wrote = False

    async def commit(self) -> None:
        """Commit the current transaction; later statements run in a new one."""
        self._check_open()
        if not self._began:
            return
        token = await self._enter_op()
        try:
            async with self._lock:
                await self._manager._commit(self)
        finally:
            self._exit_op(token)

    async def rollback(self) -> None:
        """Roll back the current transaction; later statements run in a new one."""
        self._check_open()
        if not self._began:
            return
        token = await self._enter_op()
        try:
            async with self._lock:
                await self._manager._rollback(self)
        finally:
            self._exit_op(token)

    def savepoint(self) -> TransactionContext:
        """A savepoint context: ``async with session.savepoint(): ...``.

        Everything inside is undone if the block raises; the session stays usable.
        """
        self._check_open()
        context: TransactionContext = self._client._in_transaction()
        context.ours = True  # type: ignore[attr-defined]
        return context

    # -- raw SQL -------------------------------------------------------------------------------

    async def execute(
        self, statement: str, params: Mapping[str, Any] | Sequence[Any] | None = None
    ) -> Result:
        """Run one SQL statement in the session's transaction.

        Args:
            statement: SQL with ``:name`` placeholders, e.g.
                ``"SELECT * FROM users WHERE email = :email"``.
            params: ``{"email": ...}``; a list/tuple is passed positionally (then use the
                driver's own placeholders, ``$1`` or ``?``).

        Returns:
            A :class:`Result` (``fetchall()``, ``scalar()``, ``mappings()``, ``rowcount``...).
        """
        self._check_open()
        if not isinstance(statement, str):
            raise ValidationError(
                f"Session.execute() takes an SQL string, not {type(statement).__name__}; "
                "for ORM queries use the model (User.filter(...)) or a repository"
            )
        sql, values = compile_params(statement, params, self._manager.dialect)
        self._manager._echo_sql(sql, values)
        if not is_stateless(sql):
            self._dirty = True
        if not is_plain_read(sql):
            self._wrote = True
        token = await self._enter_op()
        try:
            with translate_errors():
                async with self._client.acquire_connection() as conn:
                    return await self._manager._backend.run_raw(conn, sql, values)
        finally:
            self._exit_op(token)

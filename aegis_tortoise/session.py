"""Session and Result: raw SQL with ``:name`` parameters, commit/rollback, a bound client.

A :class:`Session` is one connection and one transaction of a :class:`DatabaseManager`
(``async with db.session() as session``). While it is open, plain Tortoise calls
(``User.create(...)``) and the repositories run in its transaction: the session binds a
Tortoise transaction client to the manager's connection alias for the current task.
"""

from __future__ import annotations

import enum
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any, overload

from tortoise.backends.base.client import (
    BaseDBAsyncClient,
    ConnectionWrapper,
    NestedTransactionContext,
    TransactionalDBClient,
    TransactionContext,
)

from aegis_tortoise._statements import is_stateless, plain_read
from aegis_tortoise.errors import (
    MultipleResultsFoundError,
    NoResultFoundError,
    TransactionError,
    ValidationError,
    translate_errors,
)

if TYPE_CHECKING:
    from aegis_tortoise.manager import DatabaseManager

__all__ = ["MappingResult", "Result", "Row", "ScalarResult", "Session", "compile_params"]

logger = logging.getLogger("aegis_tortoise.session")

# --- :name parameters ---------------------------------------------------------------------

_TOKEN_RE = re.compile(
    r"""
      '(?:[^']|'')*'                                   # string literal
    | "(?:[^"]|"")*"                                   # quoted identifier
    | --[^\n]*                                         # line comment
    | /\*.*?\*/                                        # block comment
    | \$(?P<tag>(?:[A-Za-z_]\w*)?)\$.*?\$(?P=tag)\$    # dollar-quoted string ($$ or $tag$)
    | ::                                               # PostgreSQL cast
    | :(?P<name>[A-Za-z_]\w*)                          # a :name parameter
    """,
    re.VERBOSE | re.DOTALL,
)


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

    return _TOKEN_RE.sub(replace, sql), tuple(order)


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


# --- results --------------------------------------------------------------------------------


class Row(Sequence[Any]):
    """One result row: ``row[0]``, ``row.email``, ``row._mapping["email"]``, tuple equality."""

    __slots__ = ("_index", "_keys", "_values")

    def __init__(self, keys: tuple[str, ...], index: dict[str, int], values: tuple[Any, ...]):
        self._keys = keys
        self._index = index
        self._values = values

    @overload
    def __getitem__(self, item: int) -> Any: ...
    @overload
    def __getitem__(self, item: slice) -> tuple[Any, ...]: ...
    def __getitem__(self, item: int | slice) -> Any:
        return self._values[item]

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[self._index[name]]
        except KeyError:
            raise AttributeError(
                f"Row has no column {name!r}; columns: {', '.join(self._keys)}"
            ) from None

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Row):
            return self._values == other._values
        if isinstance(other, tuple):
            return self._values == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._values)

    @property
    def _mapping(self) -> dict[str, Any]:
        return dict(zip(self._keys, self._values, strict=True))

    def _asdict(self) -> dict[str, Any]:
        return self._mapping

    @property
    def _fields(self) -> tuple[str, ...]:
        return self._keys

    def __repr__(self) -> str:
        return repr(self._values)


class _Consumable:
    _rows: list[Any]
    _pos: int

    def _take_all(self) -> list[Any]:
        rows = self._rows[self._pos:]
        self._pos = len(self._rows)
        return rows

    def _one(self, *, allow_none: bool) -> Any:
        rows = self._take_all()
        if not rows:
            if allow_none:
                return None
            raise NoResultFoundError("No row was found when one was required")
        if len(rows) > 1:
            raise MultipleResultsFoundError(
                f"Multiple rows ({len(rows)}) were found when exactly one was required"
            )
        return rows[0]

    def all(self) -> list[Any]:
        """All remaining rows."""
        return self._take_all()

    def first(self) -> Any:
        """The first remaining row, or None; the rest are discarded."""
        rows = self._take_all()
        return rows[0] if rows else None

    def one(self) -> Any:
        """Exactly one row, else :class:`NoResultFoundError`/:class:`MultipleResultsFoundError`."""
        return self._one(allow_none=False)

    def one_or_none(self) -> Any:
        """One row or None; several rows raise :class:`MultipleResultsFoundError`."""
        return self._one(allow_none=True)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._take_all())


class ScalarResult(_Consumable):
    """The first column of each row (``result.scalars().all()``)."""

    def __init__(self, values: list[Any]) -> None:
        self._rows = values
        self._pos = 0


class MappingResult(_Consumable):
    """Each row as a dict of column name to value (``result.mappings().all()``)."""

    def __init__(self, values: list[dict[str, Any]]) -> None:
        self._rows = values
        self._pos = 0

    def fetchall(self) -> list[dict[str, Any]]:
        """All remaining rows as dicts."""
        return self._take_all()


class Result(_Consumable):
    """The result of :meth:`Session.execute`, with SQLAlchemy's ``Result`` API.

    Attributes:
        rowcount: Rows inserted, updated or deleted by a DML statement (as the server
            reports them), else the number of rows returned.
    """

    def __init__(self, keys: Sequence[str], records: Sequence[Sequence[Any]],
                 rowcount: int) -> None:
        self._keys = tuple(keys)
        index = {key: i for i, key in enumerate(self._keys)}
        self._rows: list[Row] = [Row(self._keys, index, tuple(rec)) for rec in records]
        self._pos = 0
        self.rowcount = rowcount

    @property
    def returns_rows(self) -> bool:
        """Whether the statement returned columns (a SELECT or ``RETURNING``)."""
        return bool(self._keys)

    def keys(self) -> tuple[str, ...]:
        """The column names."""
        return self._keys

    def fetchall(self) -> list[Row]:
        """All remaining rows."""
        return self._take_all()

    def fetchone(self) -> Row | None:
        """The next row, or None when there are no more."""
        if self._pos >= len(self._rows):
            return None
        row = self._rows[self._pos]
        self._pos += 1
        return row

    def fetchmany(self, size: int = 1) -> list[Row]:
        """Up to ``size`` next rows."""
        rows = self._rows[self._pos:self._pos + size]
        self._pos += len(rows)
        return rows

    def scalar(self) -> Any:
        """The first column of the first row, or None; the rest are discarded."""
        row = self.first()
        return None if row is None else row[0]

    def scalar_one(self) -> Any:
        """The first column of exactly one row."""
        return self.one()[0]

    def scalar_one_or_none(self) -> Any:
        """The first column of the only row, or None when there is none."""
        row = self.one_or_none()
        return None if row is None else row[0]

    def scalars(self, index: int = 0) -> ScalarResult:
        """The remaining rows' column ``index`` (default the first)."""
        return ScalarResult([row[index] for row in self._take_all()])

    def mappings(self) -> MappingResult:
        """The remaining rows as dicts."""
        return MappingResult([row._mapping for row in self._take_all()])

    def __repr__(self) -> str:
        return f"<Result rows={len(self._rows)} rowcount={self.rowcount} keys={self._keys}>"


# --- transaction clients bound to a session ---------------------------------------------------


class _BeginningConnectionWrapper(ConnectionWrapper[Any]):
    """Tortoise's per-client lock, plus: begin the session's transaction before the first
    statement (so a session that runs nothing costs no BEGIN/COMMIT)."""

    __slots__ = ()

    async def __aenter__(self) -> Any:
        await self._lock.acquire()
        try:
            session: Session = self.client._aegis_session  # type: ignore[attr-defined]
            # A client kept past its session (session.connection, a queryset's using_db)
            # would otherwise run on a connection that now belongs to someone else.
            session._check_open()
            if not session._began and not plain_read.get():
                await session._begin_now()
        except BaseException:
            self._lock.release()
            raise
        return self.connection


class _NestedContext(NestedTransactionContext):
    """A savepoint; the session's transaction is begun first (it may still be pending)."""

    __slots__ = ("session",)

    def __init__(self, client: TransactionalDBClient, session: Session) -> None:
        super().__init__(client)
        self.session = session

    async def __aenter__(self) -> TransactionalDBClient:
        self.session._check_open()
        if not self.session._began:
            async with self.session._lock:
                if not self.session._began:
                    await self.session._begin_now()
        return await super().__aenter__()


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
        "_began", "_client", "_conn", "_ctx", "_ctx_token", "_dirty", "_lease", "_lock",
        "_manager", "_state", "_storage_token", "_task_token",
    )

    def __init__(self, manager: DatabaseManager) -> None:
        self._manager = manager
        self._state = _SessionState.NEW
        self._began = False
        # Something ran that may leave state on the connection (SET, LISTEN, advisory
        # locks...): it gets asyncpg's full reset when handed back (see _statements.py).
        self._dirty = False
        self._client: Any = None
        self._conn: Any = None
        self._lease: Any = None
        self._ctx: Any = None
        self._ctx_token: Any = None
        self._storage_token: Any = None
        self._task_token: Any = None
        self._lock: Any = None

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
        await self._manager._close_session(self, exc)

    # -- transaction control -----------------------------------------------------------------

    async def _begin_now(self) -> None:
        await self._client.begin()
        self._began = True

    async def commit(self) -> None:
        """Commit the current transaction; later statements run in a new one."""
        self._check_open()
        if not self._began:
            return
        async with self._lock:
            await self._manager._commit(self)

    async def rollback(self) -> None:
        """Roll back the current transaction; later statements run in a new one."""
        self._check_open()
        if not self._began:
            return
        async with self._lock:
            await self._manager._rollback(self)

    def savepoint(self) -> TransactionContext:
        """A savepoint context: ``async with session.savepoint(): ...``.

        Everything inside is undone if the block raises; the session stays usable.
        """
        self._check_open()
        context: TransactionContext = self._client._in_transaction()
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
        with translate_errors():
            async with self._client.acquire_connection() as conn:
                return await self._manager._backend.run_raw(conn, sql, values)

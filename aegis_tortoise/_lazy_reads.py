"""Lazy reads: a session's plain reads before its first write may skip BEGIN.

The session clients of both dialects (:mod:`aegis_tortoise._backends`) mix
:class:`LazyReads` in before Tortoise's transaction client class.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aegis_tortoise._isolation import READ_COMMITTED, cached_default, remember_default
from aegis_tortoise._statements import is_plain_read, is_stateless, plain_read

if TYPE_CHECKING:
    from aegis_tortoise.session import Session

__all__ = ["LazyReads"]


class LazyReads:
    """Session-client behaviour shared by both dialects (mixed in before Tortoise's class).

    A plain ORM read before the session's first write runs without BEGIN; any statement
    that may leave state on the connection marks the session for a full reset on release,
    and any but a plain read marks its transaction as one that may have written
    (read-your-writes). Tortoise 1.1.9 sends every ORM statement through these methods;
    code that uses ``acquire_connection()`` directly marks the session itself.
    """

    _aegis_session: Session
    #: The session's first statement may still move to another connection (a readonly
    #: session on a replica, see _PgSessionClient._first_statement).
    _retry_first = False

    def _note(self, query: str) -> None:
        session = self._aegis_session
        if not is_stateless(query):
            session._dirty = True
        if not session._wrote and not is_plain_read(query):
            session._wrote = True  # read-your-writes (see _replicas.ReplicaSet.note_commit)

    async def _read(self, run: Any, query: str, values: list[Any] | None) -> Any:
        self._note(query)
        if (self._aegis_session._began or not is_plain_read(query)
                or not await self._may_read_outside()):
            return await run(query, values)  # a first statement here begins first (begin())
        token = plain_read.set(True)
        try:
            if self._retry_first:
                return await self._first_statement(lambda: run(query, values))
            return await run(query, values)
        finally:
            plain_read.reset(token)

    async def _may_read_outside(self) -> bool:
        """Whether a plain read before the first write may skip BEGIN: only where the
        effective isolation is READ COMMITTED, whose statements each take their own snapshot
        inside a transaction too. Under REPEATABLE READ or SERIALIZABLE the read must belong
        to the transaction's snapshot, or a read-modify-write loses updates.
        """
        session = self._aegis_session
        if session._lock_at_begin:
            return False  # sqlite: for_update/advisory_lock asked for BEGIN IMMEDIATE
        level = session._isolation
        if level is not None:
            return level == READ_COMMITTED
        if session.dialect != "postgres" or session._dirty:
            # sqlite: the session holds the manager's only connection, so no other session
            # of it runs in between. A session that ran SET (dirty) may have changed the
            # server's default on this connection: it begins, as the cache may be stale.
            return session.dialect != "postgres"
        return await self._server_default() == READ_COMMITTED

    async def _server_default(self) -> str:
        """The connection's ``default_transaction_isolation``, read once per connection."""
        level = cached_default(self._connection)  # type: ignore[attr-defined]
        if level is not None:
            return level

        async def show() -> Any:
            async with self.acquire_connection() as connection:  # type: ignore[attr-defined]
                return await connection.fetchval("SHOW default_transaction_isolation")

        token = plain_read.set(True)  # no BEGIN for it
        try:
            value = await (self._first_statement(show) if self._retry_first else show())
        finally:
            plain_read.reset(token)
        # After _first_statement the session may be on another connection: cache on that one.
        return remember_default(self._connection, str(value))  # type: ignore[attr-defined]

    async def _first_statement(self, send: Callable[[], Awaitable[Any]]) -> Any:
        return await send()

    async def execute_query(self, query: str, values: list[Any] | None = None) -> Any:
        return await self._read(super().execute_query, query, values)  # type: ignore[misc]

    async def execute_query_dict(self, query: str, values: list[Any] | None = None) -> Any:
        return await self._read(super().execute_query_dict, query, values)  # type: ignore[misc]

    async def fetch_rows(self, query: str, values: list[Any] | None = None) -> list[Any]:
        """The rows of any statement (``INSERT ... RETURNING`` too), as the driver gives them.

        Tortoise 1.1.9's asyncpg ``execute_query`` returns no rows for a statement starting
        with INSERT/UPDATE/DELETE, and ``execute_query_dict`` copies every row into a dict
        (~0.3 us a row: 3 ms for create_many's 10,000 keys). sqlite's rows come as they are.
        """
        _, rows = await self.execute_query(query, values)
        result: list[Any] = list(rows)
        return result

    async def execute_insert(self, query: str, values: list[Any]) -> Any:
        self._note(query)
        return await super().execute_insert(query, values)  # type: ignore[misc]

    async def execute_many(self, query: str, values: list[Any]) -> None:
        self._note(query)
        await super().execute_many(query, values)  # type: ignore[misc]

    async def execute_script(self, query: str) -> None:
        self._aegis_session._dirty = self._aegis_session._wrote = True
        await super().execute_script(query)  # type: ignore[misc]

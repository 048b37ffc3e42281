"""``iterate``/``iterate_batches``: the rows that matched when the walk began, in bounded
memory.

- PostgreSQL: a server-side cursor in the session's transaction, ``DECLARE c NO SCROLL
  CURSOR FOR <select>`` then ``FETCH FORWARD <batch_size>`` per batch: one round trip per
  batch, at most one batch in memory, and the server keeps the snapshot of the DECLARE, so
  rows the loop body inserts or changes are not seen. Filters only the QuerySet can express
  go in as ``pk IN (<its SELECT pk>)`` (:func:`._keyset.source_of`).
- sqlite: a walk whose rows fit one batch is one SELECT (``LIMIT batch_size + 1`` tells).
  Else the keys of the matching rows, numbered in order, go into a temporary table first
  (``CREATE TEMP TABLE``; sqlite's own storage, not Python's memory); each batch then joins
  the next ``batch_size`` numbers to the table. Rows the loop body inserts are not in the
  snapshot; rows it deletes are skipped. A table a walk could not drop (its session had
  ended) is dropped by the next walk on that connection. A readonly session (``PRAGMA
  query_only``, so nothing can insert) walks by keyset batches instead (:mod:`._keyset`).

Each FETCH is its own short operation of the session, so the loop body may use the session
(and the repository) between batches. Leaving the loop early (``break``, an exception)
closes the cursor or drops the table: in the generator's ``aclose()``, which Python runs
when the loop drops it, perhaps later, as a task of its own (asyncio's async generator
finalizer). That cleanup takes the session's operation lock, so it never runs between
another task's statements (a ``commit()``), and skips what the end of the transaction or
the session removed already.

Async generators are not coroutine functions, so the repository's translation wrapper does
not see them: errors are translated here, the same way (:func:`repository_error`).
"""

from __future__ import annotations

import asyncio
import itertools
import weakref
from collections.abc import AsyncGenerator, Iterator, Mapping, Sequence
from contextlib import aclosing, contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from tortoise.models import Model

from aegis_tortoise import _keyset, _reads
from aegis_tortoise._bulk import _quote, _table, fetch_rows
from aegis_tortoise._translate import repository_error
from aegis_tortoise.errors import ServiceException, ValidationError

if TYPE_CHECKING:
    from aegis_tortoise.repository import BaseRepository

__all__ = ["batches", "items"]

M = TypeVar("M", bound=Model)

_names = itertools.count(1)
_MAX_BATCH = 2**31 - 1
#: The sqlite snapshot tables of walks still open in this process (see _sweep).
_live: set[str] = set()
#: sqlite connections that may hold the table of a walk that could not drop it (its
#: session had ended, its transaction had failed): the next walk there drops it.
_orphans: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()


@contextmanager
def _translated(repo: BaseRepository[Any]) -> Iterator[None]:
    try:
        yield
    except ServiceException:
        raise
    except Exception as exc:
        error = repository_error(repo.model, exc)
        if error is exc:
            raise
        repo.session._failed_as_shown(exc, error)
        raise error from exc


def _check_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValidationError(f"batch_size must be an integer >= 1, got {batch_size!r}",
                              details={"field": "batch_size"})


async def batches(repo: BaseRepository[M], *, filters: Mapping[str, Any] | None,
                  order_by: str | Sequence[str] | None, batch_size: int,
                  include_deleted: bool) -> AsyncGenerator[list[M], None]:
    """Lists of at most ``batch_size`` instances, in ``order_by`` order (the key last)."""
    with _translated(repo):
        _check_size(batch_size)
        # PostgreSQL's FETCH takes at most a 32-bit count (a larger one is a syntax error
        # that aborts the transaction), and sqlite's LIMIT batch_size + 1 must stay 64-bit:
        # no batch that large fits in memory anyway.
        batch_size = min(batch_size, _MAX_BATCH)
        ordering = _keyset.keyset_ordering(repo.model, order_by, what="iterate")
        source = _keyset.source_of(repo, filters, include_deleted)
    session = repo.session
    walk: AsyncGenerator[list[M], None]
    if session.dialect == "postgres":
        walk = _cursor(repo, source, ordering, batch_size)
    elif getattr(session, "readonly", False):
        walk = _keyset_walk(repo, source, ordering, batch_size)
    else:
        walk = _snapshot(repo, source, ordering, batch_size)
    async with aclosing(walk) as rows:
        async for batch in rows:
            yield batch


async def _keyset_walk(repo: BaseRepository[M], source: _keyset.Source,
                       ordering: tuple[str, ...], batch_size: int
                       ) -> AsyncGenerator[list[M], None]:
    indexes = _keyset.ordering_indexes(repo.model, ordering)
    plan = _reads.rows_of(repo)
    position: list[Any] | None = None
    while True:
        with _translated(repo):
            records = await _keyset.fetch_after(repo, source, ordering, position, batch_size)
        if records:
            position = _keyset.position_of(records[-1], indexes)
            yield plan.build(records)
        if len(records) < batch_size:
            return


def _where(source: _keyset.Source) -> str:
    return f" WHERE {source[0]}" if source[0] else ""


async def _cursor(repo: BaseRepository[M], source: _keyset.Source, ordering: tuple[str, ...],
                  batch_size: int) -> AsyncGenerator[list[M], None]:
    session = repo.session
    model = repo.model
    rows = _reads.rows_of(repo)
    select = (f"SELECT {rows.columns_sql} FROM {_table(model)}{_where(source)} "  # noqa: S608
              f"ORDER BY {_keyset.order_sql(model, 'postgres', ordering)}")
    name = f"aegis_cursor_{next(_names)}"
    fetch = f'FETCH FORWARD {int(batch_size)} FROM "{name}"'
    with _translated(repo):
        connection = session.connection
        await fetch_rows(connection, f'DECLARE "{name}" NO SCROLL CURSOR FOR {select}',
                         list(source[1]))
    closed = False
    try:
        while True:
            with _translated(repo):
                records = await fetch_rows(connection, fetch, [])
            if len(records) < batch_size:
                # The rows ran out: close now, before the loop body can end the transaction.
                closed = True
                await _cleanup(repo, f'CLOSE "{name}"', None)
            if records:
                yield rows.build(records)
            if closed:
                break
    finally:
        if not closed:
            await _cleanup(repo, f'CLOSE "{name}"',
                           ("SELECT 1 FROM pg_cursors WHERE name = $1", [name]))


async def _snapshot(repo: BaseRepository[M], source: _keyset.Source,
                    ordering: tuple[str, ...], batch_size: int
                    ) -> AsyncGenerator[list[M], None]:
    session = repo.session
    model = repo.model
    meta = model._meta
    table = _table(model)
    plan = _reads.rows_of(repo)
    connection = session.connection
    raw = connection._connection  # Tortoise 1.1.9: the client's aiosqlite connection
    name = _quote(f"aegis_iter_{next(_names)}")
    key = f"{table}.{_quote(meta.db_pk_column)}"
    columns = ", ".join(f"{table}.{_quote(c)}" for c in meta.fields_db_projection.values())
    select = (f"SELECT {columns} FROM temp.{name} AS s JOIN {table} "  # noqa: S608 - quoted
              f'ON {key} = s."aegis_key" WHERE s."aegis_pos" > ?1 '
              f'AND s."aegis_pos" <= ?2 ORDER BY s."aegis_pos"')
    try:
        # One operation of the session: another task's write on the session cannot land
        # between the sweep, the table and the rows numbered into it.
        token = await session._enter_op()
        try:
            with _translated(repo):
                if _orphans.get(raw):
                    await _sweep(connection, raw)
                # A walk that fits one batch is that batch: one SELECT, no table.
                records = await _keyset.fetch_after(repo, source, ordering, None,
                                                    batch_size + 1)
                total = start = len(records)
                if total > batch_size:
                    # The table is read from its start: the SELECT above may have run before
                    # the transaction began, and another connection may have written since.
                    records, start = [], 0
                    _live.add(name)
                    total = await _snapshot_table(connection, name, model, source, ordering)
        finally:
            session._exit_op(token)
        if records:
            yield plan.build(records)
        while start < total:
            with _translated(repo):
                records = await fetch_rows(connection, select, [start, start + batch_size])
            start += batch_size
            if records:
                yield plan.build(records)
    finally:
        if name in _live:
            _live.discard(name)
            if not await _cleanup(repo, f"DROP TABLE IF EXISTS temp.{name}", None,
                                  when_cancelled=True):
                _orphans.setdefault(raw, set()).add(name)


async def _snapshot_table(connection: Any, name: str, model: type[Model],
                          source: _keyset.Source, ordering: tuple[str, ...]) -> int:
    """Number the keys of the rows ``source`` selects into the temporary table ``name``, in
    order; the count."""
    table = _table(model)
    key = f"{table}.{_quote(model._meta.db_pk_column)}"
    order = _keyset.order_sql(model, "sqlite", ordering)
    await fetch_rows(connection, f'CREATE TEMP TABLE {name} '
                     '("aegis_pos" INTEGER PRIMARY KEY, "aegis_key")', [])
    await fetch_rows(
        connection,
        f'INSERT INTO temp.{name} ("aegis_pos", "aegis_key") '  # noqa: S608 - quoted
        f"SELECT row_number() OVER (ORDER BY {order}), {key} "
        f"FROM {table}{_where(source)}", list(source[1]))
    found = await fetch_rows(
        connection, f'SELECT max("aegis_pos") FROM temp.{name}', [])  # noqa: S608 - quoted
    return int(found[0][0] or 0)


async def _sweep(connection: Any, raw: Any) -> None:
    """Drop the tables of walks that are over but were never dropped (a generator kept past
    its session, finalized after it ended): they would stay on sqlite's one connection."""
    _orphans.pop(raw, None)
    found = await fetch_rows(connection, "SELECT name FROM sqlite_temp_master WHERE "
                             "type = 'table' AND name LIKE 'aegis\\_iter\\_%' ESCAPE '\\'", [])
    for (table,) in found:
        if _quote(table) not in _live:
            await fetch_rows(connection, f"DROP TABLE IF EXISTS temp.{_quote(table)}", [])


async def _cleanup(repo: BaseRepository[Any], statement: str,
                   check: tuple[str, list[Any]] | None, *, when_cancelled: bool = False
                   ) -> bool:
    """Run ``statement`` (close the cursor, drop the table) if it still has something to do:
    not after the session ended, nor after a failure (the rollback will), nor when ``check``
    finds nothing (the transaction that held the cursor has ended), nor while the task is
    cancelled unless ``when_cancelled``. Whether it ran.

    The session's operation lock is held throughout, so a ``commit()`` of another task (or
    of the loop's own task, when asyncio's finalizer runs this later) never runs between
    the check and the statement.
    """
    session = repo.session
    task = asyncio.current_task()
    if not session.is_active or (
            not when_cancelled and task is not None and task.cancelling()):
        return False
    token = await session._enter_op()
    try:
        if not session.is_active or session._failed is not None:
            return False
        connection = session.connection
        with _translated(repo):
            if check is not None and not await fetch_rows(connection, *check):
                return True
            await fetch_rows(connection, statement, [])
        return True
    except ServiceException:
        if check is None and statement.startswith("CLOSE"):
            raise  # the rows ran out and CLOSE failed: a real error
        return False  # leaving early already raises or returns; the transaction's end cleans up
    finally:
        session._exit_op(token)


async def items(repo: BaseRepository[M], *, filters: Mapping[str, Any] | None,
                order_by: str | Sequence[str] | None, batch_size: int,
                include_deleted: bool) -> AsyncGenerator[M, None]:
    """The instances of :func:`batches`, one at a time."""
    async with aclosing(batches(repo, filters=filters, order_by=order_by,
                                batch_size=batch_size, include_deleted=include_deleted)) as it:
        async for batch in it:
            for item in batch:
                yield item

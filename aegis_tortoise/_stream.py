"""``iterate``/``iterate_batches``: every matching row in bounded memory.

- PostgreSQL: a server-side cursor in the session's transaction, ``DECLARE c NO SCROLL
  CURSOR FOR <select>`` then ``FETCH FORWARD <batch_size>`` per batch: one round trip per
  batch, at most one batch in memory, and the server keeps the snapshot of the first fetch.
  Each FETCH is its own short operation of the session, so the loop body may use the session
  (and the repository) between batches. The cursor is closed when the rows run out and when
  the loop is left early (``break`` or an exception: the generator's ``aclose()``, which
  Python runs when the loop drops it); a cursor of a transaction that has ended meanwhile
  is gone already and is not closed twice.
- sqlite, and filters only the QuerySet can express: keyset batches (:mod:`._keyset`), each
  an index seek after the last row of the batch before.

Async generators are not coroutine functions, so the repository's translation wrapper does
not see them: errors are translated here, the same way (:func:`repository_error`).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncGenerator, Iterator, Mapping, Sequence
from contextlib import aclosing, contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from tortoise.models import Model

from aegis_tortoise import _keyset, _reads
from aegis_tortoise import _select as _sql
from aegis_tortoise._bulk import fetch_rows
from aegis_tortoise._translate import repository_error
from aegis_tortoise.errors import ServiceException, ValidationError

if TYPE_CHECKING:
    from aegis_tortoise.repository import BaseRepository

__all__ = ["batches", "items"]

M = TypeVar("M", bound=Model)

_names = itertools.count(1)


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
        ordering = _keyset.keyset_ordering(repo.model, order_by)
        plain = _reads.plain_where(repo, filters, include_deleted)
    dialect = repo.session.dialect
    if (dialect == "postgres" and plain is not None
            and _sql.orderable(repo.model, ordering, dialect)):
        async with aclosing(_cursor(repo, plain, ordering, batch_size)) as rows:
            async for batch in rows:
                yield batch
        return
    after: list[Any] | None = None
    while True:
        with _translated(repo):
            batch = await _keyset.fetch_after(repo, filters, ordering, after, batch_size,
                                              include_deleted=include_deleted)
        if batch:
            last = batch[-1]
            after = [getattr(last, name.lstrip("-")) for name in ordering]
            yield batch
        if len(batch) < batch_size:
            return


async def _cursor(repo: BaseRepository[M], plain: tuple[dict[str, Any], _sql.Shape],
                  ordering: tuple[str, ...], batch_size: int) -> AsyncGenerator[list[M], None]:
    session = repo.session
    model = repo.model
    kwargs, shape = plain
    rows = _reads.rows_of(repo)
    select = _sql.select_sql(model, "postgres", shape, ordering, rows.columns_sql,
                             limit=False, offset=False)
    name = f"aegis_cursor_{next(_names)}"
    fetch = f'FETCH FORWARD {int(batch_size)} FROM "{name}"'
    with _translated(repo):
        params = _sql.params_for(model, shape, kwargs)
        connection = session.connection
        await fetch_rows(connection, f'DECLARE "{name}" NO SCROLL CURSOR FOR {select}', params)
    done = False
    try:
        while True:
            with _translated(repo):
                records = await fetch_rows(connection, fetch, [])
            if len(records) < batch_size:
                done = True
            if records:
                yield rows.build(records)
            if done:
                break
    finally:
        await _close(repo, name, exhausted=done)


async def _close(repo: BaseRepository[Any], name: str, *, exhausted: bool) -> None:
    """Close the cursor if it still exists: not after the session or its transaction ended
    (the end closed it), nor after a failure (the rollback will)."""
    session = repo.session
    task = asyncio.current_task()
    if (not session.is_active or session._failed is not None
            or (task is not None and task.cancelling())):
        return
    connection = session.connection
    try:
        with _translated(repo):
            if not exhausted:
                # Left early: the loop body may have committed the cursor's transaction.
                found = await fetch_rows(
                    connection, "SELECT 1 FROM pg_cursors WHERE name = $1", [name])
                if not found:
                    return
            await fetch_rows(connection, f'CLOSE "{name}"', [])
    except ServiceException:
        if not exhausted:
            return  # leaving early already raises or returns; the transaction's end closes it
        raise


async def items(repo: BaseRepository[M], *, filters: Mapping[str, Any] | None,
                order_by: str | Sequence[str] | None, batch_size: int,
                include_deleted: bool) -> AsyncGenerator[M, None]:
    """The instances of :func:`batches`, one at a time."""
    async with aclosing(batches(repo, filters=filters, order_by=order_by,
                                batch_size=batch_size, include_deleted=include_deleted)) as it:
        async for batch in it:
            for item in batch:
                yield item

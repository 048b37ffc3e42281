"""``BaseRepository.create_many``'s orchestration: which path a batch takes, the savepoint.

The SQL and the column-at-a-time conversion live in :mod:`aegis_tortoise._bulk`; this module
decides, per batch, between

- the column-at-a-time path (plain dicts or new instances: checked and converted a column at
  a time, one ``INSERT ... unnest`` per chunk, instances built while the server works), and
- the row-at-a-time path (relations given as objects, explicit primary keys, async or
  database defaults, array columns): a model instance per row, as ``Model.save()`` prepares
  it.

Both accept and reject the same input; both run in one savepoint (all or nothing, the session
stays usable after an error).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import operator
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from tortoise.models import Model

from aegis_tortoise import _bulk, _copy
from aegis_tortoise._filters import writable_values
from aegis_tortoise._values import iterable_argument, refuse_nan_columns

if TYPE_CHECKING:
    from aegis_tortoise.repository import BaseRepository

__all__ = ["batch_rows", "create_many", "settle"]

M = TypeVar("M", bound=Model)

_is_none = functools.partial(operator.is_, None)

#: Each item's field values, which items are instances, and the dicts' distinct key sets.
Gathered = tuple[Sequence[Mapping[str, Any]], Sequence[bool], set[frozenset[str]]]


#: Rows a generator (or any iterable without a length) is read in at a time: bounds the
#: memory of a batch larger than memory, all of it written in one savepoint.
STREAM_CHUNK = 50_000


async def create_many(repo: BaseRepository[M], entities: Iterable[Any], *,
                      returning: bool = True) -> list[M] | int:
    """Insert ``entities`` (instances, dicts, pydantic models) in one savepoint; ids set.

    With ``returning=False`` no instances are built or kept (instances given stay as they
    are) and the row count is returned; ``entities`` is then read ``STREAM_CHUNK`` rows at a
    time, so a generator of more rows than fit in memory goes in, all in one savepoint.
    """
    iterable_argument(repo.model, "create_many() entities", entities)
    if returning:
        items = list(entities)
        return await _one_batch(repo, items) if items else []
    iterator = iter(entities)
    chunk = list(itertools.islice(iterator, STREAM_CHUNK))
    count = 0
    async with repo.session.savepoint():
        while chunk:
            prepared = _prepare(repo, chunk)
            if prepared is None:
                instances = [repo._instance(entity) for entity in chunk]
                await _bulk.insert_rows(repo.session, repo.model,
                                        await _bulk.prepare_rows(instances))
            else:
                await _insert(repo, chunk, *prepared, build=False)
            count += len(chunk)
            del chunk  # the next chunk is read once this one is freed
            chunk = list(itertools.islice(iterator, STREAM_CHUNK))
    return count


async def _one_batch(repo: BaseRepository[M], items: list[Any]) -> list[M]:
    prepared = _prepare(repo, items)
    if prepared is not None:
        async with repo.session.savepoint():
            return await _insert(repo, items, *prepared, build=True)
    instances = [repo._instance(entity) for entity in items]
    rows = await _bulk.prepare_rows(instances)
    before = [instance.pk for instance in instances]
    try:
        async with repo.session.savepoint():
            await _bulk.insert_rows(repo.session, repo.model, rows)
    except BaseException:
        for instance, pk in zip(instances, before, strict=True):
            instance.pk = pk  # the ids of a rolled-back insert must not stick
        raise
    return instances


def _prepare(repo: BaseRepository[M], items: list[Any]
             ) -> tuple[_bulk.BulkPlan, _bulk.Batch, Sequence[bool]] | None:
    """The column-at-a-time preparation; None when the batch needs the row-at-a-time path
    (then nothing has been sent or changed)."""
    model = repo.model
    plan = _bulk.bulk_plan(model)
    if plan.unsupported:
        return None
    gathered = batch_rows(repo, items)
    if gathered is None:
        return None
    rows, is_instance, keysets = gathered
    for keyset in keysets:
        writable_values(model, dict.fromkeys(keyset), action="create")
        if keyset & plan.fallback_keys:
            return None
    try:
        # A value a field cannot convert raises here (object() for a Decimal, "abc" ->
        # InvalidOperation, 12 for a UUID); the public wrapper makes it a ValidationError.
        batch = _bulk.prepare_batch(plan, rows, is_instance, keysets)
    except _bulk.NeedsRowPath:
        return None
    except _bulk.MissingFieldsError as exc:
        raise repo._missing(exc.fields) from None
    refuse_nan_columns(model, [c.name for c in batch.sent], batch.arrays, repo.session.dialect)
    return plan, batch, is_instance


async def _insert(repo: BaseRepository[M], items: list[Any], plan: _bulk.BulkPlan,
                  batch: _bulk.Batch, is_instance: Sequence[bool], *, build: bool) -> list[M]:
    """Send a prepared batch (inside the caller's savepoint): binary COPY on PostgreSQL from
    ``COPY_THRESHOLD`` rows, else ``INSERT ... unnest``/``VALUES``."""
    session = repo.session
    nrows = len(items)
    if session.dialect == "postgres" and nrows >= _copy.COPY_THRESHOLD:
        send = _copy.copy_batch(session, plan, batch, nrows)
    else:
        send = _bulk.insert_batch(session, plan, batch, nrows)
    if getattr(session.manager._backend, "pinned", False):
        # Under the pytest plugin's rollback isolation every statement takes the pin's
        # lock, which a plain in_transaction() around this call holds in this task: a
        # statement sent from a task of its own would wait for it forever. One task.
        keys = await send
        built = _bulk.new_instances(plan, batch, is_instance) if build else []
    else:
        # The statement goes out first; the instances are built while the server works
        # (~10 ms of a 10,000-row batch), then get their keys.
        insert = asyncio.ensure_future(send)
        try:
            await asyncio.sleep(0)  # the task sends the statement, then waits
            built = _bulk.new_instances(plan, batch, is_instance) if build else []
            keys = await insert
        except BaseException:
            await settle(insert)
            raise
    if not build:
        return []
    saved: list[M] = _bulk.finish_instances(plan, batch, built, items, keys)
    return saved


def batch_rows(repo: BaseRepository[M], items: list[Any]) -> Gathered | None:
    """Each item's field values (a dict, or an instance's ``__dict__``), which items are
    instances, and the dicts' distinct key sets; None if an instance has its own key."""
    model = repo.model
    first = items[0]
    if type(first) is dict and set(map(type, items)) == {dict}:
        # Plain dicts with one key set (the usual batch): checked in C, not per row.
        first_keys = first.keys()
        if all(map(first_keys.__eq__, map(dict.keys, items))):
            return items, [False] * len(items), {frozenset(first_keys)}
    pk_attr = model._meta.pk_attr
    generated_pk = model._meta.pk.generated
    if type(first) is model and set(map(type, items)) == {model}:
        # New instances of the model (the other usual batch), checked in C.
        states: list[dict[str, Any]] = [vars(item) for item in items]
        try:
            saved = any(map(operator.itemgetter("_saved_in_db"), states))
            keyed = generated_pk and not all(
                map(_is_none, map(operator.itemgetter(pk_attr), states)))
        except KeyError:  # an attribute deleted by the caller: the per-item loop names it
            saved = keyed = False
        else:
            if keyed:
                return None  # explicit keys: inserted in statements of their own
            if not saved:
                return states, [True] * len(items), set()
    rows: list[Mapping[str, Any]] = []
    is_instance: list[bool] = []
    keysets: set[frozenset[str]] = set()
    last: Any = None
    for entity in items:
        if isinstance(entity, Model):
            state = repo._unsaved(entity).__dict__
            if generated_pk and state.get(pk_attr) is not None:
                return None  # an explicit key: inserted in a statement of its own
            rows.append(state)
            is_instance.append(True)
            continue
        data = entity if isinstance(entity, Mapping) else repo._data(entity, partial=False)
        keys = data.keys()
        if keys != last:  # consecutive dicts mostly share their keys: check a set once
            keysets.add(frozenset(keys))
            last = keys
        rows.append(data)
        is_instance.append(False)
    return rows, is_instance, keysets


async def settle(task: asyncio.Future[Any]) -> None:
    """Stop ``task`` and wait until it has (the driver cancels a running statement itself).

    A cancellation that arrives meanwhile is held until the task is done, so the savepoint
    around it is never rolled back while its statement still runs; then it is raised.
    """
    task.cancel()
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait([task])
        except asyncio.CancelledError:
            cancelled = True
    if not task.cancelled():
        task.exception()  # retrieved: the caller's own error is the one raised
    if cancelled:
        raise asyncio.CancelledError

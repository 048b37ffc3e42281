"""The repository's reads through :mod:`aegis_tortoise._select` (SQL cached per shape).

A read takes this path while ``query()`` is the plain table (neither the repository's
``query()`` nor the model's ``Meta.manager`` is overridden) and its filters, ordering and
prefetches fit a cached shape; otherwise the caller runs Tortoise's QuerySet, which gives the
same rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any, TypeVar

from tortoise.models import Model
from tortoise.query_utils import Prefetch

from aegis_tortoise import _bulk
from aegis_tortoise import _select as _sql
from aegis_tortoise._filters import filter_kwargs
from aegis_tortoise._locks import ForUpdate

if TYPE_CHECKING:
    from aegis_tortoise.repository import BaseRepository

__all__ = ["native_types", "one_row", "plain_fetch", "plain_query", "plain_where", "rows_of"]

M = TypeVar("M", bound=Model)


@lru_cache(maxsize=64)
def _native_of(executor: type) -> frozenset[type]:
    return frozenset(executor.DB_NATIVE)  # type: ignore[attr-defined]


def native_types(connection: Any) -> frozenset[type]:
    """The Python types the connection's driver returns as they are (Tortoise DB_NATIVE)."""
    return _native_of(connection.executor_class)


def plain_query(repo: BaseRepository[M]) -> bool:
    """Whether ``repo.query()`` is the plain table, so SQL built here may stand for it."""
    return repo._plain_query()


def rows_of(repo: BaseRepository[M]) -> _sql.RowPlan:
    """The row plan of the repository's model on its session's driver."""
    return _sql.row_plan(repo.model, native_types(repo.session.connection))


def plain_where(repo: BaseRepository[M], filters: Mapping[str, Any] | None,
                include_deleted: bool) -> tuple[dict[str, Any], _sql.Shape] | None:
    """Validated filters (as ``query()`` would apply them) and their shape, or None when
    the QuerySet must run them (a ``query()`` override, a filter the shape cannot hold).

    Raises:
        InvalidFilterError: as ``BaseRepository._where`` would, before any SQL.
    """
    kwargs = filter_kwargs(repo.model, filters, repo.session.dialect)
    if not plain_query(repo):
        return None  # query() or the model's manager may narrow or join: QuerySet path
    if repo.hide_soft_deleted and not include_deleted:
        hidden = f"{repo.soft_delete_field}__isnull"
        if kwargs.get(hidden, True) is not True:
            return None  # query() ANDs IS NULL with the caller's IS NOT NULL: let it
        kwargs = {hidden: True, **kwargs}
    shape = _sql.shape_of(repo.model, kwargs, repo.session.dialect)
    return None if shape is None else (kwargs, shape)


async def plain_fetch(repo: BaseRepository[M], kwargs: Mapping[str, Any], shape: _sql.Shape,
                      ordering: tuple[str, ...], related: Sequence[str | Prefetch], *,
                      skip: int, limit: int | None, lock: ForUpdate | None = None
                      ) -> list[M] | None:
    """Rows for a plain shape through SQL built once per shape; None to use the QuerySet
    (an ordering or prefetch the cached SQL does not cover). ``lock``: append its
    ``FOR UPDATE`` clause (PostgreSQL takes it after LIMIT/OFFSET)."""
    model = repo.model
    dialect = repo.session.dialect
    if not _sql.orderable(model, ordering, dialect):
        return None
    connection = repo.session.connection
    native = native_types(connection)
    prefetches: list[tuple[str, _sql.PrefetchPlan]] = []
    for name in related:
        if not isinstance(name, str) or dialect != "postgres":
            return None
        plan = _sql.prefetch_plan(model, name, native)
        if plan is None:
            return None
        prefetches.append((name, plan))
    rows = _sql.row_plan(model, native)
    sql = _sql.select_sql(model, dialect, shape, ordering, rows.columns_sql,
                          limit=limit is not None, offset=bool(skip))
    if lock is not None:
        sql += lock.sql(dialect)
    params = _sql.params_for(model, shape, kwargs)
    if limit is not None:
        params.append(limit)
    if skip:
        params.append(skip)
    records = await _bulk.fetch_rows(connection, sql, params)
    items: list[M] = rows.build(records)
    for name, plan in prefetches:
        await _prefetch_reverse(repo, items, name, plan, native)
    return items


async def _prefetch_reverse(repo: BaseRepository[M], items: Sequence[Any], name: str,
                            plan: _sql.PrefetchPlan, native: frozenset[type]) -> None:
    """Load reverse relation ``name`` of ``items`` in one query, as Tortoise 1.1.9's
    ``_prefetch_reverse_relation`` does (same grouping, same result containers)."""
    own = plan.own_attr
    keys = list(dict.fromkeys(getattr(item, own) for item in items))
    groups: dict[Any, list[Any]] = {}
    if keys:
        values = [plan.own_field.to_db_value(key, repo.model) for key in keys]
        records = await _bulk.fetch_rows(repo.session.connection, plan.sql, [values])
        fk_attr = plan.fk_attr
        for obj in _sql.row_plan(plan.related, native).build(records):
            groups.setdefault(getattr(obj, fk_attr), []).append(obj)
    for item in items:
        getattr(item, name)._set_result_for_query(groups.get(getattr(item, own), []), None)


async def one_row(repo: BaseRepository[M], sql: str, params: list[Any]) -> M | None:
    """The first row of a statement that selects or returns every column, as an instance
    (None if there is none)."""
    rows = await _bulk.fetch_rows(repo.session.connection, sql, params)
    found: list[M] = rows_of(repo).build(rows[:1])
    return found[0] if found else None

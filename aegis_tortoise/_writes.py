"""Set-based writes: ``update_many``, ``update()``'s one-row UPDATE and the ``*_where`` methods.

- ``upsert``/``upsert_many`` are in :mod:`aegis_tortoise._upsert` (re-exported here), the
  column helpers they share with ``update_many`` in :mod:`aegis_tortoise._columns`.
- ``update_many``: rows grouped by the fields they name, one statement per group:
  ``UPDATE t SET c = u.c FROM unnest(...) AS u WHERE t.pk = u.pk RETURNING ...`` on
  PostgreSQL, ``UPDATE ... FROM (VALUES ...)`` on sqlite (>= 3.33).
- ``update_where``/``delete_where``/``soft_delete_where``: one statement through Tortoise's
  QuerySet on the repository's filtered ``query()``.

Values are converted a column at a time (``to_python_value`` then ``to_db_value``, as
``Model(**values)`` and ``save()`` would), SQL is built once per shape, and every call with
more than one statement runs in a savepoint: all or nothing, the session stays usable.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any, TypeVar

from tortoise import timezone
from tortoise.expressions import Expression, ResolveContext
from tortoise.models import Model

from aegis_tortoise import _bulk, _reads
from aegis_tortoise._bulk import _pg_type, _quote, _table, fetch_rows
from aegis_tortoise._columns import _as_dict, _chunks, _conversion
from aegis_tortoise._filters import writable_values
from aegis_tortoise._upsert import _conflict_names, _update_names, upsert_many
from aegis_tortoise._values import (
    auto_now_values,
    db_values,
    field_error,
    iterable_argument,
    python_values,
    refuse_nan,
    refuse_nan_columns,
)
from aegis_tortoise.errors import ValidationError

if TYPE_CHECKING:
    from aegis_tortoise.repository import BaseRepository

# upsert_many and its argument checks (_conflict_names, _update_names, used by _versions)
# are in aegis_tortoise._upsert, re-exported here.
__all__ = ["_conflict_names", "_update_names", "delete_where", "soft_delete_where",
           "update_many", "update_returning", "update_where", "upsert_many"]

M = TypeVar("M", bound=Model)


# -- update (one row) ---------------------------------------------------------------------------


async def update_returning(repo: BaseRepository[M], pk: Any, values: dict[str, Any], *,
                          where_null: bool | None = None,
                          where: Mapping[str, Any] | None = None) -> M | None:
    """``UPDATE ... SET <values>, updated_at = now WHERE pk = ... RETURNING *``.

    Args:
        where_null: True/False: only if the soft-delete field is NULL / NOT NULL.
        where: Further ``field: value`` conditions (an optimistic version, _versions.py).
    """
    meta = repo.model._meta
    table = meta.basetable
    conn = repo.session.connection
    refuse_nan(repo.model, values, repo.session.dialect)
    # What DatetimeField.to_db_value stamps on save(): now in the context's time zone.
    auto_now_values(repo.model, values, timezone.localtime())
    if not where and not any(isinstance(v, Expression) or k in meta.fk_fields
                             or k in meta.o2o_fields for k, v in values.items()):
        return await _update_cached(repo, pk, values, where_null)
    query = conn.query_class.update(table)
    context = ResolveContext(model=repo.model, table=table, annotations={},
                             custom_filters={})
    for key, given in values.items():
        name, value, field = key, given, meta.fields_map[key]
        if key in meta.fk_fields or key in meta.o2o_fields:
            repo.model._validate_relation_type(key, given)
            if isinstance(given, Model):
                target = field.to_field_instance  # type: ignore[attr-defined]
                value = getattr(given, target.model_field_name)
            name = str(field.source_field)
            field = meta.fields_map[name]
        column = meta.fields_db_projection[name]
        if isinstance(value, Expression):
            query = query.set(column, value.resolve(context).term)
        else:
            # The model class, not an instance: no auto_now side effects, as in
            # Tortoise's own QuerySet.update().
            query = query.set(column, field.to_db_value(value, repo.model))
    query = query.where(table[meta.db_pk_column] == meta.pk.to_db_value(pk, repo.model))
    if where_null is not None:
        marker = table[meta.fields_db_projection[repo.soft_delete_field]]
        query = query.where(marker.isnull() if where_null else marker.notnull())
    for name, value in (where or {}).items():
        field = meta.fields_map[name]
        query = query.where(table[meta.fields_db_projection[name]]
                            == field.to_db_value(value, repo.model))
    query = query.returning(*meta.fields_db_projection.values())  # type: ignore[operator]
    sql, params = query.get_parameterized_sql()
    return await _reads.one_row(repo, sql, params)


async def _update_cached(repo: BaseRepository[M], pk: Any, values: dict[str, Any],
                         where_null: bool | None) -> M | None:
    """``update_returning`` for plain values, with the SQL built once per column set."""
    meta = repo.model._meta
    columns = tuple(meta.fields_db_projection[key] for key in values)
    sql = _bulk.update_by_pk_sql(repo.model, repo.session.dialect, columns,
                                 repo.soft_delete_field, where_null)
    params = db_values(repo.model, values)
    params.append(meta.pk.to_db_value(pk, repo.model))
    return await _reads.one_row(repo, sql, params)


# -- update_many ---------------------------------------------------------------------------------


@lru_cache(maxsize=512)
def _update_many_sql(model: type[Model], dialect: str, names: tuple[str, ...], *,
                     scalars: tuple[str, ...], soft_field: str | None, nrows: int) -> str:
    """``UPDATE t SET c = u.c, ... FROM <rows> WHERE t.pk = u.pk [AND soft IS NULL]
    RETURNING <all>``; the first column of ``<rows>`` is the key."""
    meta = model._meta
    db = meta.fields_db_projection
    pk = _quote(meta.db_pk_column)
    table = _table(model)
    if dialect == "postgres":
        types = [_pg_type(model, meta.pk_attr), *(_pg_type(model, n) for n in names)]
        arrays = ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(types))
        aliases = ["k", *(f"c{i}" for i in range(len(names)))]
        source = f"unnest({arrays}) AS u({', '.join(aliases)})"
        sets = [f"{_quote(db[n])} = u.c{i}" for i, n in enumerate(names)]
        sets += [f"{_quote(db[n])} = ${len(types) + i + 1}::{_pg_type(model, n)}"
                 for i, n in enumerate(scalars)]
        key = "u.k"
    else:
        one = "(" + ", ".join("?" * (len(names) + 1)) + ")"
        source = f"(VALUES {', '.join([one] * nrows)}) AS u"
        sets = [f"{_quote(db[n])} = u.column{i + 2}" for i, n in enumerate(names)]
        sets += [f"{_quote(db[n])} = ?" for n in scalars]
        key = "u.column1"
    where = f"{table}.{pk} = {key}"
    if soft_field is not None:
        where += f" AND {table}.{_quote(db[soft_field])} IS NULL"
    returning = ", ".join(f"{table}.{_quote(c)}" for c in db.values())
    return (f"UPDATE {table} SET {', '.join(sets)} FROM {source} "  # noqa: S608 - quoted
            f"WHERE {where} RETURNING {returning}")


async def update_many(repo: BaseRepository[M], rows: Iterable[Any]) -> list[M]:
    """The updated instances, in input order; ids that do not exist (or are hidden) are
    skipped."""
    model = repo.model
    meta = model._meta
    pk_attr = meta.pk_attr
    groups: dict[frozenset[str], list[tuple[Any, Mapping[str, Any]]]] = {}
    order: list[Any] = []
    seen: set[Any] = set()
    iterable_argument(model, "update_many() rows", rows)
    for item in rows:
        data = _as_dict(repo, item, partial=True)
        if pk_attr in data:
            key_name = pk_attr
        elif "pk" in data:
            key_name = "pk"
        else:
            raise ValidationError(
                f"update_many() needs the {pk_attr!r} of every {model.__name__} row",
                details={"model": model.__name__, "field": pk_attr})
        pk = repo._pk(data[key_name])
        if pk in seen:
            raise ValidationError(
                f"update_many() got {model.__name__} {pk_attr}={pk!r} twice",
                details={"model": model.__name__, "field": pk_attr, "id": repr(pk)})
        seen.add(pk)
        order.append(pk)
        keys = frozenset(data) - {key_name}
        groups.setdefault(keys, []).append((pk, data))
    found: dict[Any, M] = {}
    hidden = repo.hide_soft_deleted
    if frozenset() in groups:  # rows naming no field: nothing to change, read them
        for obj in await repo.get_by_ids([pk for pk, _ in groups.pop(frozenset())]):
            found[obj.pk] = obj
    prepared = [_update_group(model, keys, members) for keys, members in groups.items()]
    for names, arrays, _ in prepared:
        refuse_nan_columns(model, names, arrays[1:], repo.session.dialect)
    if prepared:
        async with repo.session.savepoint():
            for names, arrays, scalars in prepared:
                await _update_columns(repo, names, arrays=arrays, scalars=scalars, found=found,
                                      soft_field=repo.soft_delete_field if hidden else None)
    return [found[pk] for pk in order if pk in found]


def _update_group(model: type[Model], keys: frozenset[str],
                  members: list[tuple[Any, Mapping[str, Any]]]
                  ) -> tuple[tuple[str, ...], list[list[Any]], list[tuple[str, Any]]]:
    """One group's names, arrays (the key first) and scalars (the auto_now stamps)."""
    meta = model._meta
    checked = writable_values(model, dict.fromkeys(keys), action="update")
    names: list[str] = []
    arrays: list[list[Any]] = [[meta.pk.to_db_value(pk, model) for pk, _ in members]]
    for key in checked:
        values = [data[key] for _, data in members]
        name = key
        if key in meta.fk_fields or key in meta.o2o_fields:
            name = str(meta.fields_map[key].source_field)
            related = meta.fields_map[key].related_model  # type: ignore[attr-defined]
            converted = []
            for value in values:
                if isinstance(value, Model):
                    if not isinstance(value, related):
                        raise field_error(model, key, value, TypeError(
                            f"expected a {related.__name__}"))
                    value = value.pk  # noqa: PLW2901 - the relation's key
                converted.append(value)
            values = converted
        names.append(name)
        arrays.append(_conversion(model, name, values))
    stamps: dict[str, Any] = {}
    auto_now_values(model, stamps, timezone.localtime())
    scalars = [(name, meta.fields_map[name].to_db_value(value, model))
               for name, value in stamps.items() if name not in names]
    return tuple(names), arrays, scalars


async def _update_columns(repo: BaseRepository[M], names: tuple[str, ...], *,
                          arrays: list[list[Any]], scalars: list[tuple[str, Any]],
                          found: dict[Any, M], soft_field: str | None) -> None:
    # One statement per 10,000 rows on PostgreSQL: rows of one call may depend on each
    # other (a row renamed that another row's foreign key is re-pointed to), which holds
    # only inside one statement, as in Tortoise's bulk_update. Splitting 10,000 rows into
    # 2,500-row statements built the instances of one while the server ran the next (11%
    # faster) but broke exactly that, so it was taken out.
    model = repo.model
    session = repo.session
    dialect = session.dialect
    build = _reads.rows_of(repo).build
    scalar_names = tuple(name for name, _ in scalars)
    scalar_values = [value for _, value in scalars]
    n = len(arrays[0])
    for start, end in _chunks(n, len(arrays) + len(scalars), dialect):
        chunk = [array[start:end] for array in arrays]
        sql = _update_many_sql(model, dialect, names, scalars=scalar_names,
                               soft_field=soft_field,
                               nrows=0 if dialect == "postgres" else end - start)
        if dialect == "postgres":
            params = [*chunk, *scalar_values]
        else:
            # sqlite numbers ``?`` in text order: the SET clause's scalars come first.
            params = [*scalar_values, *(v for row in zip(*chunk, strict=True) for v in row)]
        for obj in build(await fetch_rows(session.connection, sql, params)):
            found[obj.pk] = obj


# -- *_where --------------------------------------------------------------------------------------


async def update_where(repo: BaseRepository[Any], filters: Mapping[str, Any] | None,
                       values: Mapping[str, Any], extra: Mapping[str, Any]) -> int:
    """``UPDATE t SET <values>, <extra>, updated_at = now WHERE <filters>``; the row count
    (``extra``: expressions such as an optimistic version's increment)."""
    model = repo.model
    checked = writable_values(model, values, action="update")
    if not checked:
        raise ValidationError(f"update_where() needs at least one {model.__name__} field",
                              details={"model": model.__name__})
    converted = {**python_values(model, checked), **extra}
    refuse_nan(model, converted, repo.session.dialect)
    auto_now_values(model, converted, timezone.localtime())
    queryset = repo._where(filters, include_deleted=False)
    count: int = await queryset.update(**converted)
    return count


async def delete_where(repo: BaseRepository[Any], filters: Mapping[str, Any] | None) -> int:
    """``DELETE FROM t WHERE <filters>``; the row count."""
    queryset = repo._where(filters, include_deleted=False)
    if repo.session.dialect == "sqlite":
        # Tortoise's sqlite client counts the rows an ON DELETE CASCADE removes too
        # (``total_changes``); on the session's one connection nothing changes in between.
        count: int = await queryset.count()
        await queryset.delete()
        return count
    deleted: int = await queryset.delete()
    return deleted


async def soft_delete_where(repo: BaseRepository[Any], filters: Mapping[str, Any] | None,
                            extra: Mapping[str, Any]) -> int:
    """Set ``deleted_at`` (UTC now), ``extra`` and ``updated_at`` where it is NULL; the row
    count."""
    repo._require_soft_delete("soft-delete")
    field = repo.soft_delete_field
    values: dict[str, Any] = {field: datetime.now(UTC), **extra}
    auto_now_values(repo.model, values, timezone.localtime())
    queryset = repo._where(filters, include_deleted=False).filter(**{f"{field}__isnull": True})
    count: int = await queryset.update(**values)
    return count

"""Set-based writes: ``upsert``/``upsert_many``, ``update_many`` and the ``*_where`` methods.

- ``upsert_many``: ``INSERT ... ON CONFLICT (key) DO UPDATE SET ... RETURNING``. PostgreSQL
  sends the rows as one array per column (``SELECT ... FROM unnest(...)``, as create_many)
  and tells an inserted row by ``xmax = 0`` (a row version no transaction has locked or
  updated: the one this INSERT made). ``DO NOTHING`` returns only the inserted rows; the
  existing ones are read in a second statement by their keys. sqlite has no ``xmax``: the
  existing keys are read first (one ``SELECT ... WHERE key IN (VALUES ...)``), which on
  sqlite's single in-process connection costs less than any RETURNING trick and is exact
  (nothing else writes in between).
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

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel
from tortoise import timezone
from tortoise.expressions import Expression, ResolveContext
from tortoise.fields.base import Field
from tortoise.models import Model

from aegis_tortoise import _bulk, _create_many, _reads
from aegis_tortoise._bulk import _pg_type, _quote, _table, fetch_rows
from aegis_tortoise._filters import clip, writable_values
from aegis_tortoise._values import (
    auto_now_values,
    db_values,
    field_error,
    iterable_argument,
    python_values,
    refuse_nan,
    refuse_nan_columns,
    update_value,
)
from aegis_tortoise.errors import ValidationError

if TYPE_CHECKING:
    from aegis_tortoise.repository import BaseRepository

__all__ = ["delete_where", "soft_delete_where", "update_many", "update_returning", "update_where",
           "upsert_many"]

M = TypeVar("M", bound=Model)


@dataclass(slots=True)
class _Columns:
    """Rows as database values a column at a time, and where they came from."""

    names: list[str]                # field names sent per row
    arrays: list[list[Any]]         # their database values, one list per name
    scalars: list[tuple[str, Any]]  # (field name, database value) the same for every row
    positions: list[int]            # the input position of each row


def _conversion(model: type[Model], name: str, values: list[Any]) -> list[Any]:
    """Update ``values`` of field ``name`` as the database takes them, checked as
    ``update()`` checks them (:func:`~aegis_tortoise._values.update_value`: None in a
    non-null field, a value the field cannot convert)."""
    field: Field[Any] = model._meta.fields_map[name]
    to_db = field.to_db_value
    out: list[Any] = []
    append = out.append
    if not field.null and None in values:
        raise field_error(model, name, None, ValueError(
            f"{name} is non nullable field, but null was passed"))
    value: Any = None
    try:
        for value in values:
            if value is None:
                append(None)
                continue
            append(to_db(update_value(model, name, field, value), model))
    except ValidationError:
        raise
    except Exception as exc:
        raise field_error(model, name, value, exc) from exc
    return out


def _as_dict(repo: BaseRepository[M], item: Any, *, partial: bool) -> Mapping[str, Any]:
    # type() first: isinstance against the Mapping ABC costs ~1 us a row (10 ms in a
    # 10,000-row update_many), a plain dict is what most callers pass.
    if type(item) is dict or isinstance(item, Mapping):
        return item
    if isinstance(item, BaseModel):
        return item.model_dump(exclude_unset=partial)
    raise ValidationError(
        f"Expected a dict or a pydantic model of {repo.model.__name__}, not "
        f"{type(item).__name__}", details={"model": repo.model.__name__})


# -- upsert -------------------------------------------------------------------------------------


def _conflict_names(model: type[Model], conflict: Sequence[str]) -> tuple[str, ...]:
    """The conflict target as field names (``pk`` and ``user`` resolved), checked to be the
    primary key, a unique field or a ``unique_together`` set."""
    meta = model._meta
    if isinstance(conflict, str):
        conflict = [conflict]
    iterable_argument(model, "upsert() conflict", conflict)
    names: list[str] = []
    for key in conflict:
        name = meta.pk_attr if key == "pk" else key
        if name in meta.fk_fields or name in meta.o2o_fields:
            name = str(meta.fields_map[name].source_field)
        if name not in meta.fields_db_projection:
            shown = clip(key) if isinstance(key, str) else repr(key)
            raise ValidationError(
                f"Cannot upsert {model.__name__}: unknown conflict field {shown!r}",
                details={"model": model.__name__, "field": shown})
        names.append(name)
    wanted = set(names)
    uniques = [{meta.pk_attr}] + [{n} for n, f in meta.fields_map.items()
                                  if f.unique and n in meta.fields_db_projection]
    uniques.extend({str(meta.fields_map[g].source_field)
                    if g in meta.fk_fields or g in meta.o2o_fields else g for g in group}
                   for group in meta.unique_together or ())
    if not names or wanted not in uniques:
        raise ValidationError(
            f"Cannot upsert {model.__name__} on ({', '.join(conflict)}): the conflict fields "
            "must be the primary key, a unique field or a unique_together set",
            details={"model": model.__name__, "field": ", ".join(conflict)})
    return tuple(names)


def _update_names(model: type[Model], update: Sequence[str] | None,
                  conflict: tuple[str, ...]) -> tuple[str, ...] | None:
    if update is None:
        return None
    if isinstance(update, str):
        update = [update]
    checked = writable_values(model, dict.fromkeys(update), action="update")
    meta = model._meta
    names = [str(meta.fields_map[n].source_field) if n in meta.fk_fields or n in meta.o2o_fields
             else n for n in checked]
    # auto_now fields move with every update, as update() moves them.
    names += [n for n, f in meta.fields_map.items()
              if getattr(f, "auto_now", False) and n not in names]
    return tuple(n for n in names if n not in conflict)


async def _upsert_columns(repo: BaseRepository[M], items: list[Any]) -> list[_Columns]:
    """The rows as columns: create_many's column-at-a-time conversion where it applies, else
    one model instance per row (``Model.save()``'s preparation), grouped by column set."""
    model = repo.model
    plan = _bulk.bulk_plan(model)
    if not plan.unsupported and all(type(i) is dict for i in items):
        gathered = _create_many.batch_rows(repo, items)
        if gathered is not None:
            rows, is_instance, keysets = gathered
            for keyset in keysets:
                writable_values(model, dict.fromkeys(keyset), action="create")
            if not any(keyset & plan.fallback_keys for keyset in keysets):
                try:
                    batch = _bulk.prepare_batch(plan, rows, is_instance, keysets)
                except _bulk.MissingFieldsError as exc:
                    raise repo._missing(exc.fields) from None
                except _bulk.NeedsRowPath:
                    pass
                else:
                    return [_Columns([c.name for c in batch.sent], batch.arrays,
                                     [(c.name, v) for c, v in batch.scalars],
                                     list(range(len(items))))]
    entities: list[Any] = [item if isinstance(item, Model) else _as_dict(repo, item, partial=False)
                           for item in items]
    instances = [repo._instance(entity) for entity in entities]
    position = {id(instance): i for i, instance in enumerate(instances)}
    groups = await _bulk.prepare_rows(instances)
    return [_Columns(list(names), [list(col) for col in zip(*(v for _, v in rows), strict=True)],
                     [], [position[id(instance)] for instance, _ in rows])
            for names, rows in groups.items()]


def _key_columns(model: type[Model], cols: _Columns, conflict: tuple[str, ...]) -> list[Any]:
    """Each row's conflict key, as Python values (what the returned instances hold)."""
    n = len(cols.positions)
    parts: list[list[Any]] = []
    scalars = dict(cols.scalars)
    fields = model._meta.fields_map
    for name in conflict:
        if name in cols.names:
            values = cols.arrays[cols.names.index(name)]
        elif name in scalars:
            values = [scalars[name]] * n
        else:
            raise ValidationError(
                f"Cannot upsert {model.__name__}: every row needs the conflict field {name!r}",
                details={"model": model.__name__, "field": name})
        field = fields[name]
        parts.append([field.to_python_value(v) for v in values])
    return list(zip(*parts, strict=True))


@lru_cache(maxsize=512)
def _upsert_sql(model: type[Model], dialect: str, names: tuple[str, ...], *,
                scalars: tuple[str, ...], conflict: tuple[str, ...],
                update: tuple[str, ...] | None, nrows: int) -> str:
    """``INSERT ... ON CONFLICT (...) DO UPDATE SET .../DO NOTHING RETURNING <all>[, created]``;
    ``nrows`` only matters on sqlite (one ``VALUES`` group per row)."""
    meta = model._meta
    db = meta.fields_db_projection
    cols = ", ".join(_quote(db[n]) for n in (*names, *scalars))
    if dialect == "postgres":
        types = [_pg_type(model, n) for n in names]
        aliases = [f"c{i}" for i in range(len(names))]
        arrays = ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(types))
        tail = [f"${len(names) + i + 1}::{_pg_type(model, n)}" for i, n in enumerate(scalars)]
        source = (f"SELECT {', '.join([*aliases, *tail])} FROM unnest({arrays}) "  # noqa: S608
                  f"WITH ORDINALITY AS u({', '.join([*aliases, 'ord'])}) ORDER BY ord")
    else:
        one = "(" + ", ".join("?" * (len(names) + len(scalars))) + ")"
        source = "VALUES " + ", ".join([one] * nrows)
    target = ", ".join(_quote(db[n]) for n in conflict)
    if update:
        action = "DO UPDATE SET " + ", ".join(
            f"{_quote(db[n])} = EXCLUDED.{_quote(db[n])}" for n in update)
    else:
        action = "DO NOTHING"
    returning = ", ".join(_quote(c) for c in db.values())
    if dialect == "postgres":
        returning += ", (xmax = 0)"
    return (f"INSERT INTO {_table(model)} ({cols}) {source} "
            f"ON CONFLICT ({target}) {action} RETURNING {returning}")


@lru_cache(maxsize=512)
def _by_keys_sql(model: type[Model], dialect: str, conflict: tuple[str, ...], nrows: int, *,
                 keys_only: bool = False) -> str:
    """``SELECT <all, or the key> FROM t WHERE (key) IN (<the given keys>)``."""
    db = model._meta.fields_db_projection
    columns = ", ".join(_quote(db[n] if keys_only else c)
                        for n, c in (zip(conflict, conflict, strict=True) if keys_only
                                     else db.items()))
    target = ", ".join(_quote(db[n]) for n in conflict)
    if dialect == "postgres":
        arrays = ", ".join(f"${i + 1}::{_pg_type(model, n)}[]" for i, n in enumerate(conflict))
        keys = f"SELECT * FROM unnest({arrays})"  # noqa: S608 - casts of bind parameters
    else:
        keys = "VALUES " + ", ".join(["(" + ", ".join("?" * len(conflict)) + ")"] * nrows)
    return f"SELECT {columns} FROM {_table(model)} WHERE ({target}) IN ({keys})"  # noqa: S608


def _chunks(n: int, width: int, dialect: str) -> Iterable[tuple[int, int]]:
    size = (_bulk.PG_UNNEST_CHUNK if dialect == "postgres"
            else max(1, _bulk.SQLITE_MAX_VARIABLES // max(1, width)))
    for start in range(0, n, size):
        yield start, min(n, start + size)


async def upsert_many(repo: BaseRepository[M], items: Iterable[Any], conflict: Sequence[str],
                      update: Sequence[str] | None) -> list[tuple[M, bool]]:
    """``(instance, created)`` per row, in input order (see the module docstring)."""
    model = repo.model
    iterable_argument(model, "upsert_many() rows", items)
    rows = [item if isinstance(item, Model) or type(item) is dict
            else dict(_as_dict(repo, item, partial=False)) for item in items]
    target = _conflict_names(model, conflict)
    updating = _update_names(model, update, target)
    if not rows:
        return []
    groups = await _upsert_columns(repo, rows)
    for cols in groups:
        refuse_nan_columns(model, cols.names, cols.arrays, repo.session.dialect)
        refuse_nan(model, dict(cols.scalars), repo.session.dialect)
    keyed = [(cols, _key_columns(model, cols, target)) for cols in groups]
    seen: dict[Any, int] = {}
    for cols, keys in keyed:
        for position, key in zip(cols.positions, keys, strict=True):
            if seen.setdefault(key, position) != position:
                raise ValidationError(
                    f"Cannot upsert {model.__name__}: rows {seen[key]} and {position} have the "
                    f"same {', '.join(target)} {key if len(key) > 1 else key[0]!r}",
                    details={"model": model.__name__, "field": ", ".join(target)})
    out: list[tuple[M, bool] | None] = [None] * len(rows)
    async with repo.session.savepoint():
        for cols, keys in keyed:
            found = await _upsert_group(repo, cols, keys, target, updating)
            for position, key in zip(cols.positions, keys, strict=True):
                out[position] = found[key]
    return [item for item in out if item is not None]


async def _upsert_group(repo: BaseRepository[M], cols: _Columns, keys: list[Any],
                        target: tuple[str, ...], update: tuple[str, ...] | None
                        ) -> dict[Any, tuple[M, bool]]:
    model = repo.model
    session = repo.session
    conn = session.connection
    dialect = session.dialect
    build = _reads.rows_of(repo).build
    names = tuple(cols.names)
    scalar_names = tuple(name for name, _ in cols.scalars)
    scalar_values = [value for _, value in cols.scalars]
    key_index = [cols.names.index(n) if n in cols.names else None for n in target]
    scalars = dict(cols.scalars)
    found: dict[Any, tuple[M, bool]] = {}
    width = len(names) + len(scalar_names)
    for start, end in _chunks(len(keys), width, dialect):
        key_params = [cols.arrays[i][start:end] if i is not None else [scalars[n]] * (end - start)
                      for i, n in zip(key_index, target, strict=True)]
        existing: set[Any] = set()
        if dialect != "postgres":
            # DO UPDATE returns every row: only the existing keys are needed first.
            sql = _by_keys_sql(model, dialect, target, end - start, keys_only=bool(update))
            flat = [v for row in zip(*key_params, strict=True) for v in row]
            records = await fetch_rows(conn, sql, flat)
            if update:
                fields = [model._meta.fields_map[n] for n in target]
                existing.update(tuple(f.to_python_value(v) for f, v in zip(fields, record,
                                                                           strict=True))
                                for record in records)
            else:
                for obj in build(records):
                    key = tuple(getattr(obj, n) for n in target)
                    existing.add(key)
                    found[key] = (obj, False)
        sql = _upsert_sql(model, dialect, names, scalars=scalar_names, conflict=target,
                          update=update, nrows=end - start if dialect != "postgres" else 0)
        arrays = [array[start:end] for array in cols.arrays]
        if dialect == "postgres":
            records = await fetch_rows(conn, sql, [*arrays, *scalar_values])
            flags = [record[-1] for record in records]
            records = [record[:-1] for record in records]
        else:
            params = [v for row in zip(*arrays, strict=True) for v in (*row, *scalar_values)]
            records = await fetch_rows(conn, sql, params)
            flags = []
        for i, obj in enumerate(build(records)):
            key = tuple(getattr(obj, n) for n in target)
            found[key] = (obj, bool(flags[i]) if flags else key not in existing)
        if dialect == "postgres" and update is None:
            missing = [j for j in range(start, end) if keys[j] not in found]
            if missing:
                sql = _by_keys_sql(model, dialect, target, 0)
                params = [[p[j - start] for j in missing] for p in key_params]
                for obj in build(await fetch_rows(conn, sql, params)):
                    found[tuple(getattr(obj, n) for n in target)] = (obj, False)
    return found


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

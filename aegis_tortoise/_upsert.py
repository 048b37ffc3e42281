"""``upsert``/``upsert_many``: ``INSERT ... ON CONFLICT (key) DO UPDATE SET ... RETURNING``.

PostgreSQL sends the rows as one array per column (``SELECT ... FROM unnest(...)``, as
create_many) and tells an inserted row by ``xmax = 0`` (a row version no transaction has
locked or updated: the one this INSERT made). ``DO NOTHING`` returns only the inserted rows;
the existing ones are read in a second statement by their keys. sqlite has no ``xmax``: the
existing keys are read first (one ``SELECT ... WHERE key IN (VALUES ...)``), which on
sqlite's single in-process connection costs less than any RETURNING trick and is exact
(nothing else writes in between). Every call with more than one statement runs in a
savepoint. :mod:`aegis_tortoise._writes` re-exports ``upsert_many``, ``_conflict_names`` and
``_update_names``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, TypeVar

from tortoise.models import Model

from aegis_tortoise import _bulk, _create_many, _reads
from aegis_tortoise._bulk import _pg_type, _quote, _table, fetch_rows
from aegis_tortoise._columns import _as_dict, _chunks
from aegis_tortoise._filters import clip, writable_values
from aegis_tortoise._values import iterable_argument, refuse_nan, refuse_nan_columns
from aegis_tortoise.errors import ValidationError

if TYPE_CHECKING:
    from aegis_tortoise.repository import BaseRepository

__all__ = ["_conflict_names", "_update_names", "upsert_many"]

M = TypeVar("M", bound=Model)


@dataclass(slots=True)
class _Columns:
    """Rows as database values a column at a time, and where they came from."""

    names: list[str]                # field names sent per row
    arrays: list[list[Any]]         # their database values, one list per name
    scalars: list[tuple[str, Any]]  # (field name, database value) the same for every row
    positions: list[int]            # the input position of each row


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



"""Multi-row INSERT that returns the generated primary keys (``BaseRepository.create_many``).

Tortoise 1.1.9's ``bulk_create`` sets no primary keys and its batches are not atomic. Here:

- PostgreSQL: one statement per chunk,
  ``INSERT INTO t (a, b) SELECT a, b FROM unnest($1::VARCHAR(255)[], $2::INT[])
  WITH ORDINALITY AS u(a, b, ord) ORDER BY ord RETURNING id``: one bind parameter per column
  whatever the number of rows, array casts taken from the Tortoise field's PostgreSQL type.
- sqlite (>= 3.35 for RETURNING): ``INSERT INTO t (a, b) VALUES (?, ?), (?, ?) RETURNING id``,
  chunked under sqlite's 32766 bind-variable limit. PostgreSQL falls back to this form (under
  its 32767 limit) when a column is itself an array, which ``unnest`` would flatten.

Rows are inserted in input order (``ORDER BY ord`` / ``VALUES`` order), so the generated keys
increase in input order: sorting the returned keys maps them back to the instances whatever
order the server returns them in. The caller runs this inside a savepoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from tortoise.fields.base import DatabaseDefault
from tortoise.models import Model

if TYPE_CHECKING:
    from aegis_tortoise.session import Session

__all__ = ["Rows", "insert_rows", "prepare_rows"]

#: Rows per statement on PostgreSQL's unnest path (bounds the size of one message).
PG_UNNEST_CHUNK = 10_000
#: Bind-variable limits: sqlite's SQLITE_MAX_VARIABLE_NUMBER (>= 3.32), asyncpg's int16.
SQLITE_MAX_VARIABLES = 32_766
PG_MAX_VARIABLES = 32_767

_SERIAL_TYPES = {"SERIAL": "INT", "BIGSERIAL": "BIGINT", "SMALLSERIAL": "SMALLINT"}


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _table(model: type[Model]) -> str:
    meta = model._meta
    table = _quote(meta.db_table)
    return f"{_quote(meta.schema)}.{table}" if meta.schema else table


def _pg_type(model: type[Model], field_name: str) -> str:
    field = model._meta.fields_map[field_name]
    sql_type = str(field.get_for_dialect("postgres", "SQL_TYPE")).strip()
    return _SERIAL_TYPES.get(sql_type.upper(), sql_type)


async def _prepare(instance: Model) -> tuple[tuple[str, ...], list[Any]]:
    """The columns (field names) to insert for ``instance`` and their database values.

    Fills what ``Model.save()`` would: async defaults now, ``auto_now``/``auto_now_add``
    through ``to_db_value`` (which also runs the field validators).
    """
    meta = instance._meta
    await instance._set_async_default_field()
    columns: list[str] = []
    values: list[Any] = []
    for name in meta.fields_db_projection:
        field = meta.fields_map[name]
        value = getattr(instance, name)
        if field.generated and value is None:
            continue  # the database generates it
        if isinstance(value, DatabaseDefault):
            continue  # DEFAULT: leave the column out
        columns.append(name)
        values.append(field.to_db_value(value, instance))
    return tuple(columns), values


#: Instances with their database values, grouped by the columns they insert.
Rows = dict[tuple[str, ...], list[tuple[Model, list[Any]]]]


async def prepare_rows(instances: Sequence[Model]) -> Rows:
    """Compute every instance's database values (no SQL; field validators run here)."""
    groups: Rows = {}
    for instance in instances:
        columns, values = await _prepare(instance)
        groups.setdefault(columns, []).append((instance, values))
    return groups


async def insert_rows(session: Session, model: type[Model], groups: Rows) -> None:
    """INSERT the prepared rows and set the instances' generated primary keys."""
    for columns, rows in groups.items():
        await _insert_group(session, model, columns, rows)
    for rows in groups.values():
        for instance, _ in rows:
            instance._saved_in_db = True


async def _insert_group(session: Session, model: type[Model], columns: tuple[str, ...],
                        rows: list[tuple[Model, list[Any]]]) -> None:
    meta = model._meta
    pk_name = meta.pk_attr
    returning = meta.pk.generated and pk_name not in columns
    db_columns = [meta.fields_db_projection[c] for c in columns]
    conn = session.connection
    if session.dialect == "postgres":
        types = [_pg_type(model, c) for c in columns]
        if not any(t.endswith("]") for t in types):
            for start in range(0, len(rows), PG_UNNEST_CHUNK):
                chunk = rows[start:start + PG_UNNEST_CHUNK]
                sql = _unnest_sql(model, db_columns, types, returning=returning)
                arrays = [[values[i] for _, values in chunk] for i in range(len(columns))]
                result = await conn.execute_query_dict(sql, arrays)
                _assign(model, chunk, result, returning=returning)
            return
        limit, placeholder = PG_MAX_VARIABLES, "$"
    else:
        limit, placeholder = SQLITE_MAX_VARIABLES, "?"
    per_chunk = max(1, limit // max(1, len(columns)))
    for start in range(0, len(rows), per_chunk):
        chunk = rows[start:start + per_chunk]
        sql = _values_sql(model, db_columns, len(chunk), placeholder, returning=returning)
        params = [value for _, values in chunk for value in values]
        result = await conn.execute_query_dict(sql, params)
        _assign(model, chunk, result, returning=returning)


def _returning_sql(model: type[Model], returning: bool) -> str:
    return f" RETURNING {_quote(model._meta.db_pk_column)}" if returning else ""


def _unnest_sql(model: type[Model], db_columns: list[str], types: list[str], *,
                returning: bool) -> str:
    cols = ", ".join(_quote(c) for c in db_columns)
    aliases = [f"c{i}" for i in range(len(db_columns))]
    arrays = ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(types))
    # Identifiers come from the model's metadata, values are bind parameters.
    return (f"INSERT INTO {_table(model)} ({cols}) SELECT {', '.join(aliases)} "  # noqa: S608
            f"FROM unnest({arrays}) WITH ORDINALITY AS u({', '.join(aliases)}, ord) "
            f"ORDER BY ord{_returning_sql(model, returning)}")


def _values_sql(model: type[Model], db_columns: list[str], nrows: int, placeholder: str, *,
                returning: bool) -> str:
    cols = ", ".join(_quote(c) for c in db_columns)
    width = len(db_columns)
    if placeholder == "$":
        groups = (", ".join(f"${r * width + i + 1}" for i in range(width)) for r in range(nrows))
    else:
        one = ", ".join("?" * width)
        groups = (one for _ in range(nrows))
    values = ", ".join(f"({g})" for g in groups)
    returning_sql = _returning_sql(model, returning)
    return f"INSERT INTO {_table(model)} ({cols}) VALUES {values}{returning_sql}"  # noqa: S608


def _assign(model: type[Model], chunk: list[tuple[Model, list[Any]]],
            result: list[dict[str, Any]], *, returning: bool) -> None:
    if not returning:
        return
    column = model._meta.db_pk_column
    pk_field = model._meta.pk
    keys = sorted(row[column] for row in result)
    if len(keys) != len(chunk):  # pragma: no cover - the server inserted every row or raised
        raise RuntimeError(f"INSERT returned {len(keys)} keys for {len(chunk)} rows")
    for (instance, _), key in zip(chunk, keys, strict=True):
        instance.pk = pk_field.to_python_value(key)


@lru_cache(maxsize=512)
def select_by_pk_sql(model: type[Model], dialect: str, soft_field: str,
                     where_null: bool | None) -> str:
    """``SELECT <every column> FROM t WHERE pk = $1 [AND soft IS [NOT] NULL] LIMIT 1``.

    Built once per model: Tortoise 1.1.9 clones a QuerySet and renders pypika per call,
    which was most of get_by_id's CPU (bench/README.md, "Where E's time goes").
    """
    meta = model._meta
    columns = ",".join(_quote(c) for c in meta.fields_db_projection.values())
    mark = "$1" if dialect == "postgres" else "?"
    # Identifiers come from the model and are quoted; every value is a parameter.
    return (f"SELECT {columns} FROM {_table(model)} "  # noqa: S608
            f"WHERE {_quote(meta.db_pk_column)}={mark}"
            f"{_null_clause(model, soft_field, where_null)} LIMIT 1")


@lru_cache(maxsize=1024)
def update_by_pk_sql(model: type[Model], dialect: str, columns: tuple[str, ...],
                     soft_field: str, where_null: bool | None) -> str:
    """``UPDATE t SET c1 = $1, ... WHERE pk = $n [AND ...] RETURNING <every column>``."""
    meta = model._meta
    if dialect == "postgres":
        sets = ",".join(f"{_quote(c)}=${i}" for i, c in enumerate(columns, 1))
        mark = f"${len(columns) + 1}"
    else:
        sets = ",".join(f"{_quote(c)}=?" for c in columns)
        mark = "?"
    returning = ",".join(_quote(c) for c in meta.fields_db_projection.values())
    return (f"UPDATE {_table(model)} SET {sets} "  # noqa: S608 - quoted identifiers only
            f"WHERE {_quote(meta.db_pk_column)}={mark}"
            f"{_null_clause(model, soft_field, where_null)} RETURNING {returning}")


def _null_clause(model: type[Model], soft_field: str, where_null: bool | None) -> str:
    if where_null is None:
        return ""
    column = _quote(model._meta.fields_db_projection[soft_field])
    return f" AND {column} IS {'NULL' if where_null else 'NOT NULL'}"

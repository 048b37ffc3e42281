"""Keyset pagination: ``paginate_keyset``, and the batches of a readonly sqlite ``iterate``.

A page is ``WHERE <filters> AND <after the cursor> ORDER BY <ordering>, pk LIMIT n + 1``: the
server seeks to the cursor's position in an index over the ordering instead of reading and
dropping the rows before it, so a page costs the same at any depth (OFFSET reads them all).
"After the cursor" is a row-value comparison, ``(a, b, id) > ($1, $2, $3)``, when every column
sorts the same way and none may be NULL (PostgreSQL and sqlite both seek an index with it),
else the expanded form ``(a > $1) OR (a = $1 AND b < $2) OR ...``, led by ``a >= $1`` when
``a`` is NOT NULL so that the index scan stays bounded.

NULLs sort where Tortoise's ``order_by`` puts them, the backend's default: PostgreSQL sorts
them after every value (last ascending, first descending), sqlite before every value.

Filters the cached SQL cannot express run through Tortoise: the page is then
``WHERE pk IN (<the QuerySet's SELECT pk>) AND <after the cursor>``, so the position is
compared in SQL written here on both paths.

The position is the ordering columns of the page's last row as the driver returned them
(:mod:`aegis_tortoise._cursor`): sent back unchanged they compare exactly as stored (an
aware timestamp, sqlite's stored text), whatever ``use_tz``, ``timezone`` and the process
time zone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any, TypeVar

from tortoise.models import Model

from aegis_tortoise import _cursor, _reads
from aegis_tortoise import _select as _sql
from aegis_tortoise._bulk import _quote, _table, fetch_rows
from aegis_tortoise._filters import order_by_fields
from aegis_tortoise.errors import InvalidFilterError, ValidationError
from aegis_tortoise.models import KeysetPage

if TYPE_CHECKING:
    from aegis_tortoise.repository import BaseRepository

__all__ = ["Source", "keyset_ordering", "keyset_sql", "order_sql", "paginate_keyset",
           "source_of"]

M = TypeVar("M", bound=Model)

#: The rows a walk covers: a SQL condition (``""``: every row) and its parameters, which
#: come first in every statement built on it.
Source = tuple[str, list[Any]]


def keyset_ordering(model: type[Model], order_by: str | Sequence[str] | None, *,
                    what: str = "paginate_keyset") -> tuple[str, ...]:
    """The validated ordering, the primary key appended as the tie-breaker.

    Raises:
        InvalidFilterError: a field that is not a column of the model itself (a related
            field), or a JSON or array column; ``what`` names the caller in the message.
    """
    fields = order_by_fields(model, order_by)
    meta = model._meta
    names: list[str] = []
    for item in fields:
        name = item.lstrip("-")
        field = meta.fields_map.get(name)
        if (field is None or name not in meta.fields_db_projection
                or not _sql._plain_column(field, "postgres")):
            raise InvalidFilterError(
                f"{what} cannot order {model.__name__} by {name!r}: it orders by columns of "
                "the model itself, not related, JSON or array fields",
                details={"model": model.__name__, "field": name})
        names.append(item)
    if meta.pk_attr not in (n.lstrip("-") for n in names):
        names.append(meta.pk_attr)
    return tuple(names)


def source_of(repo: BaseRepository[Any], filters: Mapping[str, Any] | None,
              include_deleted: bool) -> Source:
    """The rows ``filters`` select, as ``query()`` narrowed by them would.

    Raises:
        InvalidFilterError: as ``BaseRepository._where`` would, before any SQL.
    """
    model = repo.model
    dialect = repo.session.dialect
    plain = _reads.plain_where(repo, filters, include_deleted)
    if plain is not None:
        kwargs, shape = plain
        where, _ = _sql._where(model, dialect, shape)
        return where[len(" WHERE "):], _sql.params_for(model, shape, kwargs)
    meta = model._meta
    inner: Any = repo._where(filters, include_deleted=include_deleted).values_list(
        meta.pk_attr, flat=True)
    # Tortoise 1.1.9 internals (what QuerySet.sql() does): the query and its bound values.
    inner._choose_db_if_not_chosen()
    inner._make_query()
    sql, params = inner.query.get_parameterized_sql()
    return f"{_table(model)}.{_quote(meta.db_pk_column)} IN ({sql})", list(params)


def _cast(model: type[Model], dialect: str, name: str, term: str) -> str:
    """``term`` as Tortoise compares and sorts the field: Tortoise 1.1.9 orders a
    DecimalField on sqlite by ``CAST(col AS NUMERIC)`` (its only ``function_cast``; as
    stored text, 9.00 > 10.00). The cursor's value (stored text) gets the same cast."""
    if model._meta.fields_map[name].get_for_dialect(dialect, "function_cast") is not None:
        return f"CAST({term} AS NUMERIC)"
    return term


def _column(model: type[Model], dialect: str, name: str) -> str:
    column = f"{_table(model)}.{_quote(model._meta.fields_db_projection[name])}"
    return _cast(model, dialect, name, column)


def order_sql(model: type[Model], dialect: str, ordering: tuple[str, ...]) -> str:
    """``a ASC, b DESC, ...``, as Tortoise's ``order_by`` renders it (NULLs where the
    backend puts them)."""
    return ", ".join(f"{_column(model, dialect, o.lstrip('-'))} "
                     f"{'DESC' if o.startswith('-') else 'ASC'}" for o in ordering)


@lru_cache(maxsize=1024)
def keyset_sql(model: type[Model], dialect: str, where: str, count: int, *,
               ordering: tuple[str, ...], columns_sql: str,
               nulls: tuple[bool, ...] | None) -> str:
    """``SELECT <columns> FROM t WHERE <where> [AND <after>] ORDER BY <ordering> LIMIT n``.

    ``where`` has ``count`` parameters; then come the non-NULL values of the position
    (``nulls[i]``: the position's value i is NULL; ``nulls`` None: the first page), then
    the limit.
    """
    pg = dialect == "postgres"

    def mark(i: int) -> str:
        # sqlite's ?NNN numbers a value so it may appear twice (the expanded form).
        return f"${i}" if pg else f"?{i}"

    fields = model._meta.fields_map
    terms = [f"({where})"] if where else []
    if nulls is not None:
        columns = [_column(model, dialect, o.lstrip("-")) for o in ordering]
        nullable = [fields[o.lstrip("-")].null for o in ordering]
        descending = [o.startswith("-") for o in ordering]
        marks: list[str | None] = []
        for is_null in nulls:
            if is_null:
                marks.append(None)
            else:
                count += 1
                marks.append(_cast(model, dialect, ordering[len(marks)].lstrip("-"),
                                   mark(count)))
        if not any(nullable) and len(set(descending)) == 1:
            op = "<" if descending[0] else ">"
            terms.append(f"({', '.join(columns)}) {op} ({', '.join(str(m) for m in marks)})")
        else:
            terms.append(_expanded(columns, marks, nullable, descending, nulls_high=pg))
    order = order_sql(model, dialect, ordering)
    where_sql = f" WHERE {' AND '.join(terms)}" if terms else ""
    return (f"SELECT {columns_sql} FROM {_table(model)}{where_sql} "  # noqa: S608 - quoted
            f"ORDER BY {order} LIMIT {mark(count + 1)}")


def _expanded(columns: list[str], marks: list[str | None], nullable: list[bool],
              descending: list[bool], *, nulls_high: bool) -> str:
    """``(c0 after v0) OR (c0 = v0 AND c1 after v1) OR ...`` with NULLs placed as the
    backend sorts them (``nulls_high``: after every value, as PostgreSQL)."""

    def equal(column: str, value: str | None) -> str:
        return f"{column} IS NULL" if value is None else f"{column} = {value}"

    def after(column: str, value: str | None, null: bool, desc: bool) -> str | None:
        # NULL is the largest value when nulls_high, else the smallest; "after" is "larger"
        # ascending and "smaller" descending.
        nulls_after = nulls_high != desc
        if value is None:
            return None if nulls_after else f"{column} IS NOT NULL"
        step = f"{column} {'<' if desc else '>'} {value}"
        return f"({step} OR {column} IS NULL)" if null and nulls_after else step

    ors: list[str] = []
    for i, column in enumerate(columns):
        step = after(column, marks[i], nullable[i], descending[i])
        if step is not None:
            ors.append("(" + " AND ".join([*(equal(columns[j], marks[j]) for j in range(i)),
                                           step]) + ")")
    condition = f"({' OR '.join(ors)})" if ors else "(1 = 0)"
    if not nullable[0] and marks[0] is not None:
        lead = f"{columns[0]} {'<=' if descending[0] else '>='} {marks[0]}"
        condition = f"{lead} AND {condition}"
    return condition


def position_of(record: Any, indexes: Sequence[int]) -> list[Any]:
    """The ordering columns of a fetched row, as the driver returned them."""
    return [record[i] for i in indexes]


def ordering_indexes(model: type[Model], ordering: tuple[str, ...]) -> list[int]:
    """Where the ordering columns are in a row of the full select list."""
    attrs = list(model._meta.fields_db_projection)
    return [attrs.index(o.lstrip("-")) for o in ordering]


async def fetch_after(repo: BaseRepository[Any], source: Source, ordering: tuple[str, ...],
                      position: list[Any] | None, limit: int) -> list[Any]:
    """Up to ``limit`` raw rows of ``source`` after ``position`` (raw ordering values)."""
    model: type[Model] = repo.model
    where, params = source
    rows = _reads.rows_of(repo)
    nulls = None if position is None else tuple(v is None for v in position)
    sql = keyset_sql(model, repo.session.dialect, where, len(params), ordering=ordering,
                     columns_sql=rows.columns_sql, nulls=nulls)
    values = list(params)
    if position is not None:
        values.extend(v for v in position if v is not None)
    values.append(limit)
    return await fetch_rows(repo.session.connection, sql, values)


async def paginate_keyset(repo: BaseRepository[M], *, limit: int,
                          order_by: str | Sequence[str] | None,
                          filters: Mapping[str, Any] | None, after: str | None,
                          include_deleted: bool) -> KeysetPage[M]:
    """One page after the cursor ``after`` (the first page when None)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValidationError(f"limit must be an integer >= 1, got {limit!r}",
                              details={"field": "limit"})
    ordering = keyset_ordering(repo.model, order_by)
    source = source_of(repo, filters, include_deleted)
    digest = _cursor.filters_digest(filters, include_deleted)
    position = None if after is None else _cursor.decode(repo, ordering, digest, after)
    # LIMIT limit + 1 tells whether a next page exists; it must stay a 64-bit integer.
    records = await fetch_after(repo, source, ordering, position, min(limit, 2**62) + 1)
    has_next = len(records) > limit
    if has_next:
        del records[limit:]
    items: list[M] = _reads.rows_of(repo).build(records)
    cursor = None
    if has_next:
        last = position_of(records[-1], ordering_indexes(repo.model, ordering))
        cursor = _cursor.encode(repo, ordering, digest, last)
    return KeysetPage[M](items=items, next_cursor=cursor, has_next=has_next)

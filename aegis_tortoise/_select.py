"""Reads without the QuerySet: SQL built once per query shape, rows turned into instances fast.

Tortoise 1.1.9 builds and renders a QuerySet (pypika) on every call and turns every row into
an instance through ``Model._init_from_db`` (``to_python_value`` per datetime, four
``__setattr__`` calls): for a 50-row page that is ~260 us of building and ~160 us of rows on
top of the query itself, for 100 users with 1,000 policies ~2.3 ms and ~5.3 ms
(bench/README.md, "Where E's time goes"). For the plain shapes the repository sends most,

- filters on the model's own columns with ``=``, ``IS [NOT] NULL``, ``<``/``<=``/``>``/``>=``
  and, on PostgreSQL, ``IN`` (sent as ``= ANY($n::TYPE[])``: one statement text whatever the
  number of values),
- an ORDER BY on the model's own columns, LIMIT/OFFSET,
- prefetching a reverse foreign key (``policies`` of a ``User``),

the SQL is built once per shape (``lru_cache``) and only the values are converted per call,
as Tortoise would convert them (``field.to_db_value``). Everything else (text lookups, filters
across relations, ``Prefetch`` objects, models with a default ordering, JSON and array fields)
takes Tortoise's QuerySet path, so results never depend on which path ran.
"""

from __future__ import annotations

import datetime as dt
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from pypika_tortoise.terms import Term
from tortoise import timezone
from tortoise.exceptions import ValidationError as TortoiseValidationError
from tortoise.expressions import Expression
from tortoise.fields.base import Field
from tortoise.fields.data import DatetimeField, JSONField
from tortoise.filters import is_in, is_null
from tortoise.filters import not_null as is_not_null
from tortoise.manager import Manager
from tortoise.models import Model

from aegis_tortoise import _collector
from aegis_tortoise._bulk import _pg_type, _quote, _table
from aegis_tortoise._values import field_error

__all__ = ["PrefetchPlan", "RowPlan", "Shape", "count_sql", "orderable", "params_for",
           "plain_model", "prefetch_plan", "row_plan", "select_sql", "shape_of"]

# Tortoise's filter operators this module renders itself, with their SQL.
_OPERATORS: dict[Callable[..., Any], str] = {
    operator.eq: "=", operator.gt: ">", operator.ge: ">=", operator.lt: "<", operator.le: "<=",
    is_in: "IN", is_null: "IS NULL", is_not_null: "IS NOT NULL",
}
_UTC = dt.UTC


# -- rows -> instances ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RowPlan:
    """How one model's rows become instances, for one dialect's native types."""

    model: type[Model]
    #: The select list (every column, in ``fields_db_projection`` order), quoted.
    columns_sql: str
    #: The attribute each selected column goes to, in the same order.
    attrs: tuple[str, ...]
    #: The builder compiled for this plan's columns (:func:`_compile_builder`).
    builder: Callable[[Iterable[Any], bool, dt.tzinfo], list[Any]]

    def build(self, records: Sequence[Any]) -> list[Any]:
        """Instances for ``records`` (asyncpg Records or sqlite rows, in select-list order).

        The same instances ``Model._init_from_db(**row)`` builds in Tortoise 1.1.9: the same
        conversions per column kind (native, ``field_type(value)``, ``to_python_value``),
        ``_partial``/``_saved_in_db``/``_custom_generated_pk``/``_await_when_save`` set, without
        a ``__setattr__`` call per attribute; the collector paused for large batches
        (:mod:`aegis_tortoise._collector`).
        """
        use_tz, zone = timezone.get_use_tz(), timezone.get_default_timezone()
        if len(records) < _collector.PAUSE_FROM:  # most reads: no context manager to enter
            return self.builder(records, use_tz, zone)
        with _collector.paused(len(records)):
            return self.builder(records, use_tz, zone)


def _compile_builder(model: type[Model], attrs: tuple[str, ...],
                     plain: tuple[tuple[int, type], ...], datetimes: tuple[int, ...],
                     complex_fields: tuple[tuple[int, Field[Any]], ...],
                     ) -> Callable[[Iterable[Any], bool, dt.tzinfo], list[Any]]:
    """A loop written out for this model's columns: each row unpacked into locals, each
    column's conversion inlined, the instance's ``__dict__`` filled from one dict display.

    Why generated code: a loop over the plan's tuples (``values = list(row)``, a ``for``
    per column kind, ``zip`` into the dict) cost 5.7 us a row for the example ``User`` on
    the bench machine; this costs 2.4 us (``bench/README.md``, "Rows to objects"). Only
    attribute names (as ``repr`` literals) and generated local names enter the source; the
    converters are passed in the namespace.
    """
    meta = model._meta
    env: dict[str, Any] = {
        "_new": model.__new__, "_model": model, "_datetime": dt.datetime,
        "_custom_pk": meta.db_pk_column not in meta.generated_db_fields,
    }
    kinds = dict(plain)
    converters = dict(complex_fields)
    fields = meta.fields_map
    items: list[str] = []
    for i, attr in enumerate(attrs):
        v = f"v{i}"
        if i in kinds:
            env[f"k{i}"] = kinds[i]
            expr = f"{v} if {v} is None or type({v}) is k{i} else k{i}({v})"
        elif i in datetimes:
            # DatetimeField.to_python_value's aware-datetime branch inlined; the rest
            # (naive values, text on sqlite, use_tz=False) through the field itself.
            env[f"p{i}"] = fields[attr].to_python_value
            expr = (f"{v} if {v} is None else {v}.astimezone(zone) if use_tz and "
                    f"type({v}) is _datetime and {v}.tzinfo is not None else p{i}({v})")
        elif i in converters:
            env[f"p{i}"] = converters[i].to_python_value
            expr = f"p{i}({v})"
        else:
            expr = v
        items.append(f"{attr!r}: {expr}")
    items += ["'_partial': False", "'_saved_in_db': True", "'_custom_generated_pk': _custom_pk",
              "'_await_when_save': {}"]
    unpack = ", ".join(f"v{i}" for i in range(len(attrs))) + ","
    source = "\n".join([
        "def build(records, use_tz, zone):",
        "    out = []",
        "    append = out.append",
        f"    for ({unpack}) in records:",
        "        obj = _new(_model)",
        "        obj.__dict__.update({" + ", ".join(items) + "})",
        "        append(obj)",
        "    return out",
    ])
    exec(compile(source, f"<aegis_tortoise row builder {model.__name__}>", "exec"), env)  # noqa: S102
    builder: Callable[[Iterable[Any], bool, dt.tzinfo], list[Any]] = env["build"]
    return builder


@lru_cache(maxsize=512)
def row_plan(model: type[Model], native: frozenset[type]) -> RowPlan:
    """The :class:`RowPlan` of ``model`` (cached) for a dialect whose driver returns
    ``native`` types as they are (the executor's ``DB_NATIVE``)."""
    meta = model._meta
    attrs = tuple(meta.fields_db_projection)
    plain: list[tuple[int, type]] = []
    datetimes: list[int] = []
    complex_fields: list[tuple[int, Field[Any]]] = []
    base_convert = Field.to_python_value
    for position, name in enumerate(attrs):
        field = meta.fields_map[name]
        default_converter = type(field).to_python_value is base_convert
        # Model._meta._generate_db_fields's split, Tortoise 1.1.9. Except float: sqlite's
        # RETURNING gives a REAL column's integral value as int (0, not 0.0), which a SELECT
        # never does; float(value) for those (a type check per value otherwise).
        if (field.field_type in native and field.field_type is not float
                and (default_converter or field.skip_to_python_if_native)):
            continue
        if default_converter:
            plain.append((position, field.field_type))
        elif type(field).to_python_value is DatetimeField.to_python_value:
            datetimes.append(position)
        else:
            complex_fields.append((position, field))
    columns = ",".join(_quote(c) for c in meta.fields_db_projection.values())
    builder = _compile_builder(model, attrs, tuple(plain), tuple(datetimes),
                               tuple(complex_fields))
    return RowPlan(model, columns, attrs, builder)


# -- query shapes ------------------------------------------------------------------------------


def plain_model(model: type[Model]) -> bool:
    """Whether ``Model.all()`` is the plain table: no custom ``Meta.manager``, whose
    ``get_queryset()`` may filter or annotate every query (Tortoise 1.1.9)."""
    return type(model._meta.manager) is Manager


@lru_cache(maxsize=4096)
def _plain_column(field: Field[Any], dialect: str) -> bool:
    """A column the SQL here may compare and sort as it is: not JSON, not an array, and no
    ``function_cast`` for the dialect (Tortoise 1.1.9 wraps a DecimalField on sqlite in
    ``CAST(col AS NUMERIC)``; compared as stored text, 9.00 > 10.00)."""
    if isinstance(field, JSONField):
        return False
    if str(field.get_for_dialect("postgres", "SQL_TYPE")).strip().endswith("]"):
        return False
    return field.get_for_dialect(dialect, "function_cast") is None


_TYPMOD = re.compile(r"\s*\(.*\)\s*$")


def _array_type(model: type[Model], name: str) -> str:
    """The PostgreSQL array element type for ``= ANY($n::T[])``, without a type modifier: a
    cast to ``DECIMAL(10,2)`` or ``VARCHAR(20)`` would round or cut the caller's values
    before the comparison (a column compared with ``= $n`` is never cast that way)."""
    base = _TYPMOD.sub("", _pg_type(model, name))
    return "BPCHAR" if base.upper() in ("CHAR", "CHARACTER") else base

#: One filter term: (field name, SQL operator). A shape is a tuple of them, in filter order.
Shape = tuple[tuple[str, str], ...]


def shape_of(model: type[Model], kwargs: Mapping[str, Any], dialect: str) -> Shape | None:
    """The shape of validated ``QuerySet.filter`` kwargs, or None when the QuerySet must run.

    Only filters whose Tortoise filter info is a plain operator on the model's own column
    qualify (no joins, no value encoder other than Tortoise's list/bool ones, no JSON or
    array field); ``IN`` needs a non-empty list and PostgreSQL.
    """
    meta = model._meta
    shape: list[tuple[str, str]] = []
    for key, value in kwargs.items():
        name = key.split("__", 1)[0]
        field = meta.fields_map.get(name)
        if field is None or name not in meta.fields_db_projection:
            return None
        if not _plain_column(field, dialect):
            return None
        if isinstance(value, Expression | Term):
            return None  # F("other"), Subquery(...): Tortoise renders those
        info: Mapping[str, Any] = meta.get_filter(key)
        sql = _OPERATORS.get(info.get("operator"))  # type: ignore[arg-type]
        if (sql is None or "table" in info or info.get("field") != name
                or info.get("source_field") != meta.fields_db_projection[name]):
            return None
        if sql == "IN":
            if dialect != "postgres" or not isinstance(value, list | tuple | set | frozenset):
                return None
            if not value:
                return None  # Tortoise renders an always-false term for an empty list
        elif sql in ("IS NULL", "IS NOT NULL"):
            if not isinstance(value, bool):
                return None
            if not value:  # isnull=False
                sql = "IS NOT NULL" if sql == "IS NULL" else "IS NULL"
        elif "value_encoder" in info or value is None:
            return None
        shape.append((name, sql))
    return tuple(shape)


def params_for(model: type[Model], shape: Shape, kwargs: Mapping[str, Any]) -> list[Any]:
    """The bind values of ``kwargs`` for ``shape``, converted as Tortoise converts them."""
    fields = model._meta.fields_map
    params: list[Any] = []
    try:
        for (name, sql), value in zip(shape, kwargs.values(), strict=True):
            if sql in ("IS NULL", "IS NOT NULL"):
                continue
            field = fields[name]
            if sql == "IN":
                params.append([field.to_db_value(v, model) for v in value])
            else:
                params.append(field.to_db_value(value, model))
    except TortoiseValidationError:
        raise  # a field validator's: the repository's translation names the field
    except Exception as exc:
        raise field_error(model, name, value, exc) from exc
    return params


def _where(model: type[Model], dialect: str, shape: Shape) -> tuple[str, int]:
    columns = model._meta.fields_db_projection
    terms: list[str] = []
    count = 0
    for name, sql in shape:
        column = _quote(columns[name])
        if sql in ("IS NULL", "IS NOT NULL"):
            terms.append(f"{column} {sql}")
            continue
        count += 1
        mark = f"${count}" if dialect == "postgres" else "?"
        if sql == "IN":
            terms.append(f"{column}=ANY({mark}::{_array_type(model, name)}[])")
        else:
            terms.append(f"{column}{sql}{mark}")
    return (" WHERE " + " AND ".join(terms) if terms else ""), count


@lru_cache(maxsize=2048)
def select_sql(model: type[Model], dialect: str, shape: Shape, ordering: tuple[str, ...],
               columns_sql: str, *, limit: bool, offset: bool) -> str:
    """``SELECT <columns> FROM t [WHERE ...] ORDER BY ... [LIMIT ?] [OFFSET ?]``.

    ``ordering`` holds field names, ``-`` for descending (already checked by the caller).
    """
    where, count = _where(model, dialect, shape)
    names = model._meta.fields_db_projection
    order = ",".join(f"{_quote(names[o.lstrip('-')])} {'DESC' if o[0] == '-' else 'ASC'}"
                     for o in ordering)
    sql = f"SELECT {columns_sql} FROM {_table(model)}{where}"  # noqa: S608 - quoted names
    if order:
        sql += f" ORDER BY {order}"
    if offset and not limit and dialect != "postgres":
        sql += " LIMIT -1"  # sqlite takes OFFSET only after a LIMIT (-1: no limit)
    for wanted, word in ((limit, "LIMIT"), (offset, "OFFSET")):
        if wanted:
            count += 1
            sql += f" {word} {f'${count}' if dialect == 'postgres' else '?'}"
    return sql


@lru_cache(maxsize=1024)
def count_sql(model: type[Model], dialect: str, shape: Shape) -> str:
    """``SELECT COUNT(*) FROM t [WHERE ...]``."""
    where, _ = _where(model, dialect, shape)
    return f"SELECT COUNT(*) FROM {_table(model)}{where}"  # noqa: S608 - quoted names


def orderable(model: type[Model], ordering: Iterable[str], dialect: str) -> bool:
    """Every ordering name is a plain column of the model itself."""
    meta = model._meta
    for item in ordering:
        name = item.lstrip("-")
        if name not in meta.fields_db_projection:
            return False
        if not _plain_column(meta.fields_map[name], dialect):
            return False
    return True


# -- prefetch of reverse foreign keys ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PrefetchPlan:
    """``SELECT <related columns> FROM related WHERE fk = ANY($1)`` for one reverse relation."""

    related: type[Model]
    sql: str
    #: The related model's foreign-key attribute (``user_id``) and the owner's key attribute.
    fk_attr: str
    own_attr: str
    own_field: Field[Any]


@lru_cache(maxsize=256)
def prefetch_plan(model: type[Model], name: str, native: frozenset[type]) -> PrefetchPlan | None:
    """The plan for prefetching reverse relation ``name`` on PostgreSQL, or None (QuerySet).

    Only a reverse foreign key whose related model has no default ordering (Tortoise orders
    the prefetched rows by it) and no custom manager qualifies.
    """
    meta = model._meta
    if name not in meta.backward_fk_fields:
        return None
    relation: Any = meta.fields_map[name]
    related: type[Model] = relation.related_model
    if related._meta._default_ordering or not plain_model(related):
        return None
    fk_attr: str = relation.relation_field
    own_field: Field[Any] = relation.to_field_instance
    column = related._meta.fields_db_projection[fk_attr]
    plan = row_plan(related, native)
    sql = (f"SELECT {plan.columns_sql} FROM {_table(related)} "  # noqa: S608 - quoted names
           f"WHERE {_quote(column)}=ANY($1::{_array_type(related, fk_attr)}[])")
    return PrefetchPlan(related, sql, fk_attr, own_field.model_field_name, own_field)

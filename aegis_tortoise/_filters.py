"""Validation of repository ``filters``, ``order_by`` and ``prefetch`` against a model.

Everything here is pure Python on the model's metadata: it runs before any SQL is sent (and
before the session's transaction begins), so a typo in a field name costs no round trip and
leaves the session untouched.

Search terms need no escaping here: Tortoise 1.1.9 escapes ``%``, ``_`` and ``\\`` in the
``contains``/``startswith``/``endswith`` lookups (and their ``i`` variants) with
``LIKE ... ESCAPE '\\'`` and sends every value as a bind parameter, on sqlite and PostgreSQL
alike (tortoise/filters.py ``escape_like``); the repository tests pin that behaviour.

What Tortoise does *not* bind is checked here, before any SQL:

- the key of a JSONField ``__filter`` dict: Tortoise 1.1.9 pastes its parts into the SQL text
  (``pypika_tortoise`` ``JSONAttributeCriterion``: ``data->'<part>'``), so every part must
  match :func:`_json_key_allowed` (letters and their marks, digits, spaces and
  ``_ - . @ $ : / + #``, at most 255 characters a part: no quote, backslash or control
  character can end the literal);
- filter shapes Tortoise would fail on after validation: ``__range`` without two bounds, a
  ``__filter`` value that is not a one-item dict, a path that comes back to the model's own
  table through a to-many relation after its first step (``user__policies__title`` on
  ``Policy``: "table name specified more than once");
- a long ``__in``/``__not_in`` list is sent as one array parameter (:func:`bound_lists`):
  asyncpg takes at most 32,767 arguments a statement.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import lru_cache
from typing import Any

from pypika_tortoise.enums import Dialects
from pypika_tortoise.terms import Term, ValueWrapper
from pypika_tortoise.utils import format_alias_sql
from tortoise.exceptions import ValidationError as TortoiseValidationError
from tortoise.fields.data import (
    CharField,
    DateField,
    DatetimeField,
    JSONField,
    TextField,
    TimeField,
)
from tortoise.fields.relational import RelationalField
from tortoise.filters import is_in, not_in
from tortoise.models import Model
from tortoise.query_utils import Prefetch

from aegis_tortoise._select import _array_type
from aegis_tortoise._values import field_error
from aegis_tortoise.errors import InvalidFilterError

__all__ = [
    "JSON_KEY",
    "MAX_BOUND_VALUES",
    "MAX_JSON_LIST",
    "MAX_JSON_PARTS",
    "bound_lists",
    "clip",
    "default_ordering",
    "fans_out",
    "filter_kwargs",
    "order_by_fields",
    "prefetch_fields",
    "single_pass",
    "writable_values",
]

_MAX_DEPTH = 8

#: One part of a JSON ``__filter`` key (``{"color__startswith": "r"}`` has two parts).
JSON_KEY = re.compile(r"[\w\-. @$:/+#]{1,255}")
_JSON_PUNCTUATION = frozenset("_-. @$:/+#")
#: Parts of one JSON key at most: PostgreSQL's parser runs out of stack at a few thousand
#: (``data->'a'->'a'...``: "stack depth limit exceeded", after the check had passed).
MAX_JSON_PARTS = 64
#: Values of a JSON ``__in``/``__not_in`` list at most (one parameter each, see above).
MAX_JSON_LIST = 30_000
# The operators Tortoise 1.1.9 reads from a JSON key's last part
# (tortoise/contrib/postgres/json_functions.py ``operator_keywords``).
_JSON_OPERATORS = frozenset({
    "not", "isnull", "not_isnull", "in", "not_in", "gte", "gt", "lte", "lt", "range",
    "contains", "startswith", "endswith", "iexact", "icontains", "istartswith", "iendswith",
    "year", "quarter", "month", "week", "day", "hour", "minute", "second", "microsecond"})
# Tortoise 1.1.9 registers the date-part lookups and __search on every field
# (tortoise/filters.py get_filters_for_field): on another field PostgreSQL fails
# ("function pg_catalog.extract(unknown, integer) does not exist"), and sqlite has neither
# EXTRACT nor a search criterion (the filter is dropped: a delete_where deleted every row).
_DATE_PARTS = frozenset({"year", "quarter", "month", "week", "day"})
_TIME_PARTS = frozenset({"hour", "minute", "second", "microsecond"})
_NEEDS = {"date": (DatetimeField, DateField), "time": (DatetimeField, TimeField),
          "search": (CharField, TextField)}
#: ``__in``/``__not_in`` lists longer than this go as one array parameter (:func:`bound_lists`).
MAX_BOUND_VALUES = 1000


def _fields(model: type[Model]) -> list[str]:
    """The field names a caller may use on ``model`` (for error messages)."""
    return sorted(model._meta.fields_map)


def _related(model: type[Model], name: str) -> type[Model]:
    field = model._meta.fields_map[name]
    assert isinstance(field, RelationalField)  # noqa: S101 - fetch_fields are relational
    related: type[Model] = field.related_model
    return related


def _lookups(model: type[Model], field: str) -> list[str]:
    prefix = f"{field}__"
    return sorted(k[len(prefix):] for k in model._meta.filters if k.startswith(prefix))


def _filter_error(root: type[Model], key: str, model: type[Model], part: str) -> InvalidFilterError:
    meta = model._meta
    head, _, lookup = part.partition("__")
    # A key from a request may be long: messages and details show at most 80 characters.
    key, head, lookup = clip(key), clip(head), clip(lookup)
    details: dict[str, Any] = {"model": root.__name__, "key": key, "valid_fields": _fields(model)}
    if head in meta.filters and lookup:
        details["valid_lookups"] = _lookups(model, head)
        message = (f"Invalid filter {key!r} for {root.__name__}: {model.__name__}.{head} has no "
                   f"lookup {lookup!r}; valid lookups: {', '.join(details['valid_lookups'])}")
    else:
        message = (f"Invalid filter {key!r} for {root.__name__}: {model.__name__} has no field "
                   f"{head!r}; valid fields: {', '.join(details['valid_fields'])}")
    return InvalidFilterError(message, details=details)


def _check_filter_key(root: type[Model], key: str) -> tuple[type[Model], str]:
    """The model and the filter name (``title__icontains``) at the end of ``key``'s path."""
    model, part = root, key
    for hop in range(_MAX_DEPTH):
        meta = model._meta
        if part in meta.filters or part in meta.fk_fields or part in meta.o2o_fields:
            return model, part
        head, _, rest = part.partition("__")
        if not rest or head not in meta.fetch_fields:
            raise _filter_error(root, key, model, part)
        related = _related(model, head)
        to_many = head in meta.backward_fk_fields or head in meta.m2m_fields
        if to_many and hop and related._meta.db_table == root._meta.db_table:
            # Tortoise 1.1.9 joins the root's table again under the alias it gives the first
            # self-join ("<table>2"): PostgreSQL answers "table name specified more than
            # once", sqlite "ambiguous column name". (Found by trying every such path.)
            raise InvalidFilterError(
                f"Invalid filter {key!r} for {root.__name__}: the path comes back to "
                f"{related.__name__} through the to-many relation {head!r}; filter on "
                f"{related.__name__} directly", details={"model": root.__name__, "key": key})
        model, part = related, rest
    raise _filter_error(root, key, model, part)


def _check_lookup_type(root: type[Model], key: str, model: type[Model], name: str,
                       info: Mapping[str, Any]) -> bool:
    """Refuse a date-part or ``__search`` lookup on a field that cannot take it; whether the
    lookup needs PostgreSQL (sqlite has no EXTRACT and no search)."""
    lookup = name.rpartition("__")[2] if "__" in name else ""
    need = ("date" if lookup in _DATE_PARTS else "time" if lookup in _TIME_PARTS
            else "search" if lookup == "search" else "")
    if not need:
        return False
    field = model._meta.fields_map.get(info.get("field", ""))
    if field is not None and not isinstance(field, _NEEDS[need]):
        kinds = {"date": "a date or datetime", "time": "a time or datetime",
                 "search": "a text"}[need]
        raise InvalidFilterError(
            f"Invalid filter {clip(key)!r} for {root.__name__}: __{lookup} needs {kinds} "
            f"field; {model.__name__}.{info.get('field')} is a {type(field).__name__}",
            details={"model": root.__name__, "key": clip(key)})
    return True


@lru_cache(maxsize=2048)
def _checked_key(root: type[Model], key: str) -> tuple[type[Model], str, str]:
    """:func:`_check_filter_key`, and which value check the filter needs: ``"json"``,
    ``"range"``, ``"postgres"`` (a lookup sqlite lacks) or ``""`` (cached: an invalid key
    raises, which is never cached)."""
    model, name = _check_filter_key(root, key)
    info: Mapping[str, Any] = model._meta.filters.get(name) or {}
    if _check_lookup_type(root, key, model, name, info):
        return model, name, "postgres"
    # On PostgreSQL the executor has replaced json_filter in the model's filter table by
    # postgres_json_filter at init (FILTER_FUNC_OVERRIDE, Tortoise 1.1.9): test the field.
    if name.endswith("__filter") and isinstance(
            model._meta.fields_map.get(info.get("field", "")), JSONField):
        return model, name, "json"
    return model, name, "range" if name.endswith("__range") else ""


def _check_filter_value(root: type[Model], key: str, model: type[Model], kind: str,
                        value: Any) -> None:
    """Refuse values Tortoise would paste into the SQL text or fail on after validation."""
    if kind == "json":
        _check_json_filter(root, key, value)
    elif kind == "range" and (
            isinstance(value, str | bytes | Mapping) or not isinstance(value, Sequence)
            or len(value) != 2):
        raise InvalidFilterError(
            f"Filter {key!r} takes two bounds, [low, high], not {_short(value)}",
            details={"model": root.__name__, "key": key})


def clip(text: str) -> str:
    """``text`` cut to 80 characters (a caller's key shown in an error)."""
    return text if len(text) <= 80 else text[:77] + "..."


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_json_filter(root: type[Model], key: str, value: Any) -> None:
    """A JSON ``__filter`` value: one ``{path: value}`` item whose path parts are safe text."""
    details: dict[str, Any] = {"model": root.__name__, "key": key}
    if not isinstance(value, Mapping) or len(value) != 1:
        raise InvalidFilterError(
            f"Filter {key!r} takes one {{'<json key>[__<lookup>]': value}} item, not "
            f"{_short(value)}", details=details)
    ((path, inner),) = value.items()
    if not isinstance(path, str):
        raise InvalidFilterError(f"Filter {key!r}: JSON keys must be strings, not {path!r}",
                                 details=details)
    parts = path.split("__")
    if len(parts) > MAX_JSON_PARTS + 1:
        raise InvalidFilterError(
            f"Filter {key!r}: a JSON key has at most {MAX_JSON_PARTS} parts (split at __), "
            f"not {len(parts)}", details=details)
    if len(parts) > 1 and parts[-1] in _JSON_OPERATORS:
        lookup = parts.pop()
        if lookup in ("in", "not_in") and (isinstance(inner, str | bytes | Mapping)
                                           or not isinstance(inner, Sequence)):
            raise InvalidFilterError(f"Filter {key!r}: __{lookup} takes a list",
                                     details=details)
        if lookup in ("in", "not_in") and len(inner) > MAX_JSON_LIST:
            # Tortoise sends each value as a parameter; asyncpg takes at most 32,767.
            raise InvalidFilterError(
                f"Filter {key!r}: a JSON __{lookup} list holds at most {MAX_JSON_LIST:,} "
                f"values, not {len(inner):,}", details=details)
        if lookup == "range" and (isinstance(inner, str | bytes | Mapping)
                                  or not isinstance(inner, Sequence) or len(inner) != 2):
            raise InvalidFilterError(f"Filter {key!r}: __range takes two bounds",
                                     details=details)
    for part in parts:
        # isdigit() parts become array indexes (int(part)): ASCII digits only.
        if not _json_key_allowed(part) or (part.isdigit() and not part.isascii()):
            raise InvalidFilterError(
                f"Filter {key!r}: JSON key {_short(part)} is not allowed; JSON keys may hold "
                "letters, digits, spaces and _ - . @ $ : / + # (1-255 characters a part)",
                details=details)


def _json_key_allowed(part: str) -> bool:
    """Whether one part of a JSON key is :data:`JSON_KEY`, or the same with combining marks:
    ``\\w`` has no marks, which the words of many scripts hold ("नाम", "ชื่อ") and a
    decomposed accent too ("cafe\\u0301"). A mark cannot end a quoted literal."""
    if JSON_KEY.fullmatch(part):
        return True
    return 0 < len(part) <= 255 and all(
        ch in _JSON_PUNCTUATION or unicodedata.category(ch)[0] in "LMN" for ch in part)


def filter_kwargs(model: type[Model], filters: Mapping[str, Any] | None,
                  dialect: str | None = None) -> dict[str, Any]:
    """Validate ``filters`` and turn them into ``QuerySet.filter`` keyword arguments.

    With ``dialect="sqlite"``, lookups sqlite lacks (the date parts, ``__search``) are
    refused too.

    A ``None`` value means IS NULL: ``{"deleted_at": None}`` becomes
    ``deleted_at__isnull=True`` and ``{"x__not": None}`` becomes ``x__not_isnull=True``.

    Raises:
        InvalidFilterError: an unknown field or lookup, or ``None`` with a lookup that cannot
            compare with NULL (``name__icontains=None``).
    """
    if not filters:
        return {}
    if not isinstance(filters, Mapping):
        raise InvalidFilterError(
            f"filters must be a dict of field names to values, not {type(filters).__name__}",
            details={"model": model.__name__})
    result: dict[str, Any] = {}
    for key, value in filters.items():
        if not isinstance(key, str):
            raise InvalidFilterError(f"Filter keys must be strings, not {key!r}",
                                     details={"model": model.__name__, "key": repr(key)})
        final, _, kind = _checked_key(model, key)
        if kind == "postgres":
            if dialect == "sqlite":
                lookup = key.rpartition("__")[2]
                raise InvalidFilterError(
                    f"Invalid filter {clip(key)!r} for {model.__name__}: __{lookup} needs "
                    "PostgreSQL (Tortoise 1.1.9 has no such lookup on sqlite)",
                    details={"model": model.__name__, "key": clip(key)})
        elif kind and value is not None:
            _check_filter_value(model, key, final, kind, value)
        if value is None:
            null_key, is_null = _null_filter(model, key)
            result[null_key] = is_null
        else:
            result[key] = value
    return result


class _ArrayValues(Term):
    """A long ``IN`` list as one parameter: ``(SELECT unnest($n::TYPE[]))`` on PostgreSQL
    (the only dialect :func:`bound_lists` makes one for; a plain ``(?, ?, ...)`` should a
    statement be rendered for another)."""

    def __init__(self, values: list[Any], pg_type: str) -> None:
        super().__init__()
        self.values = values
        self.pg_type = pg_type

    def get_sql(self, ctx: Any) -> str:
        # pypika_tortoise 0.6.5 (Tortoise 1.1.9): ctx.parameterizer collects the bind values
        # of the statement being rendered; create_param adds one and gives its "$n".
        if ctx.dialect == Dialects.POSTGRESQL and ctx.parameterizer is not None:
            param = ctx.parameterizer.create_param(self.values).get_sql(ctx)
            sql = f"(SELECT unnest({param}::{self.pg_type}[]))"
        else:
            sql = "(" + ",".join(ValueWrapper(v).get_sql(ctx) for v in self.values) + ")"
        return str(format_alias_sql(sql, self.alias, ctx))


def bound_lists(model: type[Model], kwargs: dict[str, Any], dialect: str) -> dict[str, Any]:
    """``kwargs`` (from :func:`filter_kwargs`) with each ``__in``/``__not_in`` list of more
    than :data:`MAX_BOUND_VALUES` values as one array parameter, converted by the field's
    ``to_db_value`` as Tortoise's ``list_encoder`` converts them (a :class:`Term` value skips
    Tortoise's own encoding: tortoise/expressions.py ``_process_filter_kwarg``, 1.1.9).

    On PostgreSQL only: sqlite's limit (``SQLITE_LIMIT_VARIABLE_NUMBER``) is 250,000 in
    Debian's and CPython's builds, and Tortoise's own rendering there also wraps some columns
    (``CAST("price" AS NUMERIC)`` for a DecimalField) that a list of our own would miss; the
    values are still converted there, so a bad one raises the same error naming the field.
    """
    result = kwargs
    for key, value in kwargs.items():
        # The suffix first: this runs on every filtered call, and the ABC checks cost ~1 us.
        if not key.endswith(("__in", "__not_in")) or (
                isinstance(value, str | bytes | Mapping | Term)
                or not isinstance(value, Iterable)):
            continue
        values = value if isinstance(value, Sequence | set | frozenset) else None
        if values is None or len(values) <= MAX_BOUND_VALUES:
            continue
        final, name, _ = _checked_key(model, key)
        info: Mapping[str, Any] = final._meta.filters.get(name) or {}
        target = key
        if "table" in info and info.get("operator") in (is_in, not_in):
            # A reverse foreign key or many-to-many (``items__in``): Tortoise 1.1.9 joins the
            # related (or through) table and compares the related key, as ``items__id__in``
            # does, which takes the array path (tortoise/filters.py get_backward_fk_filters).
            target = _through_key(final, name, key)
            if target in kwargs:
                continue
            values = [v.pk if isinstance(v, Model) else v for v in values]
            final, name, _ = _checked_key(model, target)
            info = final._meta.filters.get(name) or {}
        field = final._meta.fields_map.get(info.get("field", ""))
        if (info.get("operator") not in (is_in, not_in) or "table" in info or field is None
                or isinstance(field, JSONField)
                or info.get("field") not in final._meta.fields_db_projection):
            continue
        pg_type = _array_type(final, info["field"])
        if pg_type.endswith("]"):
            continue  # an array field: Tortoise's own rendering
        converted: list[Any] = []
        item: Any = None
        try:
            for item in values:
                converted.append(field.to_db_value(item, final))
        except TortoiseValidationError:
            raise
        except Exception as exc:
            raise field_error(final, info["field"], item, exc) from exc
        if dialect != "postgres":
            continue
        if result is kwargs:
            result = dict(kwargs)
        if target != key:
            del result[key]
        result[target] = _ArrayValues(converted, pg_type)
    return result


def _through_key(model: type[Model], name: str, key: str) -> str:
    """``key`` (ending in the relation filter ``name``, ``items__not_in``) as the same filter
    on the related model's primary key (``items__id__not_in``)."""
    lookup = "not_in" if name.endswith("__not_in") else "in"
    relation = name[:-len(lookup) - 2]
    pk = _related(model, relation)._meta.pk_attr
    return f"{key[:len(key) - len(name)]}{relation}__{pk}__{lookup}"


def single_pass(filters: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """``filters`` with one-shot iterators (``map``, generators, ``iter(...)``) as lists.

    list() and paginate() read the filters more than once (validation, the count, the
    page); an iterator would be empty after the first pass.
    """
    if filters and isinstance(filters, Mapping):
        for value in filters.values():
            if isinstance(value, Iterator):
                return {key: list(value) if isinstance(value, Iterator) else value
                        for key, value in filters.items()}
    return filters


@lru_cache(maxsize=256)
def _default_ordering(model: type[Model]) -> tuple[str, ...]:
    names = [("-" if str(order.value).upper() == "DESC" else "") + name
             for name, order in model._meta._default_ordering]
    return tuple(order_by_fields(model, names))


def default_ordering(model: type[Model]) -> list[str]:
    """The model's ``Meta.ordering`` as ``order_by`` names (what ``Model.all()`` sorts by)."""
    return list(_default_ordering(model))


def fans_out(model: type[Model], kwargs: Mapping[str, Any]) -> bool:
    """Whether a filter crosses a to-many relation (a JOIN that can repeat the model's rows)."""
    for key in kwargs:
        current = model
        for part in key.split("__")[:-1] if "__" in key else [key]:
            meta = current._meta
            if part in meta.backward_fk_fields or part in meta.m2m_fields:
                return True
            if part not in meta.fetch_fields:
                break
            current = _related(current, part)
    return False


def _null_filter(model: type[Model], key: str) -> tuple[str, bool]:
    head, _, last = key.rpartition("__")
    if last in ("isnull", "not_isnull"):
        raise InvalidFilterError(f"Filter {key!r} needs True or False, not None",
                                 details={"model": model.__name__, "key": key})
    negate = last == "not" and bool(head)
    path = _field_path(model, head if negate else key)
    if negate and path is not None:
        return f"{path}__not_isnull", True
    if path is None:
        raise InvalidFilterError(
            f"Filter {key!r} cannot compare with None; use {{'<field>': None}} for IS NULL",
            details={"model": model.__name__, "key": key})
    return f"{path}__isnull", True


def _field_path(model: type[Model], key: str) -> str | None:
    """``key`` if it names a (possibly related) field without a lookup, else None.

    A foreign key at the end becomes its id column (``user`` -> ``user_id``), the form
    Tortoise accepts with ``__isnull``.
    """
    parts = key.split("__")
    for part in parts[:-1]:
        if part not in model._meta.fetch_fields:
            return None
        model = _related(model, part)
    meta, last = model._meta, parts[-1]
    if last in meta.fk_fields or last in meta.o2o_fields:
        parts[-1] = str(meta.fields_map[last].source_field)
    elif last not in meta.fields_map and last != "pk":
        return None
    return "__".join(parts)


def order_by_fields(model: type[Model], order_by: str | Sequence[str] | None) -> list[str]:
    """Validate ``order_by`` (``"name"``, ``"-created_at"`` or a list) for ``QuerySet.order_by``.

    Raises:
        InvalidFilterError: a field that does not exist or cannot be ordered by.
    """
    if order_by is None:
        return []
    if not isinstance(order_by, str | Iterable):
        raise InvalidFilterError(f"order_by takes a field name or a list of them, not "
                                 f"{type(order_by).__name__}",
                                 details={"model": model.__name__, "order_by": _short(order_by)})
    items = [order_by] if isinstance(order_by, str) else list(order_by)
    result: list[str] = []
    for item in items:
        if not isinstance(item, str) or not item.lstrip("-+"):
            raise InvalidFilterError(f"order_by takes field names, not {_short(item)}",
                                     details={"model": model.__name__, "order_by": _short(item)})
        desc = item.startswith("-")
        name = item.lstrip("-+")
        result.append(("-" if desc else "") + _check_order_field(model, name, item))
    return result


def _check_order_field(root: type[Model], name: str, item: str) -> str:
    model, parts = root, name.split("__")
    resolved: list[str] = []
    for i, part in enumerate(parts):
        meta = model._meta
        last = i == len(parts) - 1
        if last and (part == "pk" or part in meta.fields_db_projection):
            resolved.append(meta.pk_attr if part == "pk" else part)
            return "__".join(resolved)
        if last and (part in meta.fk_fields or part in meta.o2o_fields):
            source = meta.fields_map[part].source_field
            resolved.append(str(source))
            return "__".join(resolved)
        if not last and (part in meta.fk_fields or part in meta.o2o_fields):
            resolved.append(part)
            model = _related(model, part)
            continue
        break
    valid = sorted(model._meta.fields_db_projection) + sorted(
        model._meta.fk_fields | model._meta.o2o_fields)
    raise InvalidFilterError(
        f"Invalid order_by {clip(item)!r} for {root.__name__}: valid fields: "
        f"{', '.join(valid)}",
        details={"model": root.__name__, "order_by": clip(item), "valid_fields": valid})


def prefetch_fields(model: type[Model],
                    prefetch: Iterable[str | Prefetch] | None) -> list[str | Prefetch]:
    """Validate relation names for ``prefetch_related`` (``"policies"``, ``"user__policies"``).

    Raises:
        InvalidFilterError: a name that is not a relation of the model.
    """
    if prefetch is None:
        return []
    if not isinstance(prefetch, str | Iterable):
        raise InvalidFilterError(f"prefetch takes a relation name or a list of them, not "
                                 f"{type(prefetch).__name__}", details={"model": model.__name__})
    items: list[str | Prefetch] = [prefetch] if isinstance(prefetch, str) else list(prefetch)
    for item in items:
        if isinstance(item, Prefetch):
            continue
        current = model
        for part in str(item).split("__"):
            if part not in current._meta.fetch_fields:
                valid = sorted(current._meta.fetch_fields)
                raise InvalidFilterError(
                    f"Cannot prefetch {clip(str(item))!r} on {model.__name__}: "
                    f"{current.__name__} has no relation {clip(part)!r}; relations: "
                    f"{', '.join(valid) or 'none'}",
                    details={"model": model.__name__, "prefetch": clip(str(item)),
                             "valid_relations": valid})
            current = _related(current, part)
    return items


def writable_values(model: type[Model], data: Mapping[str, Any], *,
                    action: str) -> dict[str, Any]:
    """Check that every key of ``data`` is a field that can be written.

    Accepts data fields, foreign keys (``user=<User>``) and their id fields (``user_id=5``);
    an explicit primary key only when creating.

    Raises:
        ValidationError: an unknown or read-only field (Tortoise would drop unknown keys
            silently).
    """
    from aegis_tortoise.errors import ValidationError

    meta = model._meta
    writable = set(meta.fields_db_projection) | meta.fk_fields | meta.o2o_fields
    result: dict[str, Any] = {}
    for key, value in data.items():
        name = meta.pk_attr if key == "pk" else key
        if name not in writable:
            valid = sorted(writable)
            shown = clip(key) if isinstance(key, str) else repr(key)
            raise ValidationError(
                f"Cannot {action} {model.__name__}: unknown field {shown!r}; valid fields: "
                f"{', '.join(valid)}",
                details={"model": model.__name__, "field": shown, "valid_fields": valid})
        if action == "update" and (name == meta.pk_attr or meta.fields_map[name].generated):
            raise ValidationError(
                f"Cannot update {model.__name__}.{key}: it is the primary key or generated",
                details={"model": model.__name__, "field": key})
        result[name] = value
    return result

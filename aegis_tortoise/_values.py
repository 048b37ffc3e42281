"""Caller values checked and converted as Tortoise's ``Model(**values)`` converts them, before
any SQL is sent (``BaseRepository.update`` and friends).

``create()`` builds a model instance, whose ``__init__`` runs every field's
``to_python_value``: a value the field cannot hold (``"nope"`` for a UUID, ``"garbage"`` for a
date) fails there, before the INSERT. ``update()`` sends one ``UPDATE ... RETURNING`` without
an instance; converting its values the same way makes both reject the same input with the
same error, and keeps sqlite (which stores any value in any column) from storing what the
field could never read back: a ``Decimal`` is quantized as ``Model()`` quantizes it
(``Infinity``, ``sNaN`` or ``1e30`` in a ``DecimalField(10, 2)`` fail), whatever its type.

Two checks go beyond ``Model()``, so that every write path refuses what one of them refuses:

- an update takes a ``TimeDeltaField`` value only as a ``timedelta``: Tortoise 1.1.9's
  ``save()`` and ``QuerySet.update`` fail on an int (``value.days``), while
  ``to_python_value`` would read ``5`` as 5 microseconds;
- on sqlite a float NaN is refused (:func:`refuse_nan`): sqlite stores it as NULL, silently.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

from pydantic import BaseModel
from pypika_tortoise.terms import Term
from tortoise.exceptions import ValidationError as TortoiseValidationError
from tortoise.expressions import Expression
from tortoise.fields.base import Field
from tortoise.fields.data import DatetimeField, FloatField, TimeDeltaField
from tortoise.models import Model

from aegis_tortoise.errors import ValidationError

__all__ = ["ArgumentTypeError", "auto_now_values", "db_values", "field_error",
           "iterable_argument", "python_values", "refuse_nan", "refuse_nan_columns",
           "update_value"]


def field_error(model: type[Model], name: str, value: Any, exc: BaseException) -> ValidationError:
    """The error for ``value`` that field ``name`` of ``model`` cannot hold."""
    shown = repr(value)
    if len(shown) > 80:  # a value from a request may be long: show its start
        shown = shown[:77] + "..."
    return ValidationError(
        f"Invalid {model.__name__}.{name}: {shown} ({exc})",
        details={"model": model.__name__, "field": name}, cause=exc)


class ArgumentTypeError(TypeError):
    """An argument of the wrong type (``create_many(5)``): the caller's bug, a ``TypeError``
    as from any Python function, which the translation point lets pass unchanged."""


def iterable_argument(model: type[Model], name: str, value: Any) -> None:
    """Refuse a non-iterable ``value`` for the argument ``name`` (``create_many(5)``).

    Python's own "'int' object is not iterable" would be raised deep inside the method, where
    the translation point takes a ``TypeError`` for a bug of the library (a logged 500).

    Raises:
        ArgumentTypeError: naming the method, the argument and the type given.
    """
    if not isinstance(value, Iterable):
        raise ArgumentTypeError(
            f"{model.__name__} repository: {name} takes an iterable, not {type(value).__name__}")


def python_values(model: type[Model], values: Mapping[str, Any]) -> dict[str, Any]:
    """Update ``values`` converted by their fields' ``to_python_value``, as
    ``Model(**values)`` does (relations and expressions are left as they are), a
    ``TimeDeltaField`` taking only a ``timedelta`` (see the module docstring).

    Raises:
        ValidationError: a value the field cannot hold, or None for a non-null field
            (naming the field).
    """
    meta = model._meta
    relations = _relations(model)
    as_given = _as_given(model)
    result: dict[str, Any] = {}
    for name, value in values.items():
        field: Field[Any] = meta.fields_map[name]
        if name in relations or isinstance(value, Expression | Term):
            result[name] = value
            continue
        if value is None:
            if not field.null:
                raise field_error(model, name, value, ValueError(
                    f"{name} is non nullable field, but null was passed"))
            result[name] = None
            continue
        if type(value) is field.field_type and name in as_given:
            result[name] = value  # update_value's first case, inlined (the common one)
        else:
            result[name] = update_value(model, name, field, value)
    return result


def update_value(model: type[Model], name: str, field: Field[Any], value: Any) -> Any:
    """One non-null update value of ``field`` as ``to_python_value`` makes it.

    Raises:
        ValidationError: a value the field cannot hold, naming the field.
    """
    if type(value) is field.field_type and name in _as_given(model):
        return value
    if isinstance(field, TimeDeltaField) and not isinstance(value, dt.timedelta):
        raise field_error(model, name, value, TypeError("expected a datetime.timedelta"))
    try:
        return field.to_python_value(value)
    except Exception as exc:
        raise field_error(model, name, value, exc) from exc


def refuse_nan(model: type[Model], values: Mapping[str, Any], dialect: str) -> None:
    """Refuse a float NaN for a ``FloatField`` on sqlite, which would store NULL.

    Raises:
        ValidationError: naming the field.
    """
    if dialect != "sqlite":
        return
    floats = _floats(model)
    for name, value in values.items():
        if name in floats and isinstance(value, float) and math.isnan(value):
            raise field_error(model, name, value, ValueError(
                "sqlite cannot store NaN (it would store NULL)"))


def refuse_nan_columns(model: type[Model], names: Iterable[str], arrays: Iterable[list[Any]],
                       dialect: str) -> None:
    """:func:`refuse_nan` for values a column at a time."""
    if dialect != "sqlite":
        return
    floats = _floats(model)
    for name, column in zip(names, arrays, strict=False):
        if name in floats:
            for value in column:
                refuse_nan(model, {name: value}, dialect)


@lru_cache(maxsize=512)
def _floats(model: type[Model]) -> frozenset[str]:
    return frozenset(name for name, field in model._meta.fields_map.items()
                     if isinstance(field, FloatField))


@lru_cache(maxsize=512)
def _as_given(model: type[Model]) -> frozenset[str]:
    """Fields that keep a value of their own type as it is (``Field.to_python_value``), so
    converting it may be skipped: not a DecimalField (it quantizes), not a datetime field
    (:func:`_zoned`), not any field with a conversion of its own."""
    return frozenset(
        name for name, field in model._meta.fields_map.items()
        if type(field).to_python_value is Field.to_python_value and name not in _zoned(model))


def db_values(model: type[Model], values: Mapping[str, Any]) -> list[Any]:
    """``values`` as the database takes them: ``to_db_value`` of the model class (no
    ``auto_now`` side effects, as in Tortoise's own ``QuerySet.update()``).

    Raises:
        ValidationError: a value the field cannot convert, naming the field (a field
            validator's own error is left to the repository's translation, which names it).
    """
    fields = model._meta.fields_map
    params: list[Any] = []
    append = params.append
    try:
        for name, value in values.items():
            append(fields[name].to_db_value(value, model))
    except TortoiseValidationError:
        raise
    except Exception as exc:
        raise field_error(model, name, value, exc) from exc
    return params


@lru_cache(maxsize=512)
def _relations(model: type[Model]) -> frozenset[str]:
    return frozenset(model._meta.fk_fields | model._meta.o2o_fields)


@lru_cache(maxsize=512)
def _zoned(model: type[Model]) -> frozenset[str]:
    """Datetime fields: an aware value goes to the configured time zone, as ``Model()``
    converts it (sqlite stores the text as given; '+05:30' text would not sort in time)."""
    return frozenset(name for name, field in model._meta.fields_map.items()
                     if isinstance(field, DatetimeField))


@lru_cache(maxsize=512)
def _auto_now_fields(model: type[Model]) -> tuple[tuple[str, bool], ...]:
    """(name, is a plain DatetimeField) of the model's ``auto_now`` fields."""
    meta = model._meta
    return tuple(
        (name, type(field).to_db_value is DatetimeField.to_db_value
         and isinstance(field, DatetimeField))
        for name, field in meta.fields_map.items() if getattr(field, "auto_now", False))


def auto_now_values(model: type[Model], values: dict[str, Any], now: dt.datetime) -> None:
    """Set each ``auto_now`` field ``values`` leaves out: ``now`` for a datetime field;
    for any other kind (``TimeField(auto_now=True)``, a custom field) the value the field
    itself fills in when ``Model.save()`` stores it."""
    for name, plain in _auto_now_fields(model):
        if name in values:
            continue
        if plain:
            values[name] = now
            continue
        field = model._meta.fields_map[name]
        stand_in = model.__new__(model)
        stand_in.__dict__.update({"_saved_in_db": True, name: None})
        field.to_db_value(None, stand_in)  # sets the attribute to its Python value
        values[name] = stand_in.__dict__[name]


def payload_or_field(model: type[Model], data: Any, fields: dict[str, Any]
                     ) -> tuple[Any, dict[str, Any]]:
    """``update(id, data=...)``: the payload (a dict or pydantic model), or, on a model with
    a field named ``data``, any other value is that field's, as ``save()`` would take it."""
    if (data is not None and not isinstance(data, Mapping | BaseModel)
            and "data" in model._meta.fields_map):
        return None, {"data": data, **fields}
    return data, fields

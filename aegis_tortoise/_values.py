"""Caller values checked and converted as Tortoise's ``Model(**values)`` converts them, before
any SQL is sent (``BaseRepository.update`` and friends).

``create()`` builds a model instance, whose ``__init__`` runs every field's
``to_python_value``: a value the field cannot hold (``"nope"`` for a UUID, ``"garbage"`` for a
date) fails there, before the INSERT. ``update()`` sends one ``UPDATE ... RETURNING`` without
an instance; converting its values the same way makes both reject the same input with the
same error, and keeps sqlite (which stores any value in any column) from storing what the
field could never read back.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from pydantic import BaseModel
from pypika_tortoise.terms import Term
from tortoise.exceptions import ValidationError as TortoiseValidationError
from tortoise.expressions import Expression
from tortoise.fields.base import Field
from tortoise.fields.data import DatetimeField
from tortoise.models import Model

from aegis_tortoise.errors import ValidationError

__all__ = ["auto_now_values", "db_values", "field_error", "python_values"]


def field_error(model: type[Model], name: str, value: Any, exc: BaseException) -> ValidationError:
    """The error for ``value`` that field ``name`` of ``model`` cannot hold."""
    return ValidationError(
        f"Invalid {model.__name__}.{name}: {value!r} ({exc})",
        details={"model": model.__name__, "field": name}, cause=exc)


def python_values(model: type[Model], values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` converted by their fields' ``to_python_value``, as ``Model(**values)``
    does (relations and expressions are left as they are).

    Raises:
        ValidationError: a value the field cannot hold, or None for a non-null field
            (naming the field).
    """
    meta = model._meta
    relations = _relations(model)
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
        if type(value) is field.field_type and name not in _zoned(model):
            result[name] = value
            continue
        try:
            result[name] = field.to_python_value(value)
        except Exception as exc:
            raise field_error(model, name, value, exc) from exc
    return result


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

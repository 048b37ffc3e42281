"""The one translation point of the repository API.

Every public coroutine method of :class:`~aegis_tortoise.repository.BaseRepository` is
wrapped by :func:`public_methods` at class creation, so "no raw exception leaves the public
API" holds by construction, not by an ``except`` in each method. The wrapper also makes each
call one operation of its session (:mod:`aegis_tortoise._operations`): two calls at once on
one session run one after the other instead of interleaving their statements.

Nothing here runs on the success path but the operation bookkeeping (~0.5 us a call); the
error path maps

- driver and Tortoise errors through :func:`~aegis_tortoise.errors.translate_exception`,
- values a field cannot convert (``ValueError`` and ``UnicodeEncodeError``,
  ``ArithmeticError`` such as ``decimal.InvalidOperation`` and ``OverflowError``; a
  ``TypeError`` or ``AttributeError`` only when a field's conversion raised it, e.g.
  ``to_db_value``) to :class:`ValidationError`,
- a lookup the backend lacks (Tortoise's ``NotImplementedError``, e.g. a JSON ``__filter``
  on sqlite) to :class:`InvalidFilterError`,
- a call that does not fit the method's signature (an unknown keyword, a positional
  argument where a keyword is required), or a non-iterable where the method takes a list
  (:class:`~aegis_tortoise._values.ArgumentTypeError`), to nothing: the ``TypeError``
  passes unchanged, as from any Python function,
- anything else to :class:`DatabaseError`, chained and logged as a bug when it is a
  ``TypeError``/``AttributeError`` (but for ``TimeoutError``, a ``command_timeout``, which
  passes unchanged as docs/failures.md says),

and names model fields, not database columns (``email``, not ``email_address``).
Plain Tortoise calls (``User.create(...)``) do not pass through here and keep raising
Tortoise's own exceptions.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
from collections.abc import Awaitable, Callable
from functools import lru_cache
from typing import Any, TypeVar

import tortoise
from tortoise.fields.base import Field
from tortoise.models import Model
from tortoise.validators import Validator

from aegis_tortoise._operations import operation
from aegis_tortoise._values import ArgumentTypeError
from aegis_tortoise.errors import (
    DatabaseConnectionError,
    DatabaseError,
    DuplicateEntityError,
    InvalidFilterError,
    ServiceException,
    ValidationError,
    translate_exception,
)

__all__ = ["VALUE_ERRORS", "public_methods", "repository_error"]

C = TypeVar("C", bound=type)

logger = logging.getLogger("aegis_tortoise.repository")

#: Errors a field's conversion of a value raises (``to_python_value``/``to_db_value``): catch
#: them only around a conversion (``BaseRepository._pk``, :mod:`aegis_tortoise._values`).
VALUE_ERRORS = (ValueError, TypeError, ArithmeticError, AttributeError)
#: Raised by a bad value wherever it happens.
_BAD_VALUE = (ValueError, ArithmeticError)
# Tortoise 1.1.9's conversions of a caller's value: a field's (or a custom field's)
# to_db_value/to_python_value/validate, a validator's __call__, the filter encoders of
# tortoise/filters.py. A TypeError/AttributeError raised in one of them is a bad value,
# anywhere else a bug.
_FIELD_METHODS = frozenset({"to_db_value", "to_python_value", "validate"})
_ENCODERS = frozenset({"list_encoder", "related_list_encoder", "bool_encoder",
                       "string_encoder", "int_encoder", "json_encoder", "array_encoder"})
_TORTOISE_DIR = os.path.dirname(tortoise.__file__) + os.sep


def _raised_converting(exc: BaseException) -> bool:
    """Whether ``exc`` was raised inside a field's conversion of a value (see above)."""
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        name = frame.f_code.co_name
        owner = frame.f_locals.get("self")
        if ((name in _FIELD_METHODS and isinstance(owner, Field))
                or (name == "__call__" and isinstance(owner, Validator))
                or (name in _ENCODERS and frame.f_code.co_filename.startswith(_TORTOISE_DIR))):
            return True
        tb = tb.tb_next
    return False


@lru_cache(maxsize=512)
def _field_names(model: type[Model]) -> dict[str, str]:
    """Database column -> model field name, where they differ (``source_field``)."""
    return {column: name for name, column in model._meta.fields_db_projection.items()
            if column != name}


def _named(model: type[Model], error: ServiceException) -> ServiceException:
    """``error`` with the field named as the model names it, not as the database does."""
    field = error.details.get("field")
    names = _field_names(model)
    if not (isinstance(field, str) and names):
        return error
    mapped = ", ".join(names.get(part.strip(), part.strip()) for part in field.split(","))
    if mapped == field:
        return error
    details = {**error.details, "field": mapped}
    if isinstance(error, DuplicateEntityError):
        renamed: ServiceException = DuplicateEntityError(error.entity_type, details,
                                                         cause=error.cause)
    else:
        error.details = details
        return error
    renamed.__cause__ = error.__cause__
    return renamed


def repository_error(model: type[Model], exc: Exception) -> Exception:
    """``exc`` (raised inside a repository method on ``model``) as this library's error.

    ``TimeoutError`` (the driver's ``command_timeout``) is returned unchanged, as the table
    of docs/failures.md promises: it is no connection error (retrying could run the
    statement twice) and no bad value.
    """
    name = model.__name__
    translated = translate_exception(exc, name)
    if isinstance(translated, ServiceException):
        return _named(model, translated)
    if isinstance(exc, TimeoutError):
        return exc
    if isinstance(exc, _BAD_VALUE) or (isinstance(exc, TypeError | AttributeError)
                                       and _raised_converting(exc)):
        return ValidationError(f"Invalid {name} value: {exc}", details={"model": name},
                               cause=exc)
    if isinstance(exc, NotImplementedError):
        return InvalidFilterError(
            f"{name}: the call uses a filter or lookup this database does not support "
            "(a JSON __filter on sqlite, a regex lookup without regexp functions)",
            details={"model": name}, cause=exc)
    if isinstance(exc, TypeError | AttributeError):
        logger.error("%s: unexpected %s in the repository (a bug)", name,
                     type(exc).__name__, exc_info=exc)
    if isinstance(exc, OSError):
        return DatabaseConnectionError(f"Database connection failed: {exc!r}", cause=exc)
    return DatabaseError(f"{name}: unexpected error: {exc!r}", details={"model": name},
                         cause=exc)


def _wrap(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(method)
    async def translated(self: Any, *args: Any, **kwargs: Any) -> Any:
        # Session._enter_op/_exit_op, inlined: this runs on every call (~0.5 us, not ~1.3).
        session = self.session
        op = session._op
        if op is not None and operation.get() is op:
            token = None  # inside this session's running operation (a nested call)
        else:
            await session._op_lock.acquire()
            op = session._op = object()
            token = operation.set(op)
        try:
            return await method(self, *args, **kwargs)
        except ServiceException as exc:
            named = _named(self.model, exc)
            session._failed_as_shown(exc, named)
            if named is exc:
                raise
            raise named from exc.__cause__
        except Exception as exc:
            if isinstance(exc, ArgumentTypeError) or (
                    isinstance(exc, TypeError) and exc.__traceback__ is not None
                    and exc.__traceback__.tb_next is None):
                raise  # the arguments do not fit the signature, or one's type is wrong
            error = repository_error(self.model, exc)
            if error is exc:
                raise
            session._failed_as_shown(exc, error)
            # Chained to what it was translated from (a pending rollback's: the earlier error).
            raise error from error.__cause__ or exc
        finally:
            if token is not None:
                session._exit_op(token)

    translated.__aegis_translated__ = True  # type: ignore[attr-defined]
    return translated


def public_methods(cls: C) -> C:
    """Wrap every public coroutine method defined on ``cls`` (see the module docstring)."""
    for attr, value in list(vars(cls).items()):
        if attr.startswith("_") or not inspect.iscoroutinefunction(value):
            continue
        setattr(cls, attr, _wrap(value))
    return cls

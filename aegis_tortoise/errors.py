"""The error tree, and the one place where driver and Tortoise errors are translated into it.

Every error that leaves the library is a :class:`ServiceException`. Errors raised because a
driver (asyncpg, sqlite3) or Tortoise failed are chained to that failure
(``raise DuplicateEntityError(...) from exc``). Decisions are made on SQLSTATE codes
(asyncpg's ``sqlstate``) and on sqlite's ``sqlite_errorname``, never on message text; text is
read only to name the offending field in a message.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from typing import Any

import asyncpg
from asyncpg.exceptions._base import DataError as _AsyncpgArgumentError
from tortoise import exceptions as tortoise_exc

__all__ = [
    "AegisBaseException",
    "ConcurrentUpdateError",
    "ConfigurationError",
    "DatabaseConnectionError",
    "DatabaseError",
    "DuplicateEntityError",
    "EntityNotFoundError",
    "ErrorCode",
    "InvalidFilterError",
    "LockNotAvailableError",
    "MultipleResultsFoundError",
    "NoResultFoundError",
    "PoolTimeoutError",
    "ServiceException",
    "TransactionConflictError",
    "TransactionError",
    "TransactionOutcomeUnknownError",
    "ValidationError",
    "driver_error",
    "translate_errors",
    "translate_exception",
]


class ErrorCode(StrEnum):
    """Error codes of the Aegis shared library (``aegis_shared.errors.ErrorCode``)."""

    INTERNAL_ERROR = "COMMON_1000"
    VALIDATION_ERROR = "COMMON_1001"
    ENTITY_NOT_FOUND = "COMMON_1004"
    DUPLICATE_ENTITY = "COMMON_1005"
    DATABASE_ERROR = "COMMON_1009"
    CONFIGURATION_ERROR = "COMMON_1010"
    DB_CONNECTION_ERROR = "DB_2000"
    DB_POOL_TIMEOUT = "DB_2001"
    DB_TRANSACTION_ERROR = "DB_2002"
    DB_TRANSACTION_OUTCOME_UNKNOWN = "DB_2003"
    DB_LOCK_NOT_AVAILABLE = "DB_2004"
    DB_CONCURRENT_UPDATE = "DB_2005"


class ServiceException(Exception):  # noqa: N818 - the seed library's public name
    """Base of every error the library raises.

    Attributes:
        error_code: A stable :class:`ErrorCode` for API responses and logs.
        message: A human-readable message; it never contains a password.
        details: Structured context (entity, field, SQLSTATE, ...), JSON-serialisable.
        status_code: The HTTP status a web service should answer with.
        cause: The driver or Tortoise exception this one was translated from, if any.
    """

    default_code: ErrorCode = ErrorCode.INTERNAL_ERROR
    default_status: int = 500

    def __init__(
        self,
        message: str,
        *,
        error_code: ErrorCode | str | None = None,
        details: dict[str, Any] | None = None,
        status_code: int | None = None,
        cause: BaseException | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.error_code = error_code if error_code is not None else self.default_code
        self.details: dict[str, Any] = dict(details or {})
        self.status_code = status_code if status_code is not None else self.default_status
        self.cause = cause
        if cause is not None:
            self.__cause__ = cause

    def to_dict(self) -> dict[str, Any]:
        """Return the error as a JSON-serialisable dict (for API error bodies)."""
        return {
            "error_code": str(self.error_code),
            "message": self.message,
            "details": self.details,
            "status_code": self.status_code,
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, error_code={str(self.error_code)!r})"


AegisBaseException = ServiceException


class ValidationError(ServiceException):
    """The input is invalid: a bad value, an unknown field, a violated constraint (400)."""

    default_code = ErrorCode.VALIDATION_ERROR
    default_status = 400


class InvalidFilterError(ValidationError):
    """A ``filters`` key, lookup or ``order_by`` field does not exist on the model."""


class EntityNotFoundError(ServiceException):
    """The entity does not exist: ``EntityNotFoundError("User", 5)`` -> "User not found: 5"."""

    default_code = ErrorCode.ENTITY_NOT_FOUND
    default_status = 404

    def __init__(
        self,
        entity_type: str,
        entity_id: Any = None,
        *,
        details: dict[str, Any] | None = None,
        cause: BaseException | None = None,
    ) -> None:
        message = f"{entity_type} not found: {entity_id}" if entity_id is not None else (
            f"{entity_type} not found"
        )
        merged = {"entity_type": entity_type, "entity_id": _jsonable(entity_id), **(details or {})}
        super().__init__(message, details=merged, cause=cause)
        self.entity_type = entity_type
        self.entity_id = entity_id


class DuplicateEntityError(ServiceException):
    """A unique constraint was violated: "User already exists" (409)."""

    default_code = ErrorCode.DUPLICATE_ENTITY
    default_status = 409

    def __init__(
        self,
        entity_type: str,
        details: dict[str, Any] | None = None,
        *,
        cause: BaseException | None = None,
    ) -> None:
        details = dict(details or {})
        field = details.get("field")
        message = f"{entity_type} already exists"
        if field:
            message += f" (duplicate value for field '{field}')"
        super().__init__(message, details={"entity_type": entity_type, **details}, cause=cause)
        self.entity_type = entity_type
        self.field: str | None = field


class ConcurrentUpdateError(ServiceException):
    """An update named a stale ``expected_version``: someone else changed the row since it
    was read (409, ``DB_2005``). Nothing was written; read it again and retry."""

    default_code = ErrorCode.DB_CONCURRENT_UPDATE
    default_status = 409

    def __init__(
        self,
        entity_type: str,
        entity_id: Any = None,
        *,
        expected_version: Any = None,
        details: dict[str, Any] | None = None,
        cause: BaseException | None = None,
    ) -> None:
        merged = {"entity_type": entity_type, "entity_id": _jsonable(entity_id),
                  "expected_version": _jsonable(expected_version), **(details or {})}
        super().__init__(
            f"{entity_type} {entity_id} was changed by someone else (expected version "
            f"{expected_version}); read it again and retry", details=merged, cause=cause)
        self.entity_type = entity_type
        self.entity_id = entity_id
        self.expected_version = expected_version


class LockNotAvailableError(ServiceException):
    """A row lock asked with ``for_update="nowait"`` is held by another transaction, or
    ``lock_timeout`` expired (SQLSTATE 55P03; 409, ``DB_2004``)."""

    default_code = ErrorCode.DB_LOCK_NOT_AVAILABLE
    default_status = 409


class DatabaseError(ServiceException):
    """A database operation failed (500)."""

    default_code = ErrorCode.DATABASE_ERROR
    default_status = 500


class ConfigurationError(DatabaseError, ValueError):
    """The database configuration is wrong (URL, settings, models): fix it, don't retry."""

    default_code = ErrorCode.CONFIGURATION_ERROR


class NoResultFoundError(DatabaseError):
    """``Result.scalar_one()`` / ``one()`` found no row."""


class MultipleResultsFoundError(DatabaseError):
    """``Result.scalar_one()`` / ``one()`` / ``scalar_one_or_none()`` found several rows."""


class DatabaseConnectionError(DatabaseError):
    """The database could not be reached or the connection was lost (503); retryable."""

    default_code = ErrorCode.DB_CONNECTION_ERROR
    default_status = 503


class PoolTimeoutError(DatabaseConnectionError):
    """No connection became free within ``pool_timeout`` seconds; never retried."""

    default_code = ErrorCode.DB_POOL_TIMEOUT


class TransactionOutcomeUnknownError(DatabaseConnectionError):
    """The COMMIT was sent but its reply was lost: the data may or may not be committed.

    Never retried automatically: retrying could write the data twice. Make the unit of work
    idempotent (a client-generated key with a unique constraint) and retry it yourself.
    """

    default_code = ErrorCode.DB_TRANSACTION_OUTCOME_UNKNOWN


class TransactionError(DatabaseError):
    """A transaction was misused or failed (closed session, aborted transaction, ...)."""

    default_code = ErrorCode.DB_TRANSACTION_ERROR


class TransactionConflictError(TransactionError):
    """Serialization failure (40001), deadlock (40P01) or a busy sqlite database; retryable."""


class PendingRollback(tortoise_exc.OperationalError):
    """A statement refused because the session's transaction needs a rollback.

    A Tortoise error, so plain Tortoise calls inside a session raise what Tortoise raises
    (on PostgreSQL, an ``OperationalError`` for a statement in an aborted transaction); the
    library's own API translates it into the :class:`TransactionError` it carries.
    """

    def __init__(self, error: TransactionError) -> None:
        super().__init__(str(error))
        self.error = error


# --- translation -------------------------------------------------------------------------

_CONNECTION_STATES = {"57P01", "57P02", "57P03"}
# Set on a 25006 (read_only_sql_transaction) raised by a statement of a readonly session
# (``db.session(readonly=True)``; see note_session_error): the caller's write in its READ
# ONLY transaction. Any other 25006 is a server that turned read-only (a standby, a demoted
# or fenced primary), which a new connection to the current primary gets past. An attribute
# of the error, not a context variable: the error is judged where it is translated, which may
# be after the session closed (with_db_retry, an exception handler), in another session or
# another task.
_IN_READONLY_SESSION = "_aegis_in_readonly_session"
_CONFLICT_STATES = {"40001", "40P01"}
# Class 22 is "data exception"; 23502/23503/23514 are not-null, foreign-key and check
# violations: all caused by the values the caller sent.
_VALUE_STATES = {"23502", "23503", "23514"}
_PG_KEY_RE = re.compile(r"Key \((?P<cols>[^)]*)\)")
_SQLITE_COLUMN_RE = re.compile(r"constraint failed: (?P<cols>[\w., ]+)")


def note_session_error(exc: BaseException, *, readonly: bool) -> None:
    """Record on a statement's error whether its session is a readonly one, for a 25006
    (the only SQLSTATE judged by it). The innermost session, the first to see it, decides."""
    root = driver_error(exc)
    if (isinstance(root, asyncpg.PostgresError) and getattr(root, "sqlstate", None) == "25006"
            and not hasattr(root, _IN_READONLY_SESSION)):
        setattr(root, _IN_READONLY_SESSION, readonly)


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def driver_error(exc: BaseException) -> BaseException:
    """Return the innermost driver exception behind ``exc`` (Tortoise wraps them).

    Tortoise 1.1.9 wraps driver errors as ``OperationalError(exc)`` / ``IntegrityError(exc)``,
    sometimes with ``from exc`` and sometimes only with the original as first argument.
    """
    seen: set[int] = set()
    current: BaseException = exc
    while id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (asyncpg.PostgresError, sqlite3.Error)):
            return current
        nxt: BaseException | None = None
        if current.args and isinstance(current.args[0], BaseException):
            nxt = current.args[0]
        elif current.__cause__ is not None:
            nxt = current.__cause__
        elif isinstance(current, tortoise_exc.BaseORMException) and current.__context__:
            nxt = current.__context__
        if nxt is None:
            break
        current = nxt
    return current


def _field_from_pg(exc: asyncpg.PostgresError) -> str | None:
    column = getattr(exc, "column_name", None)
    if column:
        return str(column)
    match = _PG_KEY_RE.search(getattr(exc, "detail", None) or "")
    if match:
        return match.group("cols")
    constraint = getattr(exc, "constraint_name", None)
    return str(constraint) if constraint else None


def _field_from_sqlite(exc: sqlite3.Error) -> str | None:
    match = _SQLITE_COLUMN_RE.search(str(exc))
    if not match:
        return None
    # "user.email" -> "email"; composite keys: "t.a, t.b" -> "a, b"
    return ", ".join(part.strip().split(".")[-1] for part in match.group("cols").split(","))


# A table the models name is missing: the schema was never created or migrated (#20).
MISSING_TABLE_HINT = (
    " (the table is missing: run the migrations, e.g. `aerich upgrade`, before starting the "
    "service; in tests and demos, create the tables with `await db.generate_schemas()`)")


def _translate_pg(exc: asyncpg.PostgresError, entity: str | None) -> ServiceException:
    state = str(getattr(exc, "sqlstate", "") or "")
    entity_name = entity or "Entity"
    details: dict[str, Any] = {"sqlstate": state}
    if state == "23505":
        field = _field_from_pg(exc)
        if field:
            details["field"] = field
        return DuplicateEntityError(entity_name, details, cause=exc)
    if state.startswith("22") or state in _VALUE_STATES:
        field = getattr(exc, "column_name", None)
        if field:
            details["field"] = field
        return ValidationError(f"Invalid value: {exc.args[0] if exc.args else exc}",
                               details=details, cause=exc)
    if state.startswith("08") or state in _CONNECTION_STATES:
        return DatabaseConnectionError(f"Database connection failed: {exc}", details=details,
                                       cause=exc)
    if state in _CONFLICT_STATES:
        return TransactionConflictError(f"Transaction conflict, retry the unit of work: {exc}",
                                        details=details, cause=exc)
    if state == "55P03":
        return LockNotAvailableError(
            f"Could not lock the {entity_name} row(s): another transaction holds the lock "
            f"({exc}). PostgreSQL has aborted the transaction (or the savepoint the statement "
            "ran in): roll back, or take locks that may fail inside "
            "TransactionManager(session).transaction() (a savepoint) to carry on",
            details={**details, "entity_type": entity_name}, cause=exc)
    if state == "25P02":
        return TransactionError(
            "The transaction is aborted after an earlier error; roll back, or wrap statements "
            "that may fail in TransactionManager(session).transaction() (a savepoint)",
            details=details, cause=exc)
    if state == "25006" and getattr(exc, _IN_READONLY_SESSION, False):
        return TransactionError(
            "Cannot write in a read-only transaction: a readonly session "
            "(db.session(readonly=True)) runs on a replica or READ ONLY on the primary; "
            f"write in a db.session() instead ({exc})", details=details, cause=exc)
    if state == "25006":
        return DatabaseConnectionError(
            f"The server is read-only ({exc}): it is a standby, or a primary that was demoted "
            "or fenced; a new connection (target_session_attrs=read-write) finds the current "
            "primary, so the unit of work can be retried", details=details, cause=exc)
    if state in ("26000", "42P05"):
        # asyncpg's named prepared statements meet another client's server connection:
        # the signature of PgBouncer in transaction (or statement) pooling mode.
        return ConfigurationError(
            f"Prepared statement error ({exc}): when connecting through PgBouncer in "
            "transaction pooling mode, add ?pgbouncer=true to the database URL (or set "
            "DATABASE_PGBOUNCER=true, or pass pgbouncer=True)", details=details, cause=exc)
    if state.startswith("28"):
        return ConfigurationError(
            "The database rejected the user or password: check the user in DATABASE_URL",
            details=details, cause=exc)
    if state == "3D000":
        return ConfigurationError(
            f"The database does not exist: {exc}; check the database name in DATABASE_URL",
            details=details, cause=exc)
    if state == "42P01":
        return DatabaseError(f"Database error: {exc}{MISSING_TABLE_HINT}", details=details,
                             cause=exc)
    return DatabaseError(f"Database error: {exc}", details=details, cause=exc)


def _translate_sqlite(exc: sqlite3.Error, entity: str | None) -> ServiceException:
    name = str(getattr(exc, "sqlite_errorname", "") or "")
    details: dict[str, Any] = {"sqlite_errorname": name} if name else {}
    if name in ("SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY"):
        field = _field_from_sqlite(exc)
        if field:
            details["field"] = field
        return DuplicateEntityError(entity or "Entity", details, cause=exc)
    if name.startswith("SQLITE_CONSTRAINT") or name in ("SQLITE_MISMATCH", "SQLITE_TOOBIG",
                                                        "SQLITE_RANGE"):
        field = _field_from_sqlite(exc)
        if field:
            details["field"] = field
        return ValidationError(f"Invalid value: {exc}", details=details, cause=exc)
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return TransactionConflictError(f"The sqlite database is busy: {exc}", details=details,
                                        cause=exc)
    if name == "SQLITE_READONLY":
        return TransactionError(
            "Cannot write: a readonly session (db.session(readonly=True)) runs with sqlite's "
            f"query_only, or the database file is read-only; write in a db.session() ({exc})",
            details=details, cause=exc)
    if name.startswith("SQLITE_CANTOPEN"):
        return ConfigurationError(f"Cannot open the sqlite database file: {exc}",
                                  details=details, cause=exc)
    if isinstance(exc, sqlite3.OperationalError) and str(exc).startswith("no such table"):
        # sqlite has no error name of its own for it (SQLITE_ERROR): the text is all there is.
        return DatabaseError(f"Database error: {exc}{MISSING_TABLE_HINT}", details=details,
                             cause=exc)
    if isinstance(exc, sqlite3.ProgrammingError) and not name:
        if "closed" in str(exc):
            # "Cannot operate on a closed database": sqlite3 gives no error name for it.
            return DatabaseConnectionError(f"The sqlite connection is closed: {exc}",
                                           details=details, cause=exc)
        # "Error binding parameter 2: type 'datetime.time' is not supported": a value the
        # driver cannot send, as asyncpg's DataError on PostgreSQL.
        return ValidationError(f"Invalid value: {exc}", details=details, cause=exc)
    return DatabaseError(f"Database error: {exc}", details=details, cause=exc)


def translate_exception(
    exc: BaseException, entity: str | None = None, *, connecting: bool = False
) -> BaseException:
    """Map a driver, Tortoise or OS exception onto the error tree.

    Returns ``exc`` itself when it is already a :class:`ServiceException` or must not be
    translated (``asyncio.CancelledError``, ``KeyboardInterrupt``, errors of the caller's
    own code). The result is chained to ``exc``.

    Args:
        exc: The exception that was raised.
        entity: The model name, used in messages ("User already exists").
        connecting: ``exc`` was raised while opening a connection. Only then do plain OS
            errors (refused, unreachable, timed out) mean "cannot reach the database"; raised
            inside a session they come from the caller's own code (a file, an HTTP call, an
            ``asyncio.timeout``) and pass through unchanged.
    """
    if isinstance(exc, ServiceException) or not isinstance(exc, Exception):
        return exc
    if isinstance(exc, PendingRollback):
        return exc.error  # chained to the earlier failure it names
    root = driver_error(exc)
    if isinstance(exc, tortoise_exc.BaseORMException) and not isinstance(
            root, (tortoise_exc.BaseORMException, asyncpg.PostgresError, sqlite3.Error,
                   asyncpg.InterfaceError, asyncpg.InternalClientError)):
        # Tortoise's own error (a field validator, bad JSON), chained to a plain Python
        # error (ValueError, ipaddress.AddressValueError): Tortoise's is the one to read.
        root = exc
    result: ServiceException | None = None
    if isinstance(root, asyncpg.PostgresError):
        result = _translate_pg(root, entity)
    elif isinstance(root, sqlite3.Error):
        result = _translate_sqlite(root, entity)
    elif isinstance(root, asyncpg.ClientConfigurationError):
        result = ConfigurationError(f"Invalid connection settings: {root}")
    elif isinstance(root, _AsyncpgArgumentError):
        # asyncpg 0.32 raises DataError (an InterfaceError) for a query argument it cannot
        # encode, e.g. an int out of int4 range, before anything is sent.
        result = ValidationError(f"Invalid value: {root}")
    elif isinstance(root, (asyncpg.InternalClientError, asyncpg.InterfaceError)):
        if isinstance(root, asyncpg.InterfaceError) and not _connection_gone(root):
            result = DatabaseError(f"Database driver error: {root}")
        else:
            result = DatabaseConnectionError(f"Database connection lost: {root}")
    elif isinstance(root, tortoise_exc.DBConnectionError):
        result = DatabaseConnectionError(f"Cannot connect to the database: {root}")
    elif connecting and isinstance(root, (OSError, TimeoutError)):
        result = DatabaseConnectionError(f"Cannot reach the database: {root!r}")
    elif isinstance(root, tortoise_exc.ObjectDoesNotExistError):
        result = EntityNotFoundError(root.model.__name__, root.pk_val)
    elif isinstance(root, tortoise_exc.DoesNotExist):
        name = root.model.__name__ if root.model is not None else entity
        result = EntityNotFoundError(name or "Entity", details={"reason": str(root)})
    elif isinstance(root, tortoise_exc.MultipleObjectsReturned):
        result = MultipleResultsFoundError(f"Multiple {entity or 'rows'} found: {root}")
    elif isinstance(root, tortoise_exc.IntegrityError):
        result = ValidationError(f"Integrity error: {root}")
    elif isinstance(root, tortoise_exc.ValidationError):
        result = _validator_error(exc, root, entity)
    elif isinstance(root, (tortoise_exc.FieldError, tortoise_exc.ParamsError)):
        result = ValidationError(str(root))
    elif isinstance(root, tortoise_exc.TransactionManagementError):
        result = TransactionError(f"Transaction error: {root}")
    elif isinstance(root, tortoise_exc.ConfigurationError):
        result = ConfigurationError(f"Tortoise configuration error: {root}")
    elif isinstance(root, tortoise_exc.OperationalError):
        result = DatabaseError(f"Database error: {root}")
    if result is None:
        return exc
    # Chained to what was raised (as ``raise ... from exc`` would), which leads to the root.
    result.__cause__ = exc
    result.cause = exc
    return result


def _validator_error(exc: BaseException, root: BaseException,
                     entity: str | None) -> ValidationError:
    """A field validator's error, naming the field.

    Tortoise 1.1.9's ``Field.validate`` raises ``ValidationError("name: <reason>")`` chained
    to the validator's own error, which has no field name: the outer message is the one that
    names the field.
    """
    outer = exc if isinstance(exc, tortoise_exc.ValidationError) else root
    text = str(outer)
    field, colon, reason = text.partition(": ")
    if not (colon and field.isidentifier()
            and isinstance(outer.__cause__, tortoise_exc.ValidationError)):
        return ValidationError(f"Invalid value: {text}")
    where = f"{entity}.{field}" if entity else field
    return ValidationError(f"Invalid {where}: {reason}", details={"field": field})


def _connection_gone(exc: BaseException) -> bool:
    """Whether an asyncpg ``InterfaceError`` means the connection is unusable.

    asyncpg 0.32 gives these no SQLSTATE; they are raised on a connection that was closed or
    released, which is what "connection lost" looks like from the client side.
    """
    text = str(exc)
    return "closed" in text or "released back to the pool" in text or "not connected" in text


@contextmanager
def translate_errors(entity: str | None = None, *, connecting: bool = False
                     ) -> Iterator[None]:
    """Translate any driver/Tortoise error raised in the block into the error tree.

    Args:
        entity: The model name, used in messages.
        connecting: The block opens a connection (see :func:`translate_exception`).

    Example:
        >>> with translate_errors(entity="User"):
        ...     await User.create(email=email)
    """
    try:
        yield
    except Exception as exc:
        translated = translate_exception(exc, entity, connecting=connecting)
        if translated is exc:
            raise
        raise translated from translated.__cause__ or exc

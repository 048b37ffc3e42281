"""The error tree, its codes, and the translation of driver errors (no database)."""

from __future__ import annotations

import asyncio
import sqlite3

import asyncpg
import pytest
from asyncpg.exceptions._base import DataError as AsyncpgArgumentError
from tortoise import exceptions as tortoise_exc

from aegis_tortoise import (
    AegisBaseException,
    ConfigurationError,
    DatabaseConnectionError,
    DatabaseError,
    DuplicateEntityError,
    EntityNotFoundError,
    ErrorCode,
    InvalidFilterError,
    PoolTimeoutError,
    ServiceException,
    TransactionConflictError,
    TransactionError,
    TransactionOutcomeUnknownError,
    ValidationError,
    translate_errors,
)
from aegis_tortoise.errors import translate_exception


def _sqlite_error(cls: type[sqlite3.Error], name: str, message: str) -> sqlite3.Error:
    exc = cls(message)
    exc.sqlite_errorname = name  # type: ignore[attr-defined]
    return exc


@pytest.mark.parametrize(("error", "code", "status"), [
    (EntityNotFoundError("User", 5), "COMMON_1004", 404),
    (DuplicateEntityError("User"), "COMMON_1005", 409),
    (DatabaseError("boom"), "COMMON_1009", 500),
    (DatabaseConnectionError("down"), "DB_2000", 503),
    (TransactionError("bad"), "DB_2002", 500),
    (ValidationError("bad value"), "COMMON_1001", 400),
    (InvalidFilterError("bad filter"), "COMMON_1001", 400),
    (PoolTimeoutError("busy"), "DB_2001", 503),
    (TransactionOutcomeUnknownError("unknown"), "DB_2003", 503),
])
def test_codes_and_status(error: ServiceException, code: str, status: int) -> None:
    assert error.error_code == code
    assert error.status_code == status
    body = error.to_dict()
    assert body == {"error_code": code, "message": error.message, "details": error.details,
                    "status_code": status}


def test_seed_messages_and_hierarchy() -> None:
    assert str(EntityNotFoundError("User", 5)) == "User not found: 5"
    assert EntityNotFoundError("User", 5).to_dict()["details"] == {
        "entity_type": "User", "entity_id": 5}
    assert str(DuplicateEntityError("User")) == "User already exists"
    dup = DuplicateEntityError("User", {"field": "email"})
    assert dup.field == "email"
    assert "email" in dup.message
    assert AegisBaseException is ServiceException
    assert issubclass(PoolTimeoutError, DatabaseConnectionError)
    assert issubclass(TransactionOutcomeUnknownError, DatabaseConnectionError)
    assert issubclass(DatabaseConnectionError, DatabaseError)
    assert issubclass(TransactionError, DatabaseError)
    assert issubclass(InvalidFilterError, ValidationError)
    assert ErrorCode.DB_CONNECTION_ERROR == "DB_2000"


def test_explicit_error_code_status_and_cause() -> None:
    cause = RuntimeError("root")
    err = ServiceException("x", error_code="CUSTOM_1", status_code=418, details={"a": 1},
                           cause=cause)
    assert (err.error_code, err.status_code, err.details, err.cause) == ("CUSTOM_1", 418,
                                                                         {"a": 1}, cause)
    assert err.__cause__ is cause


@pytest.mark.parametrize(("driver", "expected"), [
    # Decided by SQLSTATE: the message text is deliberately not English.
    (asyncpg.UniqueViolationError("doppelter Schlüssel"), DuplicateEntityError),
    (asyncpg.NotNullViolationError("Nullwert"), ValidationError),
    (asyncpg.ForeignKeyViolationError("Fremdschlüssel"), ValidationError),
    (asyncpg.CheckViolationError("Check"), ValidationError),
    (asyncpg.NumericValueOutOfRangeError("außerhalb"), ValidationError),
    (asyncpg.AdminShutdownError("beendet"), DatabaseConnectionError),
    (asyncpg.CrashShutdownError("abgestürzt"), DatabaseConnectionError),
    (asyncpg.CannotConnectNowError("startet"), DatabaseConnectionError),
    (asyncpg.ConnectionDoesNotExistError("weg"), DatabaseConnectionError),
    (asyncpg.ConnectionFailureError("weg"), DatabaseConnectionError),
    (asyncpg.SerializationError("Serialisierung"), TransactionConflictError),
    (asyncpg.DeadlockDetectedError("Verklemmung"), TransactionConflictError),
    (asyncpg.InFailedSQLTransactionError("abgebrochen"), TransactionError),
    (asyncpg.InvalidPasswordError("Passwort"), ConfigurationError),
    (asyncpg.InvalidCatalogNameError("Datenbank"), ConfigurationError),
    (asyncpg.UndefinedTableError("Tabelle"), DatabaseError),
    (asyncpg.InterfaceError("cannot perform operation: connection is closed"),
     DatabaseConnectionError),
    (AsyncpgArgumentError("invalid input for query argument $1"), ValidationError),
    (_sqlite_error(sqlite3.IntegrityError, "SQLITE_CONSTRAINT_UNIQUE", "irgendwas"),
     DuplicateEntityError),
    (_sqlite_error(sqlite3.IntegrityError, "SQLITE_CONSTRAINT_PRIMARYKEY", "x"),
     DuplicateEntityError),
    (_sqlite_error(sqlite3.IntegrityError, "SQLITE_CONSTRAINT_NOTNULL", "UNIQUE constraint"),
     ValidationError),
    (_sqlite_error(sqlite3.OperationalError, "SQLITE_BUSY", "locked"), TransactionConflictError),
    (_sqlite_error(sqlite3.OperationalError, "SQLITE_ERROR", "no such table"), DatabaseError),
    (tortoise_exc.DBConnectionError("refused"), DatabaseConnectionError),
    (tortoise_exc.TransactionManagementError("bad"), TransactionError),
])
def test_translation_by_code(driver: Exception, expected: type[ServiceException]) -> None:
    translated = translate_exception(driver, "User")
    assert type(translated) is expected
    assert translated.__cause__ is driver
    # Tortoise wraps driver errors, with or without "from": the inner one decides.
    wrapped = tortoise_exc.OperationalError(driver)
    assert type(translate_exception(wrapped, "User")) is expected
    assert translate_exception(wrapped, "User").__cause__ is wrapped


def test_duplicate_names_entity_and_field() -> None:
    exc = asyncpg.UniqueViolationError("dup")
    exc.detail = "Key (email)=(a@x) already exists."  # type: ignore[attr-defined]
    translated = translate_exception(exc, "User")
    assert isinstance(translated, DuplicateEntityError)
    assert translated.details == {"entity_type": "User", "sqlstate": "23505", "field": "email"}
    sqlite_exc = _sqlite_error(sqlite3.IntegrityError, "SQLITE_CONSTRAINT_UNIQUE",
                               "UNIQUE constraint failed: users.email")
    assert translate_exception(sqlite_exc, "User").details["field"] == "email"  # type: ignore[attr-defined]


def test_tortoise_not_found_names_the_model() -> None:
    from aegis_tortoise.examples.models import User

    translated = translate_exception(tortoise_exc.DoesNotExist(User))
    assert isinstance(translated, EntityNotFoundError)
    assert translated.entity_type == "User"


@pytest.mark.parametrize("error", [
    ValueError("mine"), KeyError("k"), OSError("file"), ConnectionRefusedError(111, "x"),
    TimeoutError(), RuntimeError("x"),
])
def test_callers_own_errors_pass_through(error: Exception) -> None:
    assert translate_exception(error) is error


@pytest.mark.parametrize("error", [ConnectionRefusedError(111, "refused"), TimeoutError(),
                                   OSError(113, "No route to host")])
def test_os_errors_while_connecting_are_connection_errors(error: Exception) -> None:
    translated = translate_exception(error, connecting=True)
    assert isinstance(translated, DatabaseConnectionError)
    assert translated.__cause__ is error


def test_cancellation_and_service_exceptions_are_untouched() -> None:
    cancelled = asyncio.CancelledError()
    assert translate_exception(cancelled) is cancelled
    mine = EntityNotFoundError("User", 1)
    assert translate_exception(mine) is mine


def test_translate_errors_context_manager_chains() -> None:
    driver = asyncpg.UniqueViolationError("dup")
    with pytest.raises(DuplicateEntityError) as info, translate_errors(entity="Policy"):
        raise tortoise_exc.IntegrityError(driver)
    assert info.value.entity_type == "Policy"
    assert isinstance(info.value.__cause__, tortoise_exc.IntegrityError)
    with pytest.raises(ValueError, match="mine"), translate_errors():
        raise ValueError("mine")

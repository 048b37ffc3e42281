"""with_db_retry and is_transient (no database): what is retried, how often, how long."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import sqlite3

import asyncpg
import pytest
from tortoise import exceptions as tortoise_exc

from aegis_tortoise import (
    ConfigurationError,
    DatabaseConnectionError,
    DatabaseError,
    DuplicateEntityError,
    EntityNotFoundError,
    InvalidFilterError,
    PoolTimeoutError,
    TransactionConflictError,
    TransactionError,
    TransactionOutcomeUnknownError,
    ValidationError,
    db_retry,
    is_transient,
    with_db_retry,
)


def _sqlite_error(cls: type[sqlite3.Error], name: str) -> sqlite3.Error:
    exc = cls(name)
    exc.sqlite_errorname = name  # type: ignore[attr-defined]
    return exc


TRANSIENT = [
    # lost or refused connections
    ConnectionRefusedError(111, "Connection refused"),
    ConnectionResetError(104, "Connection reset by peer"),
    socket.gaierror(-2, "Name or service not known"),
    asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    asyncpg.InterfaceError("cannot perform operation: connection is closed"),
    tortoise_exc.DBConnectionError("can't connect"),
    # SQLSTATE class 08 and 57P01-57P03
    asyncpg.PostgresConnectionError("08000"),
    asyncpg.ConnectionFailureError("08006"),
    asyncpg.ClientCannotConnectError("08001"),
    asyncpg.ProtocolViolationError("08P01"),
    asyncpg.AdminShutdownError("57P01"),
    asyncpg.CrashShutdownError("57P02"),
    asyncpg.CannotConnectNowError("57P03"),
    # serialization failure, deadlock
    asyncpg.SerializationError("40001"),
    asyncpg.DeadlockDetectedError("40P01"),
    # ... also wrapped by Tortoise
    tortoise_exc.OperationalError(asyncpg.SerializationError("40001")),
    tortoise_exc.OperationalError(asyncpg.AdminShutdownError("57P01")),
    # sqlite's lock conflicts (its analogue of 40001/40P01)
    _sqlite_error(sqlite3.OperationalError, "SQLITE_BUSY"),
    # a DatabaseConnectionError raised by the wrapped code, and the library's own classes
    DatabaseConnectionError("the database is down"),
    TransactionConflictError("conflict"),
    DatabaseError("wrapped"),  # given a transient __cause__ below
]
TRANSIENT[-1].__cause__ = asyncpg.AdminShutdownError("57P01")

NOT_TRANSIENT = [
    PoolTimeoutError("pool exhausted"),
    TransactionOutcomeUnknownError("commit reply lost"),
    DuplicateEntityError("User"),
    EntityNotFoundError("User", 1),
    ValidationError("bad"),
    InvalidFilterError("bad filter"),
    ConfigurationError("bad url"),
    TransactionError("aborted"),
    DatabaseError("generic"),
    asyncpg.UniqueViolationError("23505"),
    asyncpg.ForeignKeyViolationError("23503"),
    asyncpg.NotNullViolationError("23502"),
    asyncpg.InFailedSQLTransactionError("25P02"),
    asyncpg.UndefinedTableError("42P01"),
    asyncpg.PostgresSyntaxError("42601"),
    asyncpg.InvalidPasswordError("28P01"),
    asyncpg.QueryCanceledError("57014"),
    tortoise_exc.IntegrityError(asyncpg.UniqueViolationError("23505")),
    tortoise_exc.ValidationError("bad"),
    tortoise_exc.FieldError("no field"),
    _sqlite_error(sqlite3.IntegrityError, "SQLITE_CONSTRAINT_UNIQUE"),
    _sqlite_error(sqlite3.OperationalError, "SQLITE_ERROR"),
    TimeoutError(),
    ValueError("mine"),
    TypeError("mine"),
    KeyError("k"),
    asyncio.CancelledError(),
    KeyboardInterrupt(),
]


@pytest.mark.parametrize("exc", TRANSIENT, ids=lambda e: type(e).__name__)
def test_transient(exc: BaseException) -> None:
    assert is_transient(exc) is True


@pytest.mark.parametrize("exc", NOT_TRANSIENT, ids=lambda e: type(e).__name__)
def test_not_transient(exc: BaseException) -> None:
    assert is_transient(exc) is False


def test_translated_errors_agree_with_raw_ones() -> None:
    from aegis_tortoise.errors import translate_exception

    for exc in [*TRANSIENT[:-1], *NOT_TRANSIENT]:
        translated = translate_exception(exc)
        if translated is not exc:
            assert is_transient(translated) == is_transient(exc), exc


class Flaky:
    """``op`` fails with ``error`` the first ``failures`` calls, then returns the call number."""

    def __init__(self, error: BaseException, failures: int) -> None:
        self.error = error
        self.failures = failures
        self.calls = 0

    async def op(self) -> int:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return self.calls


async def test_succeeds_on_a_later_attempt() -> None:
    flaky = Flaky(DatabaseConnectionError("down"), failures=2)
    wrapped = with_db_retry(max_attempts=3, backoff_factor=0.001)(flaky.op)
    assert await wrapped() == 3
    assert flaky.calls == 3


async def test_gives_up_after_max_attempts_with_connection_error_chained() -> None:
    cause = asyncpg.AdminShutdownError("terminating connection")
    flaky = Flaky(cause, failures=10)
    wrapped = with_db_retry(max_attempts=3, backoff_factor=0.001)(flaky.op)
    with pytest.raises(DatabaseConnectionError) as info:
        await wrapped()
    assert flaky.calls == 3
    assert info.value.__cause__ is cause
    assert info.value.details["attempts"] == 3


async def test_max_retries_is_an_exact_alias() -> None:
    flaky = Flaky(ConnectionResetError(104, "reset"), failures=10)
    with pytest.raises(DatabaseConnectionError):
        await with_db_retry(max_retries=4, backoff_factor=0)(flaky.op)()
    assert flaky.calls == 4
    with pytest.raises(ConfigurationError):
        with_db_retry(max_attempts=2, max_retries=3)
    assert with_db_retry(max_attempts=2, max_retries=2)(flaky.op).retry_attempts == 2  # type: ignore[attr-defined]


async def test_one_attempt_means_no_retry() -> None:
    flaky = Flaky(DatabaseConnectionError("down"), failures=1)
    with pytest.raises(DatabaseConnectionError):
        await with_db_retry(max_attempts=1, backoff_factor=0)(flaky.op)()
    assert flaky.calls == 1


@pytest.mark.parametrize("error", [
    PoolTimeoutError("pool exhausted"),
    TransactionOutcomeUnknownError("commit reply lost"),
    DuplicateEntityError("User"),
    ValidationError("bad"),
    asyncpg.UniqueViolationError("23505"),
    TimeoutError(),
    ValueError("mine"),
], ids=lambda e: type(e).__name__)
async def test_never_retried_and_raised_unchanged(error: Exception) -> None:
    flaky = Flaky(error, failures=10)
    with pytest.raises(type(error)) as info:
        await with_db_retry(max_attempts=5, backoff_factor=0)(flaky.op)()
    assert info.value is error
    assert flaky.calls == 1


async def test_non_transient_error_on_a_retry_is_raised_unchanged() -> None:
    calls = 0

    @with_db_retry(max_attempts=5, backoff_factor=0)
    async def op() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise DatabaseConnectionError("down")
        raise DuplicateEntityError("User")

    with pytest.raises(DuplicateEntityError):
        await op()
    assert calls == 2


async def test_cancellation_is_never_retried() -> None:
    started = asyncio.Event()
    calls = 0

    @with_db_retry(max_attempts=5, backoff_factor=0)
    async def op() -> None:
        nonlocal calls
        calls += 1
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(op())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert calls == 1


async def test_waits_double_from_backoff_factor(caplog: pytest.LogCaptureFixture) -> None:
    flaky = Flaky(DatabaseConnectionError("down"), failures=10)
    wrapped = with_db_retry(max_attempts=4, backoff_factor=0.01)(flaky.op)
    with caplog.at_level(logging.WARNING, logger="aegis_tortoise.retry"), \
            pytest.raises(DatabaseConnectionError):
        await wrapped()
    waits = [float(m.group(1)) for r in caplog.records
             if (m := re.search(r"retrying in ([\d.]+) s", r.getMessage()))]
    # before the k-th retry: backoff_factor * 2**(k-1)
    assert waits == [0.01, 0.02, 0.04]
    assert flaky.calls == 4


def test_wait_is_capped_at_30_seconds() -> None:
    from tenacity import RetryCallState

    wrapped = with_db_retry(max_attempts=20, backoff_factor=2)(Flaky(ValueError(), 0).op)
    wait = wrapped.retry_wait  # type: ignore[attr-defined]
    state = RetryCallState(None, None, (), {})
    seconds = []
    for attempt in range(1, 8):
        state.attempt_number = attempt
        seconds.append(wait(state))
    assert seconds == [2, 4, 8, 16, 30, 30, 30]


async def test_defaults_come_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_RETRY_ATTEMPTS", "2")
    monkeypatch.setenv("DATABASE_RETRY_BACKOFF", "0")
    flaky = Flaky(DatabaseConnectionError("down"), failures=10)
    wrapped = db_retry(flaky.op)
    assert (wrapped.retry_attempts, wrapped.retry_backoff) == (2, 0)  # type: ignore[attr-defined]
    with pytest.raises(DatabaseConnectionError):
        await wrapped()
    assert flaky.calls == 2


def test_misuse_is_a_configuration_error() -> None:
    def not_async() -> None: ...

    with pytest.raises(ConfigurationError, match="async"):
        with_db_retry(max_attempts=2, backoff_factor=0)(not_async)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        with_db_retry(max_attempts=0, backoff_factor=0)(Flaky(ValueError(), 0).op)

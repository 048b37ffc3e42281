"""with_db_retry / db_retry: retry transient database failures, built on tenacity.

:func:`is_transient` is the single predicate that decides what is retried; call it directly
in tests or in your own retry loops.
"""

from __future__ import annotations

import functools
import inspect
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar, overload

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    RetryError,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from aegis_tortoise._observe import count_retry
from aegis_tortoise.errors import (
    ConfigurationError,
    DatabaseConnectionError,
    DatabaseError,
    PoolTimeoutError,
    ServiceException,
    TransactionConflictError,
    TransactionOutcomeUnknownError,
    translate_exception,
)

__all__ = ["MAX_BACKOFF", "db_retry", "is_transient", "with_db_retry"]

logger = logging.getLogger("aegis_tortoise.retry")

#: The longest wait between two attempts, in seconds.
MAX_BACKOFF = 30.0

P = ParamSpec("P")
R = TypeVar("R")


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the unit of work that raised ``exc`` can succeed.

    True for lost or refused connections, server shutdown/restart (SQLSTATE class 08,
    57P01-57P03), a write that met a read-only server (25006 outside a readonly session: a
    standby, or a demoted primary, under Patroni for instance), serialization failures
    (40001), deadlocks (40P01), sqlite's
    ``SQLITE_BUSY``/``SQLITE_LOCKED`` (its lock conflicts) and any
    :class:`DatabaseConnectionError`. False for :class:`PoolTimeoutError`,
    :class:`TransactionOutcomeUnknownError`, cancellation, and every other error:
    integrity, validation, configuration and programming errors, timeouts of the caller's own.

    Raw driver and Tortoise exceptions are judged by what :func:`translate_exception` makes of
    them, so the predicate and the error classes can never disagree.
    """
    if not isinstance(exc, Exception):
        return False  # CancelledError, KeyboardInterrupt, SystemExit
    if isinstance(exc, ServiceException):
        if _transient_class(exc):
            return True
        # A generic error raised "from" a driver error is judged by that error.
        cause = exc.__cause__
        return (type(exc) is DatabaseError and cause is not None
                and not isinstance(cause, ServiceException) and _transient_raw(cause))
    return _transient_raw(exc)


def _transient_class(exc: ServiceException) -> bool:
    if isinstance(exc, (PoolTimeoutError, TransactionOutcomeUnknownError)):
        return False
    return isinstance(exc, (DatabaseConnectionError, TransactionConflictError))


def _transient_raw(exc: BaseException) -> bool:
    if isinstance(exc, (ConnectionError, socket.gaierror)):
        return True  # refused, reset or unresolvable: raised by a connect in the caller's code
    translated = translate_exception(exc)
    return isinstance(translated, ServiceException) and _transient_class(translated)


def _defaults() -> tuple[int, float]:
    from aegis_tortoise.config import DatabaseSettings

    settings = DatabaseSettings()
    return settings.database_retry_attempts, settings.database_retry_backoff


def _log_retry(func_name: str) -> Callable[[RetryCallState], None]:
    def before_sleep(state: RetryCallState) -> None:
        count_retry()  # db.stats()["retries"]
        exc = state.outcome.exception() if state.outcome else None
        logger.warning("%s: attempt %d failed with %s: %s; retrying in %.2f s", func_name,
                       state.attempt_number, type(exc).__name__, exc,
                       state.next_action.sleep if state.next_action else 0.0)
    return before_sleep


@overload
def with_db_retry(func: Callable[P, Awaitable[R]], /) -> Callable[P, Awaitable[R]]: ...
@overload
def with_db_retry(
    func: None = None, /, *, max_attempts: int | None = None,
    backoff_factor: float | None = None, max_retries: int | None = None,
    max_backoff: float = MAX_BACKOFF, jitter: float = 0.0,
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]: ...
def with_db_retry(
    func: Callable[P, Awaitable[R]] | None = None, /, *, max_attempts: int | None = None,
    backoff_factor: float | None = None, max_retries: int | None = None,
    max_backoff: float = MAX_BACKOFF, jitter: float = 0.0,
) -> Any:
    """Retry an async function on transient database failures.

    Args:
        max_attempts: Calls in all, the first included (default ``DATABASE_RETRY_ATTEMPTS``).
        backoff_factor: The wait before the k-th retry is ``backoff_factor * 2**(k-1)``
            seconds, capped at ``max_backoff`` (default ``DATABASE_RETRY_BACKOFF``).
        max_retries: An exact alias of ``max_attempts`` (the original library's name).
        max_backoff: The cap on one wait, 30 s by default.
        jitter: Up to this many random seconds added to each wait.

    Raises:
        DatabaseConnectionError: after the last attempt failed transiently, chained to the
            last failure. Any other error is raised at once, unchanged.

    Example:
        >>> @with_db_retry(max_attempts=3, backoff_factor=2)
        ... async def create_user(data): ...
    """
    if max_attempts is not None and max_retries is not None and max_attempts != max_retries:
        raise ConfigurationError("with_db_retry: give max_attempts or max_retries, not both")
    attempts_arg = max_attempts if max_attempts is not None else max_retries

    def decorate(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        if not inspect.iscoroutinefunction(fn):
            raise ConfigurationError(
                f"with_db_retry decorates async functions; {fn.__qualname__} is not one")
        attempts, backoff = attempts_arg, backoff_factor
        if attempts is None or backoff is None:
            default_attempts, default_backoff = _defaults()
            attempts = default_attempts if attempts is None else attempts
            backoff = default_backoff if backoff is None else backoff
        if attempts < 1:
            raise ConfigurationError(f"with_db_retry: max_attempts must be >= 1, got {attempts}")
        if backoff < 0:
            raise ConfigurationError(
                f"with_db_retry: backoff_factor must be >= 0, got {backoff}")
        wait = wait_exponential(multiplier=backoff, exp_base=2, min=0, max=max_backoff)
        if jitter:
            wait = wait + wait_random(0, jitter)  # type: ignore[assignment]
        retrying = AsyncRetrying(
            stop=stop_after_attempt(attempts),
            wait=wait,
            retry=retry_if_exception(is_transient),
            before_sleep=_log_retry(fn.__qualname__),
            reraise=False,
        )

        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                async for attempt in retrying.copy():
                    with attempt:
                        return await fn(*args, **kwargs)
            except RetryError as exc:
                last = exc.last_attempt.exception()
                raise DatabaseConnectionError(
                    f"{fn.__qualname__} failed after {attempts} attempts: "
                    f"{type(last).__name__}: {last}",
                    details={"attempts": attempts}, cause=last,
                ) from last
            raise AssertionError("unreachable")  # pragma: no cover

        wrapper.retry_attempts = attempts  # type: ignore[attr-defined]
        wrapper.retry_backoff = backoff  # type: ignore[attr-defined]
        wrapper.retry_wait = wait  # type: ignore[attr-defined]
        return wrapper

    if func is not None:
        return decorate(func)
    return decorate


db_retry = with_db_retry

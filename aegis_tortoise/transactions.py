"""TransactionManager and @transactional: all-or-nothing blocks inside or around a session."""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from tortoise.exceptions import BaseORMException

from aegis_tortoise._isolation import isolation_level
from aegis_tortoise.errors import ConfigurationError, TransactionError, translate_exception
from aegis_tortoise.session import Session

if TYPE_CHECKING:
    from aegis_tortoise.manager import DatabaseManager

__all__ = ["TransactionManager", "transactional"]

P = ParamSpec("P")
R = TypeVar("R")


class TransactionManager:
    """All-or-nothing blocks.

    ``TransactionManager(session).transaction()`` is a savepoint inside the session: a failure
    inside it undoes only its own work, re-raises, and the session stays usable (a failed
    statement outside a savepoint would leave the whole transaction needing a rollback). An
    error caught inside the block still undoes the block: its end raises TransactionError.
    ``TransactionManager(db).transaction()`` opens a new session and yields it.

    Errors of plain Tortoise calls in the block (``DoesNotExist``, ``IntegrityError``) leave
    it as Tortoise raised them; driver errors become this library's errors.
    """

    def __init__(self, target: Session | DatabaseManager) -> None:
        from aegis_tortoise.manager import DatabaseManager

        if not isinstance(target, (Session, DatabaseManager)):
            raise ConfigurationError(
                "TransactionManager takes a Session or a DatabaseManager, not "
                f"{type(target).__name__}")
        self.target = target

    def __repr__(self) -> str:
        return f"TransactionManager({self.target!r})"

    @asynccontextmanager
    async def transaction(self, *, isolation: str | None = None) -> AsyncIterator[Session]:
        """Run the block all or nothing; yields the session it runs in.

        Args:
            isolation: Given a manager, the new session's isolation level
                (``"read committed"``, ``"repeatable read"``, ``"serializable"``).

        Raises:
            TransactionError: ``isolation`` asked of a session's savepoint: a savepoint runs
                at its transaction's level.
        """
        if isinstance(self.target, Session):
            session = self.target
            if isolation is not None:
                level = isolation_level(isolation)
                raise TransactionError(
                    f"A savepoint cannot run at another isolation level ({level!r}): it is "
                    "part of the session's transaction, which has one level. Open a session "
                    "with it: TransactionManager(db).transaction(isolation=...) or "
                    "db.session(isolation=...)",
                    details={"isolation": level, "current": session.isolation})
            try:
                async with session.savepoint():
                    yield session
            except BaseORMException:
                raise  # a plain Tortoise call's own error (DoesNotExist, IntegrityError...)
            except Exception as exc:
                translated = translate_exception(exc)
                if translated is exc:
                    raise
                raise translated from exc
        else:
            async with self.target.session(isolation=isolation) as session:
                yield session


def transactional(func: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Run a method of an object with ``.db_manager`` in a new session.

    The session is passed as the argument ``session`` when the method has one and the
    caller gave none (or ``None``); plain Tortoise calls inside the method join its
    transaction either way. When the caller passes an open session (by keyword or
    position), the method runs in a savepoint of that session instead.
    """
    signature = inspect.signature(func)
    accepts_session = "session" in signature.parameters

    @functools.wraps(func)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if not args or not hasattr(args[0], "db_manager"):
            raise ConfigurationError(
                f"@transactional on {func.__qualname__} needs a method of an object with a "
                "'db_manager' attribute (a DatabaseManager)")
        bound = signature.bind_partial(*args, **kwargs) if accepts_session else None
        given = bound.arguments.get("session") if bound is not None else None
        if isinstance(given, Session):
            async with TransactionManager(given).transaction():
                return await func(*args, **kwargs)
        manager: Any = args[0].db_manager
        async with manager.session() as session:
            if bound is None:
                return await func(*args, **kwargs)
            bound.arguments["session"] = session
            return await func(*bound.args, **bound.kwargs)

    return wrapper

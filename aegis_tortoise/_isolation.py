"""Transaction isolation levels: their names, and the server's default per connection.

A session's level is the one given to ``db.session(isolation=...)``, else the manager's
``isolation_level`` (``DATABASE_ISOLATION_LEVEL``), else none: its transactions then run at
the server's ``default_transaction_isolation``. Reads before a session's first write skip
BEGIN only where the effective level is READ COMMITTED (:mod:`aegis_tortoise._lazy_reads`):
under REPEATABLE READ and SERIALIZABLE a read outside the transaction would not belong to
its snapshot, and a read-modify-write would lose updates.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from aegis_tortoise.errors import ConfigurationError, TransactionError

if TYPE_CHECKING:
    from aegis_tortoise.session import Session

__all__ = ["LEVELS", "READ_COMMITTED", "asyncpg_isolation", "cached_default", "isolation_level",
           "remember_default", "settable_level"]

READ_COMMITTED = "read committed"
REPEATABLE_READ = "repeatable read"
SERIALIZABLE = "serializable"
#: The levels a session may ask for, as PostgreSQL spells them.
LEVELS = (READ_COMMITTED, REPEATABLE_READ, SERIALIZABLE)

_ASYNCPG = {READ_COMMITTED: "read_committed", REPEATABLE_READ: "repeatable_read",
            SERIALIZABLE: "serializable"}

# default_transaction_isolation of each pooled asyncpg connection, read once (SHOW) the first
# time a session on it needs it. asyncpg's Connection has __slots__ (with __weakref__): the
# cache lives here and goes with the connection.
_server_defaults: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def isolation_level(value: object, field: str = "isolation") -> str | None:
    """``value`` as one of :data:`LEVELS` (case, ``_`` and ``-`` do not matter); None stays None.

    Raises:
        ConfigurationError: any other value, naming ``field``.
    """
    if value is None:
        return None
    if isinstance(value, str):
        name = " ".join(value.replace("_", " ").replace("-", " ").lower().split())
        if name in LEVELS:
            return name
    raise ConfigurationError(
        f"{field} must be one of {', '.join(repr(level) for level in LEVELS)} (or None for "
        f"the server's default), got {value!r}", details={"field": field})


def asyncpg_isolation(level: str | None) -> str | None:
    """The name asyncpg's ``Connection.transaction(isolation=...)`` takes."""
    return None if level is None else _ASYNCPG[level]


def cached_default(conn: Any) -> str | None:
    """The server's default level on ``conn``, if it has been read."""
    return _server_defaults.get(conn)


def remember_default(conn: Any, value: str) -> str:
    """Cache what ``SHOW default_transaction_isolation`` answered on ``conn``."""
    level = " ".join(value.lower().split())
    _server_defaults[conn] = level
    return level


def settable_level(session: Session, value: object) -> str | None:
    """``value`` checked as the level of ``session``'s next transaction.

    Raises:
        TransactionError: the session's transaction has begun, or a savepoint is open.
    """
    level = isolation_level(value)
    if session._began or session._savepoints:
        raise TransactionError(
            f"Cannot change the isolation level to {level!r}: the session's transaction has "
            "already begun, and a transaction's level is fixed by its first statement. Pass "
            "isolation= to db.session() (or TransactionManager(db).transaction()), or call "
            "set_isolation() before the first statement or right after commit()/rollback()",
            details={"isolation": level, "current": session._isolation})
    return level

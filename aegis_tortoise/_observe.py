"""What a manager's pool looks like right now (for health checks and ``db.stats()``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aegis_tortoise.manager import DatabaseManager

__all__ = ["pool_state"]


def pool_state(db: DatabaseManager) -> dict[str, Any]:
    """The pool's connections: open (``size``), ``in_use``, ``idle`` and ``max_size``.

    Reads counters only: it never connects or waits. A manager that has not connected yet
    reports ``size == 0``.
    """
    client: Any = db._root_client
    if db.dialect == "sqlite":
        connected = client is not None and client._connection is not None
        in_use = int(connected and client._lock.locked())
        return {"size": int(connected), "in_use": in_use, "idle": int(connected) - in_use,
                "max_size": 1}
    pool: Any = client._pool if client is not None else None
    max_size = db.pool_size + db.max_overflow
    if pool is None:
        return {"size": 0, "in_use": 0, "idle": 0, "max_size": max_size}
    size = int(pool.get_size())
    idle = int(pool.get_idle_size())
    return {"size": size, "in_use": size - idle, "idle": idle, "max_size": max_size}

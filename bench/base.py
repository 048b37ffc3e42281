"""What every contender implements; the harness calls nothing else.

A contender implements the operations it takes part in (``create``, ``get``, ``list_page``,
``count``, ``update``, ``relations``, ``create_many``, ``pool_env``); a missing method means
"not in this contender" and leaves the table cell empty. Operations return the library's own
objects (an ORM instance, an asyncpg record); turning them into plain values for the checks
happens outside the timed code, in the ``norm_*`` methods.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


class PoolEnv:
    """A fresh pool of 20 connections for the concurrent operation; closed after a sample.

    Each sample of the concurrent operation gets its own pool so that four contenders never
    hold 4 x 20 idle connections at once (the server allows 100, shared with other users).
    """

    async def get_update(self, user_id: int, name: str) -> Any:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    def activate(self) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()


class Contender:
    """One way of talking to the database (A, B, D or E) on one backend."""

    key = "?"
    name = "?"
    backend = "postgres"

    async def start(self) -> None:
        """Connect (untimed)."""

    async def close(self) -> None:
        """Release every connection."""

    def activate(self) -> contextlib.AbstractContextManager[Any]:
        """Entered around every sample (plain Tortoise binds its context here)."""
        return contextlib.nullcontext()

    def has(self, method: str) -> bool:
        return callable(getattr(self, method, None))

    # -- turning results into plain values, for the checks only ------------------------------

    def norm_user(self, obj: Any) -> tuple[int, str, str] | None:
        """(id, email, name) of a returned user."""
        if obj is None:
            return None
        return (_get(obj, "id"), _get(obj, "email"), _get(obj, "name"))

    def norm_relations(self, result: Any) -> list[tuple[int, list[int]]]:
        """[(user id, [policy.user_id, ...]), ...] in the returned order."""
        return [(u.id, [p.user_id for p in u.policies]) for u in result]

    def norm_ids(self, result: Any) -> list[int] | None:
        """The ids create_many returned (None when the contender returns no ids)."""
        if result is None:
            return None
        return [_get(obj, "id") if not isinstance(obj, int) else obj for obj in result]

    # -- sqlite contenders run their checks through their own (only) connection -------------

    async def sql(self, statement: str) -> list[tuple[Any, ...]]:
        raise NotImplementedError


def _get(obj: Any, name: str) -> Any:
    try:
        return getattr(obj, name)
    except AttributeError:
        return obj[name]


@contextlib.contextmanager
def nothing() -> Iterator[None]:
    yield

"""Row locks (``for_update=``) and advisory-lock keys.

``for_update=True`` appends ``FOR UPDATE`` to the read, ``"nowait"`` ``FOR UPDATE NOWAIT``
(a row held elsewhere: :class:`LockNotAvailableError`), ``"skip_locked"``
``FOR UPDATE SKIP LOCKED`` (rows held elsewhere are left out: a work-queue claim). Only the
read's own table is locked (``FOR UPDATE OF``), also when a filter joins another; ``of=``
may name it. On sqlite, which has no row locks, the session takes the database's write lock
when its transaction begins (``BEGIN IMMEDIATE``). A readonly session takes no lock: it may
run on a replica, where a lock would exclude nobody writing on the primary.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from tortoise.models import Model

from aegis_tortoise.errors import (
    InvalidFilterError,
    LockNotAvailableError,
    TransactionError,
    ValidationError,
)

if TYPE_CHECKING:
    from aegis_tortoise.session import Session

__all__ = ["ForUpdate", "LockMode", "LockOf", "advisory_key", "lock_of", "refuse_readonly",
           "take_advisory_lock"]

LockMode = bool | Literal["nowait", "skip_locked"]
LockOf = Sequence[str | type[Model]]

_INT64 = 1 << 63


@dataclass(frozen=True)
class ForUpdate:
    """A validated ``for_update=`` (and ``of=``) of a repository read."""

    nowait: bool = False
    skip_locked: bool = False
    of: tuple[str, ...] = ()

    def sql(self, dialect: str) -> str:
        """The clause to append to a SELECT (empty on sqlite, which has no row locks)."""
        if dialect != "postgres":
            return ""
        clause = " FOR UPDATE"
        if self.of:
            clause += " OF " + ", ".join('"' + table.replace('"', '""') + '"'
                                          for table in self.of)
        if self.nowait:
            clause += " NOWAIT"
        elif self.skip_locked:
            clause += " SKIP LOCKED"
        return clause

    def tortoise(self) -> dict[str, Any]:
        """The keywords of Tortoise's ``QuerySet.select_for_update()``."""
        return {"nowait": self.nowait, "skip_locked": self.skip_locked, "of": self.of}


def lock_of(for_update: object, of: LockOf | None, model: type[Model]) -> ForUpdate | None:
    """``for_update``/``of`` of a read of ``model`` checked: None when no lock is asked for.

    A repository read returns only ``model``'s rows, so it locks only them: ``FOR UPDATE OF``
    its table, also when ``of`` is not given. A filter on a relation joins the other table as
    an aliased ``LEFT OUTER JOIN`` (Tortoise 1.1.9), whose rows PostgreSQL cannot lock ("FOR
    UPDATE cannot be applied to the nullable side of an outer join"): ``of`` may name only
    ``model`` (the class or its table), and is accepted so that the intent can be spelled out.

    Raises:
        ValidationError: ``for_update`` is not False, True, "nowait" or "skip_locked", or
            ``of`` is given without ``for_update``.
        InvalidFilterError: ``of`` names anything but ``model`` (before any SQL is sent).
    """
    if for_update is False or for_update is None:
        if of:
            raise ValidationError("of= names the tables to lock: give for_update= too",
                                  details={"field": "of"})
        return None
    if not (for_update is True or for_update in ("nowait", "skip_locked")):
        raise ValidationError(
            "for_update must be True, 'nowait' or 'skip_locked' (or False), got "
            f"{for_update!r}", details={"field": "for_update"})
    table = model._meta.db_table
    if isinstance(of, (str, type)):
        of = [of]
    for item in of or ():
        if item is model or item == table:
            continue
        raise InvalidFilterError(
            f"of= can name only {model.__name__} (or its table {table!r}): a repository read "
            f"of {model.__name__} locks only its rows, got {item!r}",
            details={"field": "of", "model": model.__name__, "value": repr(item)})
    return ForUpdate(nowait=for_update == "nowait", skip_locked=for_update == "skip_locked",
                     of=(table,))


def refuse_readonly(session: Session, what: str) -> None:
    """Refuse a lock in a readonly session, before any SQL.

    Raises:
        TransactionError: ``session`` is readonly (on a replica a lock excludes nobody
            writing on the primary, and READ ONLY refuses ``FOR UPDATE``).
    """
    if getattr(session, "readonly", False):
        raise TransactionError(
            f"Cannot take {what} in a readonly session (db.session(readonly=True)): it may "
            "run on a replica, where a lock excludes nobody writing on the primary. Lock in "
            "a db.session()", details={"readonly": True, "lock": what})


def advisory_key(key: object) -> int:
    """The bigint key of an advisory lock: an int as it is (it must fit in 64 bits), a str
    as the first 8 bytes of its UTF-8 SHA-256 digest, read as a signed big-endian integer
    (stable across processes, versions and platforms).

    Raises:
        ValidationError: any other key, or an int outside the bigint range.
    """
    if isinstance(key, str):
        digest = hashlib.sha256(key.encode("utf-8")).digest()
        return int.from_bytes(digest[:8], "big", signed=True)
    if isinstance(key, int) and not isinstance(key, bool):
        if -_INT64 <= key < _INT64:
            return key
        raise ValidationError(f"An advisory lock key must fit in 64 bits, got {key}",
                              details={"field": "key"})
    raise ValidationError(f"An advisory lock key is an int or a str, not {type(key).__name__}",
                          details={"field": "key"})


async def take_advisory_lock(session: Session, key: object, *, wait: bool) -> bool:
    """``Session.advisory_lock``: PostgreSQL's transaction-scoped advisory lock on
    :func:`advisory_key` of ``key``; on sqlite the database's write lock, taken by beginning
    the transaction with ``BEGIN IMMEDIATE`` (once it has begun, its first write takes it)."""
    number = advisory_key(key)
    refuse_readonly(session, "an advisory lock")
    if session.dialect != "postgres":
        if not session._began:
            session._lock_at_begin = True if wait else "nowait"
        try:
            await session.execute("SELECT 1")
        except LockNotAvailableError:
            if wait:
                raise
            return False  # the BEGIN failed: the session has no transaction, and goes on
        return True
    function = "pg_advisory_xact_lock" if wait else "pg_try_advisory_xact_lock"
    result = await session.execute(f"SELECT {function}(:key)", {"key": number})
    return True if wait else bool(result.scalar())

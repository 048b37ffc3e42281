""""Nothing lost", checked the same way by every fault test.

Every unit of work writes ``parts`` rows of :class:`~tests.faults.models.Entry` tagged with a
UUID the client made, half through the ORM and half through raw SQL, in one session. The
:class:`Ledger` records how each unit ended:

- ``ACKED``: the session block returned, so the unit is committed: every row must be there;
- ``ROLLED_BACK``: it raised any error but :class:`TransactionOutcomeUnknownError`, which the
  library guarantees means nothing was committed: no row may be there;
- ``UNKNOWN``: :class:`TransactionOutcomeUnknownError`, a cancellation (it may have hit the
  COMMIT), or never finished: all rows or none.

:func:`check_nothing_lost` then asserts, against the database itself: every acknowledged unit
is there; every unit is all or nothing and written at most once (the table has no unique
constraint, so a double commit would show); no row belongs to a unit nobody started; no
connection of the test database is left "idle in transaction"; the manager's pool is idle.
"""

from __future__ import annotations

import asyncio
import enum
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from aegis_tortoise import DatabaseManager, Session, TransactionOutcomeUnknownError
from tests.faults.models import Entry

Pause = Callable[[Session, int], Awaitable[None]]

_RAW_INSERT = "INSERT INTO fault_entries (unit, part, note) VALUES (:unit, :part, 'raw')"


class Outcome(enum.Enum):
    ACKED = "acked"
    ROLLED_BACK = "rolled back"
    UNKNOWN = "unknown"


@dataclass
class Unit:
    """One unit of work: its key, its size, and how its last attempt ended."""

    key: uuid.UUID
    parts: int
    outcome: Outcome | None = None
    error: BaseException | None = None
    attempts: int = 0
    started: float = 0.0
    ended: float = 0.0


@dataclass
class Ledger:
    """The client's record of every unit of work it started."""

    units: list[Unit] = field(default_factory=list)

    def new(self, parts: int = 2) -> Unit:
        unit = Unit(uuid.uuid4(), parts)
        self.units.append(unit)
        return unit

    def settle(self, unit: Unit, error: BaseException | None) -> None:
        unit.ended = time.monotonic()
        unit.error = error
        if error is None:
            unit.outcome = Outcome.ACKED
        elif isinstance(error, (TransactionOutcomeUnknownError, asyncio.CancelledError)):
            unit.outcome = Outcome.UNKNOWN
        else:
            unit.outcome = Outcome.ROLLED_BACK

    async def attempt(self, db: DatabaseManager, unit: Unit, pause: Pause | None = None) -> None:
        """Run ``unit`` in one session of ``db``, recording the outcome (and re-raising)."""
        unit.started = time.monotonic()
        try:
            async with db.session() as session:
                await write_unit(session, unit, pause)
        except BaseException as exc:
            self.settle(unit, exc)
            raise
        self.settle(unit, None)

    def count(self, outcome: Outcome) -> int:
        return sum(1 for unit in self.units if unit.outcome is outcome)


async def write_unit(session: Session, unit: Unit, pause: Pause | None = None) -> None:
    """Write the unit's rows in ``session``: even parts by the ORM, odd ones by raw SQL.

    ``pause(session, part)`` runs after each row (where tests inject faults).
    """
    unit.attempts += 1
    for part in range(unit.parts):
        if part % 2 == 0:
            await Entry.create(unit=unit.key, part=part, note="orm")
        else:
            await session.execute(_RAW_INSERT, {"unit": str(unit.key), "part": part})
        if pause is not None:
            await pause(session, part)


@dataclass
class Checked:
    """What :func:`check_nothing_lost` found (for the report)."""

    acked: int
    rolled_back: int
    unknown_committed: int
    unknown_absent: int
    rows: int


async def check_nothing_lost(db: DatabaseManager, ledger: Ledger, *,
                             pg_dsn: str | None = None, settle: float = 3.0) -> Checked:
    """Assert that nothing was lost, doubled or left half-done (see the module docstring).

    Args:
        db: The manager the units ran on; its pool must be idle.
        ledger: The units.
        pg_dsn: A direct (not proxied) DSN of the PostgreSQL test database; rows are read
            through it, outside the library. ``None`` for sqlite (read through ``db``).
        settle: Seconds to wait for the server to end backends whose client was cut.
    """
    for _ in range(int(settle / 0.005)):  # a cancelled release finishes in the background
        if not _pool_problems(db):
            break
        await asyncio.sleep(0.005)
    problems = _pool_problems(db)
    if pg_dsn is not None:
        conn = await asyncpg.connect(pg_dsn, timeout=5)
        try:
            rows = [(str(r[0]), r[1]) for r in
                    await conn.fetch("SELECT unit, part FROM fault_entries")]
            problems += await _idle_in_transaction(conn, settle)
        finally:
            await conn.close()
    else:
        async with db.session() as session:
            result = await session.execute("SELECT unit, part FROM fault_entries")
            rows = [(str(r[0]), r[1]) for r in result.fetchall()]
    by_unit: dict[str, Counter[int]] = defaultdict(Counter)
    for key, part in rows:
        by_unit[key][part] += 1
    found = Checked(0, 0, 0, 0, len(rows))
    for unit in ledger.units:
        parts = by_unit.pop(str(unit.key), Counter())
        doubled = sorted(p for p, n in parts.items() if n > 1)
        if doubled:
            problems.append(f"unit {unit.key} wrote parts {doubled} more than once")
        present = set(parts)
        complete = present == set(range(unit.parts))
        if unit.outcome is Outcome.ACKED:
            found.acked += 1
            if not complete:
                problems.append(f"acknowledged unit {unit.key} has parts {sorted(present)} "
                                f"of {unit.parts}")
        elif unit.outcome is Outcome.ROLLED_BACK:
            found.rolled_back += 1
            if present:
                problems.append(f"unit {unit.key} failed with {unit.error!r}, which promises "
                                f"nothing was committed, yet parts {sorted(present)} exist")
        elif present and not complete:
            problems.append(f"unit {unit.key} ({unit.outcome}) is half there: parts "
                            f"{sorted(present)} of {unit.parts}")
        elif complete:
            found.unknown_committed += 1
        else:
            found.unknown_absent += 1
    if by_unit:
        problems.append(f"rows of {len(by_unit)} units nobody started: {sorted(by_unit)[:3]}")
    assert not problems, "nothing-lost check failed:\n  " + "\n  ".join(problems)
    return found


def _pool_problems(db: DatabaseManager) -> list[str]:
    problems = []
    if db._active_sessions:
        problems.append(f"{db._active_sessions} sessions still open")
    if not db.is_initialized:
        return problems
    client: Any = db._client()
    if db.dialect == "postgres":
        pool = client._pool
        if pool is not None and pool.get_idle_size() != pool.get_size():
            problems.append(f"pool not idle: {pool.get_idle_size()} idle of {pool.get_size()}")
    else:
        if client._lock.locked():
            problems.append("the sqlite connection is still taken")
        if client._connection is not None and client._connection.in_transaction:
            problems.append("the sqlite connection is left in a transaction")
    return problems


async def _idle_in_transaction(conn: asyncpg.Connection, settle: float) -> list[str]:
    query = ("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
             "AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()")
    deadline = time.monotonic() + settle
    while True:
        stuck: int = await conn.fetchval(query)
        if not stuck:
            return []
        if time.monotonic() > deadline:
            return [f"{stuck} connections left idle in transaction"]
        await asyncio.sleep(0.02)

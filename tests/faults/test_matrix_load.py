"""Reliability matrix (issue 6), rows 15, 16 and 18: load, cancellation, recycling.

Every test ends with the same nothing-lost check (tests/faults/ledger.py).
"""

from __future__ import annotations

import asyncio
import random
import time

import asyncpg

from aegis_tortoise import DatabaseManager, Session, with_db_retry
from tests.faults.conftest import MakeDb, PgTarget, Target
from tests.faults.ledger import Ledger, Outcome, Unit, check_nothing_lost
from tests.faults.proxy import FaultProxy


async def _until_idle(db: DatabaseManager, within: float = 2.0) -> None:
    """Wait for the pool to be idle: a cancellation inside pool.release() returns before
    asyncpg's shielded release has finished resetting the connection."""
    pool = db._client()._pool
    deadline = time.monotonic() + within
    while pool.get_idle_size() != pool.get_size():
        assert time.monotonic() < deadline, "the pool did not become idle"
        await asyncio.sleep(0.002)


_CONNECTIONS = "SELECT count(*) FROM pg_stat_activity WHERE datname = $1"


async def test_row15_1000_concurrent_sessions(pg_target: PgTarget, make_db: MakeDb,
                                              pg_admin: asyncpg.Connection) -> None:
    """Row 15: 1,000 concurrent sessions on pool_size=20, max_overflow=10: no error,
    1,000 rows, never more than 30 server connections, well under 60 s."""
    db = await make_db(pg_target.url(), pool_size=20, max_overflow=10, pool_timeout=30)
    ledger = Ledger()
    samples: list[int] = []
    done = asyncio.Event()

    async def sample() -> None:  # on the admin database: not counted itself
        while not done.is_set():
            samples.append(await pg_admin.fetchval(_CONNECTIONS, pg_target.database))
            await asyncio.sleep(0.002)

    async def hold(session: Session, part: int) -> None:
        await asyncio.sleep(0.001)  # keep the connection a moment: the pool fills up

    sampler = asyncio.create_task(sample())
    start = time.monotonic()
    try:
        results = await asyncio.gather(
            *(ledger.attempt(db, ledger.new(1), hold) for _ in range(1000)),
            return_exceptions=True)
    finally:
        elapsed = time.monotonic() - start
        done.set()
        await sampler
    errors = [r for r in results if r is not None]
    print(f"row 15: 1000 sessions in {elapsed:.2f} s, {len(errors)} errors, at most "
          f"{max(samples)} server connections ({len(samples)} samples), pool size "
          f"{db._client()._pool.get_size()}")
    assert errors == []
    assert max(samples) <= 30
    assert max(samples) > 20  # the overflow was used: the sessions did run concurrently
    assert elapsed < 60
    found = await check_nothing_lost(db, ledger, pg_dsn=pg_target.dsn)
    assert found.acked == 1000
    assert found.rows == 1000


async def test_row16_cancelled_sessions_are_not_retried_and_leave_nothing_half_done(
    target: Target, backend_proxy: FaultProxy | None, make_db: MakeDb
) -> None:
    """Row 16*: 25 of 50 concurrent sessions (each under with_db_retry) are cancelled at
    random points (waiting for a connection, mid-statement, at COMMIT, returning the
    connection): CancelledError propagates, nothing is retried, no transaction is half
    written, and the pool ends idle. On PostgreSQL the sessions run through the proxy with
    2 ms latency, so cancellations land in flight (and asyncpg's cancel requests go through it).
    """
    url = target.url
    if backend_proxy is not None:
        backend_proxy.latency = 0.002
        url = backend_proxy.url_for(str(target.database))
    db = await make_db(url, pool_size=8, max_overflow=0, pool_timeout=30)
    rng = random.Random(16)  # noqa: S311 - a reproducible schedule, not a secret
    ledger = Ledger()
    units = [ledger.new(3) for _ in range(50)]
    doomed = set(rng.sample(range(50), 25))
    tasks: list[asyncio.Task[None]] = []
    cancelled_at: dict[int, str] = {}
    delay_cap = 0.006 if backend_proxy is not None else 0.002

    def doom(i: int, where: str) -> None:
        """From here on, cancel task ``i`` after a random delay."""
        if i in doomed and i not in cancelled_at:
            cancelled_at[i] = where
            asyncio.get_running_loop().call_later(rng.uniform(0, delay_cap), tasks[i].cancel)

    def pause_of(i: int, trigger: int) -> object:
        async def pause(session: Session, part: int) -> None:
            if part == trigger:
                doom(i, f"after part {part}")
            if backend_proxy is None:
                await asyncio.sleep(rng.uniform(0, 0.001))
        return pause

    @with_db_retry(max_attempts=3, backoff_factor=0)
    async def write(i: int, unit: Unit) -> None:
        trigger = rng.randrange(-1, unit.parts)
        if trigger == -1:
            doom(i, "before the session")
        await ledger.attempt(db, unit, pause_of(i, trigger))  # type: ignore[arg-type]
        # Still running when a late cancellation fires: it lands here, after the session.
        await asyncio.sleep(delay_cap * 2 if i in doomed else 0)

    tasks.extend(asyncio.create_task(write(i, unit)) for i, unit in enumerate(units))
    results = await asyncio.gather(*tasks, return_exceptions=True)
    cancelled = [i for i, r in enumerate(results) if isinstance(r, asyncio.CancelledError)]
    other_errors = [r for r in results if r is not None
                    and not isinstance(r, asyncio.CancelledError)]
    assert other_errors == []
    assert sorted(cancelled) == sorted(doomed)  # exactly the 25, each propagated
    assert all(unit.attempts <= 1 for unit in units)  # never retried
    assert all(units[i].outcome is Outcome.ACKED for i in range(50) if i not in doomed)
    before = sum(units[i].attempts == 0 for i in cancelled)
    inside = sum(units[i].outcome is Outcome.UNKNOWN for i in cancelled) - before
    found = await check_nothing_lost(db, ledger, pg_dsn=target.dsn)
    print(f"row 16 ({target.backend}): 25 cancelled: {before} before writing, {inside} while "
          f"writing or committing ({found.unknown_committed} committed anyway, "
          f"{found.unknown_absent} rolled back), {25 - before - inside} after the session; "
          "25 completed; pool idle")
    assert inside >= 10  # most cancellations hit a session, not the sleep after it


async def test_row16_cancellation_at_every_point_of_a_session(
    pg_target: PgTarget, fault_proxy: FaultProxy, make_db: MakeDb
) -> None:
    """Row 16, swept: with 2 ms of latency each way, one session is cancelled after 0, 1,
    2, ... ms until it completes three times in a row, which walks the cancellation through
    connecting, BEGIN, the statements, COMMIT and handing the connection back. Each time
    CancelledError propagates, the pool is idle afterwards, every unit is all or nothing and
    the event loop reports no error (no "Resetting connection with an active transaction",
    no task exception left unretrieved)."""
    fault_proxy.latency = 0.002
    db = await make_db(fault_proxy.url_for(pg_target.database), pool_size=1, max_overflow=0)
    ledger = Ledger()
    outcomes: list[str] = []
    while outcomes[-3:] != ["completed"] * 3 and len(outcomes) < 100:
        task = asyncio.create_task(ledger.attempt(db, ledger.new(2)))
        asyncio.get_running_loop().call_later(len(outcomes) * 0.001, task.cancel)
        try:
            await task
            outcomes.append("completed")
        except asyncio.CancelledError:
            outcomes.append("cancelled")
        await _until_idle(db)
    found = await check_nothing_lost(db, ledger, pg_dsn=pg_target.dsn)
    print(f"row 16 sweep: cancelled after 0..{outcomes.index('completed')} ms: "
          f"{outcomes.count('cancelled')} cancelled ({found.unknown_committed} of them "
          f"committed anyway), then {outcomes.count('completed')} completed; "
          f"{fault_proxy.stats.cancel_requests} cancel requests")
    assert outcomes.count("cancelled") >= 10
    # asyncpg cancelled statements in flight: its cancel requests went through the proxy
    # (which must close the client side when the server closes, or they would hang).
    assert fault_proxy.stats.cancel_requests > 0


async def test_row18_pool_recycle_replaces_idle_connections(
    pg_target: PgTarget, make_db: MakeDb, pg_admin: asyncpg.Connection
) -> None:
    """Row 18: pool_recycle=1: connections idle for 1.5 s are closed (their backends end) and
    replaced by new ones on the next sessions (new backend pids); a connection held by a
    session for 1.5 s is not closed under it (pool_recycle counts idle time, not age)."""
    db = await make_db(pg_target.url(), pool_size=3, max_overflow=0, pool_recycle=1)
    ledger = Ledger()

    async def pids() -> set[int]:
        got: list[int] = []

        async def record(session: Session, part: int) -> None:
            got.append((await session.execute("SELECT pg_backend_pid()")).scalar_one())
            await asyncio.sleep(0.05)  # the three sessions overlap: three connections

        await asyncio.gather(*(ledger.attempt(db, ledger.new(1), record) for _ in range(3)))
        return set(got)

    first = await pids()
    assert len(first) == 3
    held: list[int] = []

    async def hold(session: Session, part: int) -> None:
        held.append((await session.execute("SELECT pg_backend_pid()")).scalar_one())
        await asyncio.sleep(1.5)  # busy, not idle: must survive
        assert (await session.execute("SELECT pg_backend_pid()")).scalar_one() == held[0]

    holder = asyncio.create_task(ledger.attempt(db, ledger.new(1), hold))
    await asyncio.sleep(1.5)
    alive = {r[0] for r in await pg_admin.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = $1", pg_target.database)}
    await holder
    second = await pids()
    print(f"row 18: pids before {sorted(first)}, after 1.5 s idle {sorted(second)}; "
          f"held 1.5 s: {held[0]} kept; server backends after the idle time: {sorted(alive)}")
    assert alive == {held[0]}  # the idle ones were closed on the server too
    assert len(second) == 3
    assert first.isdisjoint(second - {held[0]})
    assert not (first - {held[0]}) & second  # every idle connection was replaced
    await check_nothing_lost(db, ledger, pg_dsn=pg_target.dsn)

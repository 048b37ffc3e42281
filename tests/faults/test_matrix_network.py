"""Reliability matrix (issue 6), rows 7-14: the network and the server fail.

Faults come from the proxy in tests/faults/proxy.py (between the library and PostgreSQL)
and from pg_terminate_backend; the server itself is never stopped. Every test ends with the
same nothing-lost check (tests/faults/ledger.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
from tortoise.context import _current_context
from tortoise.transactions import in_transaction

from aegis_tortoise import (
    DatabaseConnectionError,
    DatabaseManager,
    PoolTimeoutError,
    Session,
    TransactionOutcomeUnknownError,
    is_transient,
    with_db_retry,
)
from tests.faults.conftest import MakeDb, PgTarget
from tests.faults.ledger import Ledger, Outcome, Unit, check_nothing_lost
from tests.faults.models import Entry
from tests.faults.proxy import FaultProxy


async def _until(condition: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not reached within {within} s")
        await asyncio.sleep(0.005)


def _pause(seconds: float) -> Callable[[Session, int], Any]:
    async def pause(session: Session, part: int) -> None:
        await asyncio.sleep(seconds)
    return pause


async def _rows_of(target: PgTarget, unit: Unit) -> int:
    """The unit's rows, read directly from the server (outside the library and the proxy)."""
    conn = await asyncpg.connect(target.dsn, timeout=5)
    try:
        count: int = await conn.fetchval("SELECT count(*) FROM fault_entries WHERE unit = $1",
                                         unit.key)
        return count
    finally:
        await conn.close()


def _pool(db: DatabaseManager) -> Any:
    return db._client()._pool


async def test_row07_blackholed_server_fails_within_pool_timeout(
    pg_target: PgTarget, fault_proxy: FaultProxy, make_db: MakeDb
) -> None:
    """Row 7: a server that accepts connections and never answers gives
    DatabaseConnectionError (retryable, not PoolTimeoutError) within pool_timeout + 0.5 s,
    not asyncpg's 60 s; once it answers again, sessions work."""
    db = await make_db(fault_proxy.url_for(pg_target.database), pool_timeout=0.5)
    ledger = Ledger()
    await ledger.attempt(db, ledger.new(2))
    fault_proxy.blackhole = True
    fault_proxy.cut_all()
    await _until(lambda: _pool(db).get_size() == 0)  # the pool saw its connection go
    start = time.monotonic()
    with pytest.raises(DatabaseConnectionError) as info:
        await ledger.attempt(db, ledger.new(2))
    waited = time.monotonic() - start
    print(f"row 7: blackholed connect failed after {waited:.3f} s (pool_timeout=0.5)")
    assert 0.4 <= waited <= 1.0
    assert not isinstance(info.value, PoolTimeoutError)
    assert is_transient(info.value)
    assert isinstance(info.value.__cause__, TimeoutError)
    fault_proxy.blackhole = False
    await ledger.attempt(db, ledger.new(2))
    await check_nothing_lost(db, ledger, pg_dsn=pg_target.dsn)


@pytest.mark.parametrize("where", ["URL connect_timeout", "driver option timeout"])
async def test_shorter_connect_timeout_wins_over_pool_timeout(
    where: str, pg_target: PgTarget, fault_proxy: FaultProxy
) -> None:
    """A connect timeout given in the URL or as ``timeout=`` is used when shorter than
    pool_timeout (pool_timeout still bounds a longer one: row 7)."""
    url = fault_proxy.url_for(pg_target.database)
    options: dict[str, Any] = {"pool_timeout": 5}
    if where == "URL connect_timeout":
        url += "&connect_timeout=0.3"
    else:
        options["timeout"] = 0.3
    db = DatabaseManager(url, models=[], **options)
    fault_proxy.blackhole = True
    start = time.monotonic()
    try:
        with pytest.raises(DatabaseConnectionError):
            async with db.session():
                pass
        assert db._client()._pool._connect_kwargs["timeout"] == 0.3
    finally:
        await db.close()
    assert time.monotonic() - start < 1.0


async def test_row08_exhausted_pool_times_out_and_ends_idle(pg_target: PgTarget,
                                                            make_db: MakeDb) -> None:
    """Row 8: with every connection busy, a session gets PoolTimeoutError within
    pool_timeout ± 0.3 s, not retried; the holders finish and the pool ends fully idle."""
    db = await make_db(pg_target.url(), pool_size=2, max_overflow=0, pool_timeout=0.5)
    ledger = Ledger()
    holding = 0
    release = asyncio.Event()

    async def hold(session: Session, part: int) -> None:
        nonlocal holding
        if part == 0:
            holding += 1
            await release.wait()

    holders = [asyncio.create_task(ledger.attempt(db, ledger.new(2), hold)) for _ in range(2)]
    await _until(lambda: holding == 2)
    calls = 0

    @with_db_retry(max_attempts=3, backoff_factor=0)
    async def starved() -> None:
        nonlocal calls
        calls += 1
        await ledger.attempt(db, ledger.new(2))

    start = time.monotonic()
    with pytest.raises(PoolTimeoutError):
        await starved()
    waited = time.monotonic() - start
    print(f"row 8: PoolTimeoutError after {waited:.3f} s (pool_timeout=0.5), {calls} call")
    assert 0.2 <= waited <= 0.8
    assert calls == 1
    release.set()
    await asyncio.gather(*holders)
    found = await check_nothing_lost(db, ledger, pg_dsn=pg_target.dsn)
    assert (found.acked, found.rolled_back) == (2, 1)
    assert _pool(db).get_size() == 2 == _pool(db).get_idle_size()


async def test_row09_connections_cut_on_attempt_one_retry_writes_once(
    pg_target: PgTarget, fault_proxy: FaultProxy, make_db: MakeDb,
    caplog: pytest.LogCaptureFixture
) -> None:
    """Row 9: every live connection is cut in the middle of attempt 1; with_db_retry
    succeeds on attempt 2 and the rows are written once."""
    db = await make_db(fault_proxy.url_for(pg_target.database))
    ledger = Ledger()
    await ledger.attempt(db, ledger.new(2))
    unit = ledger.new(4)
    cut: list[int] = []

    async def cut_on_attempt_one(session: Session, part: int) -> None:
        if unit.attempts == 1 and part == 1:
            cut.append(fault_proxy.cut_all())

    @with_db_retry(max_attempts=3, backoff_factor=0.01)
    async def write() -> None:
        await ledger.attempt(db, unit, cut_on_attempt_one)

    with caplog.at_level(logging.WARNING, logger="aegis_tortoise.retry"):
        await write()
    assert cut
    assert cut[0] >= 1
    assert unit.attempts == 2
    assert "attempt 1 failed with DatabaseConnectionError" in caplog.text
    found = await check_nothing_lost(db, ledger, pg_dsn=pg_target.dsn)
    assert found.acked == 2
    assert found.rows == 6


async def test_row10_terminated_backends_are_retried_40_times(
    pg_target: PgTarget, make_db: MakeDb, pg_admin: asyncpg.Connection
) -> None:
    """Row 10: 40 times, the pooled connection's backend is terminated (pg_terminate_backend)
    and a query follows at once, through with_db_retry: 0 failures, rows written once."""
    db = await make_db(pg_target.url(), pool_size=1, max_overflow=0)
    ledger = Ledger()

    @with_db_retry(max_attempts=3, backoff_factor=0.01)
    async def write(unit: Unit) -> None:
        await ledger.attempt(db, unit)

    failures = 0
    pids = set()
    for _ in range(40):
        async with db.session() as session:
            pid = (await session.execute("SELECT pg_backend_pid()")).scalar_one()
        pids.add(pid)
        assert await pg_admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        unit = ledger.new(2)
        try:
            await write(unit)
        except Exception:
            failures += 1
    retried = sum(unit.attempts > 1 for unit in ledger.units)
    print(f"row 10: 40 terminations, {failures} failures, {retried} units needed a retry, "
          f"{len(pids)} backends")
    assert failures == 0
    assert len(pids) == 40  # every round ran on a new backend
    found = await check_nothing_lost(db, ledger, pg_dsn=pg_target.dsn)
    assert found.acked == 40
    assert found.rows == 80


async def test_row11_outage_errors_only_inside_the_window(
    pg_target: PgTarget, fault_proxy: FaultProxy, make_db: MakeDb
) -> None:
    """Row 11: the server refuses connections for 3 s (live ones are cut) while 4 workers
    write; errors happen only inside that window, every worker writes again within 1 s after
    it, and nothing is lost."""
    db = await make_db(fault_proxy.url_for(pg_target.database), pool_size=4, max_overflow=2,
                       pool_timeout=0.5)
    ledger = Ledger()
    workers: dict[int, list[Unit]] = {w: [] for w in range(4)}
    t0 = time.monotonic()
    outage_start, outage_end = t0 + 0.5, t0 + 3.5
    stop_at = outage_end + 1.5
    pause = _pause(0.003)
    window: list[float] = []

    async def worker(w: int) -> None:
        while time.monotonic() < stop_at:
            unit = ledger.new(2)
            workers[w].append(unit)
            try:
                await ledger.attempt(db, unit, pause)
            except DatabaseConnectionError:
                await asyncio.sleep(0.02)

    async def outage() -> None:
        await asyncio.sleep(outage_start - time.monotonic())
        window.append(time.monotonic())
        await fault_proxy.refuse()
        fault_proxy.cut_all()
        await asyncio.sleep(outage_end - time.monotonic())
        await fault_proxy.refuse(False)
        window.append(time.monotonic())  # the actual window, however late the loop ran

    await asyncio.gather(outage(), *(worker(w) for w in range(4)))
    failed = [u for u in ledger.units if u.error is not None]
    assert failed, "the outage was not felt"
    began, ended = window
    outside = [u for u in failed if u.ended < began or u.started > ended]
    assert not outside, [(u.started - t0, u.ended - t0, repr(u.error)) for u in outside]
    assert not any(isinstance(u.error, PoolTimeoutError) for u in failed)
    recovery = []
    for units in workers.values():
        assert any(u.outcome is Outcome.ACKED and u.ended < began for u in units)
        after = [u.ended for u in units if u.outcome is Outcome.ACKED and u.started >= ended]
        assert after, "a worker never recovered"
        recovery.append(min(after) - ended)
    found = await check_nothing_lost(db, ledger, pg_dsn=pg_target.dsn)
    kinds = sorted({type(u.error).__name__ for u in failed})
    print(f"row 11: {len(ledger.units)} units, {found.acked} acked, {len(failed)} failed "
          f"({', '.join(kinds)}), all inside the {ended - began:.2f} s window; recovery after "
          f"{max(recovery):.3f} s (slowest worker); {found.unknown_committed} unknown-committed")
    assert max(recovery) < 1.0


@pytest.mark.parametrize("how", ["COMMIT never reaches the server", "connection seen dead"])
async def test_row12_connection_killed_before_commit(
    how: str, pg_target: PgTarget, fault_proxy: FaultProxy, make_db: MakeDb
) -> None:
    """Row 12: the connection dies before the COMMIT reaches the server: the session raises,
    0 rows are written, and running the whole unit again writes exactly one set.

    - COMMIT never reaches the server (the proxy cuts instead of forwarding it): the client
      did send it, so it cannot tell; TransactionOutcomeUnknownError, not retried. The
      documented recovery (look the unit's key up, run it again) writes it once.
    - connection seen dead (cut while the session idles, before the block ends): the library
      knows nothing was sent, raises plain DatabaseConnectionError, and with_db_retry runs
      the unit again.
    """
    db = await make_db(fault_proxy.url_for(pg_target.database))
    ledger = Ledger()
    await ledger.attempt(db, ledger.new(2))
    unit = ledger.new(3)
    errors: list[BaseException] = []
    if how == "COMMIT never reaches the server":
        fired = fault_proxy.fail_commit("drop")
        with pytest.raises(TransactionOutcomeUnknownError) as info:
            await ledger.attempt(db, unit)
        assert fired.is_set()
        errors.append(info.value)
        assert await _rows_of(pg_target, unit) == 0
        await ledger.attempt(db, unit)  # the whole unit again, same key
    else:

        async def die_before_commit(session: Session, part: int) -> None:
            if unit.attempts == 1 and part == unit.parts - 1:
                fault_proxy.cut_all()
                await _until(session.connection._connection.is_closed)

        @with_db_retry(max_attempts=3, backoff_factor=0.01)
        async def write() -> None:
            try:
                await ledger.attempt(db, unit, die_before_commit)
            except DatabaseConnectionError as exc:
                errors.append(exc)
                raise

        await write()
        assert type(errors[0]) is DatabaseConnectionError
        assert "before COMMIT" in str(errors[0])
        assert unit.attempts == 2
    print(f"row 12 ({how}): first attempt raised {type(errors[0]).__name__}; "
          f"{unit.attempts} attempts")
    assert await _rows_of(pg_target, unit) == 3
    found = await check_nothing_lost(db, ledger, pg_dsn=pg_target.dsn)
    assert found.acked == 2


async def _lose_commit_reply(db: DatabaseManager, proxy: FaultProxy,
                             ledger: Ledger) -> tuple[Unit, int, TransactionOutcomeUnknownError]:
    """Run a unit under with_db_retry while the reply to its COMMIT is lost."""
    unit = ledger.new(3)
    calls = 0

    @with_db_retry(max_attempts=3, backoff_factor=0)
    async def write() -> None:
        nonlocal calls
        calls += 1
        await ledger.attempt(db, unit)

    fired = proxy.fail_commit("lose_reply")
    with pytest.raises(TransactionOutcomeUnknownError) as info:
        await write()
    assert fired.is_set()
    return unit, calls, info.value


async def test_row13_lost_commit_reply_is_outcome_unknown_not_retried(
    pg_target: PgTarget, fault_proxy: FaultProxy, make_db: MakeDb
) -> None:
    """Row 13: the server commits but the reply is lost: TransactionOutcomeUnknownError
    (DB_2003, a DatabaseConnectionError), with_db_retry does not retry it, and the rows exist
    exactly once."""
    db = await make_db(fault_proxy.url_for(pg_target.database))
    ledger = Ledger()
    await ledger.attempt(db, ledger.new(2))
    unit, calls, error = await _lose_commit_reply(db, fault_proxy, ledger)
    assert calls == 1
    assert unit.attempts == 1
    assert isinstance(error, DatabaseConnectionError)
    assert (error.error_code, error.status_code) == ("DB_2003", 503)
    assert not is_transient(error)
    assert isinstance(error.__cause__, asyncpg.ConnectionDoesNotExistError)
    assert await _rows_of(pg_target, unit) == 3
    found = await check_nothing_lost(db, ledger, pg_dsn=pg_target.dsn)
    assert found.unknown_committed == 1  # committed, once


async def test_row14_same_task_works_after_a_lost_commit_reply(
    pg_target: PgTarget, fault_proxy: FaultProxy, make_db: MakeDb
) -> None:
    """Row 14: after row 13's failure (at the end of the block, and at an explicit
    session.commit()), the same task's next session works: nothing of the failed session
    stays bound to the task (Tortoise's context, the connection alias, the nested-session
    guard)."""
    db = await make_db(fault_proxy.url_for(pg_target.database))
    ledger = Ledger()
    await ledger.attempt(db, ledger.new(2))
    context_before = _current_context.get()
    await _lose_commit_reply(db, fault_proxy, ledger)
    _assert_unbound(db, context_before)
    # The same failure at an explicit commit() inside the block, caught there.
    unit = ledger.new(2)
    fault_proxy.fail_commit("lose_reply")
    async with db.session() as session:
        await Entry.create(unit=unit.key, part=0)
        await session.execute("INSERT INTO fault_entries (unit, part, note) "
                              "VALUES (:u, 1, 'raw')", {"u": str(unit.key)})
        with pytest.raises(TransactionOutcomeUnknownError):
            await session.commit()
    ledger.settle(unit, TransactionOutcomeUnknownError("lost at commit()"))
    _assert_unbound(db, context_before)
    # The task carries on: ORM, raw SQL and Tortoise's own transactions all work.
    unit = ledger.new(3)
    async with db.session() as session:
        await Entry.create(unit=unit.key, part=0)
        await session.execute("INSERT INTO fault_entries (unit, part, note) "
                              "VALUES (:u, 1, 'raw')", {"u": str(unit.key)})
        async with in_transaction(db.alias):
            await Entry.create(unit=unit.key, part=2)
        assert await Entry.filter(unit=unit.key).count() == 3
    ledger.settle(unit, None)
    await ledger.attempt(db, ledger.new(2))
    found = await check_nothing_lost(db, ledger, pg_dsn=pg_target.dsn)
    assert found.acked == 3
    assert found.unknown_committed == 2


def _assert_unbound(db: DatabaseManager, context_before: Any) -> None:
    assert _current_context.get() is context_before
    assert db._current.get() is None
    assert db._active_sessions == 0
    ctx = db._ctx
    assert ctx is not None
    assert ctx.connections.get(db.alias) is db._client()  # not the dead session's client


async def test_row13_commit_timing_out_is_outcome_unknown_too(
    pg_target: PgTarget, fault_proxy: FaultProxy, make_db: MakeDb
) -> None:
    """Row 13, variant: with command_timeout=0.2, the COMMIT's round trip takes 0.3 s (the
    server commits after 0.15 s; asyncpg gives up at 0.2 s): the outcome is unknown to the
    client, so TransactionOutcomeUnknownError, not a bare TimeoutError that would read as
    "rolled back". The rows exist exactly once."""
    db = await make_db(fault_proxy.url_for(pg_target.database, command_timeout="0.2"))
    ledger = Ledger()
    await ledger.attempt(db, ledger.new(2))
    unit = ledger.new(2)

    async def slow_commit(session: Session, part: int) -> None:
        if part == unit.parts - 1:
            fault_proxy.latency = 0.15

    with pytest.raises(TransactionOutcomeUnknownError) as info:
        await ledger.attempt(db, unit, slow_commit)
    fault_proxy.latency = 0
    assert isinstance(info.value.__cause__, TimeoutError)
    assert await _rows_of(pg_target, unit) == 2
    found = await check_nothing_lost(db, ledger, pg_dsn=pg_target.dsn)
    assert found.unknown_committed == 1

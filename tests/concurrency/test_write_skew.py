"""Write skew: two on-call doctors each go off call while the other is still on."""

from __future__ import annotations

import asyncio

from aegis_tortoise import BaseRepository, DatabaseManager, with_db_retry
from tests.concurrency.models import Doctor

SERIALIZABLE_RUNS = 200
REPEATABLE_READ_RUNS = 20


async def _shifts(db: DatabaseManager, runs: int) -> None:
    async with db.session() as session:
        await BaseRepository(session, Doctor).create_many(
            [{"shift": run, "name": name} for run in range(runs) for name in ("alice", "bob")])


async def _on_call(db: DatabaseManager, runs: int) -> list[int]:
    """How many doctors are on call in each shift."""
    async with db.session() as session:
        result = await session.execute(
            "SELECT shift, count(*) FILTER (WHERE on_call) FROM doctors GROUP BY shift "
            "ORDER BY shift")
        counts = dict(result.all())
    return [counts.get(run, 0) for run in range(runs)]


async def _one_run(db: DatabaseManager, shift: int, isolation: str) -> None:
    """Alice and Bob both read that two are on call, then both go off call. The barrier
    makes both read before either writes (on the first attempt; a retry runs alone)."""
    barrier = asyncio.Barrier(2)
    attempts = {"alice": 0, "bob": 0}

    @with_db_retry(max_attempts=10, backoff_factor=0, jitter=0.005)
    async def go_off_call(name: str) -> None:
        attempts[name] += 1
        async with db.session(isolation=isolation) as session:
            repo = BaseRepository(session, Doctor)
            on_call = await repo.count({"shift": shift, "on_call": True})
            if attempts[name] == 1:
                await asyncio.wait_for(barrier.wait(), 5)
            if on_call >= 2:
                await repo.update_where({"shift": shift, "name": name}, on_call=False)

    await asyncio.gather(go_off_call("alice"), go_off_call("bob"))


async def test_serializable_with_retry_keeps_someone_on_call(pg_db_doctors: DatabaseManager
                                                             ) -> None:
    await _shifts(pg_db_doctors, SERIALIZABLE_RUNS)
    for shift in range(SERIALIZABLE_RUNS):
        await _one_run(pg_db_doctors, shift, "serializable")
    counts = await _on_call(pg_db_doctors, SERIALIZABLE_RUNS)
    assert min(counts) >= 1, counts
    assert counts.count(1) == SERIALIZABLE_RUNS  # one went off call, the retry saw it


async def test_repeatable_read_shows_the_anomaly(pg_db_doctors: DatabaseManager) -> None:
    await _shifts(pg_db_doctors, REPEATABLE_READ_RUNS)
    for shift in range(REPEATABLE_READ_RUNS):
        await _one_run(pg_db_doctors, shift, "repeatable read")
    counts = await _on_call(pg_db_doctors, REPEATABLE_READ_RUNS)
    assert counts.count(0) == REPEATABLE_READ_RUNS  # both went off call, every time

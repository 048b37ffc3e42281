"""The read-modify-write increments the anomaly suite counts, one per strategy (the docs
page and the bench show the same code)."""

from __future__ import annotations

import asyncio
import random

from aegis_tortoise import (
    BaseRepository,
    ConcurrentUpdateError,
    DatabaseManager,
    with_db_retry,
)
from tests.concurrency.models import Counter, Tally

__all__ = ["increment_for_update", "increment_serializable", "increment_unprotected",
           "increment_versioned"]


async def increment_unprotected(db: DatabaseManager) -> None:
    """Read, then write what was read + 1: loses updates under READ COMMITTED."""
    async with db.session() as session:
        repo = BaseRepository(session, Counter)
        counter = await repo.get(1)
        await asyncio.sleep(0)  # another task runs between the read and the write
        await repo.update(1, value=counter.value + 1)


async def increment_for_update(db: DatabaseManager) -> None:
    """Lock the row while reading it: the others wait until this transaction ends."""
    async with db.session() as session:
        repo = BaseRepository(session, Counter)
        counter = await repo.get(1, for_update=True)
        await asyncio.sleep(0)
        await repo.update(1, value=counter.value + 1)


async def increment_versioned(db: DatabaseManager) -> int:
    """Write only if the version read is still current; on a conflict read again. Returns
    the retries it took."""
    retries = 0
    while True:
        try:
            async with db.session() as session:
                repo = BaseRepository(session, Tally)
                tally = await repo.get(1)
                await asyncio.sleep(0)
                await repo.update(tally, value=tally.value + 1)  # expects tally.version
            return retries
        except ConcurrentUpdateError:
            retries += 1
            # Back off a random while, so the contenders spread out instead of meeting again.
            await asyncio.sleep(random.uniform(0, 0.3))  # noqa: S311


@with_db_retry(max_attempts=1000, backoff_factor=0, jitter=0.3)
async def increment_serializable(db: DatabaseManager) -> None:
    """The whole unit under SERIALIZABLE; a serialization failure re-runs it."""
    async with db.session(isolation="serializable") as session:
        repo = BaseRepository(session, Counter)
        counter = await repo.get(1)
        await asyncio.sleep(0)
        await repo.update(1, value=counter.value + 1)

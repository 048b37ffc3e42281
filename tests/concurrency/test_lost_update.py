"""Lost update: 50 tasks x 20 read-modify-write increments of one counter."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from aegis_tortoise import BaseRepository, DatabaseManager
from tests.concurrency.models import Counter, Tally
from tests.concurrency.strategies import (
    increment_for_update,
    increment_serializable,
    increment_unprotected,
    increment_versioned,
)

TASKS, INCREMENTS = 50, 20


async def _run(dbs: list[DatabaseManager],
               increment: Callable[[DatabaseManager], Awaitable[Any]],
               model: type[Counter | Tally] = Counter) -> int:
    """The counter after TASKS x INCREMENTS increments, the tasks spread over ``dbs``."""
    db = dbs[0]
    async with db.session() as session:
        await BaseRepository(session, model).create({"id": 1, "value": 0})

    async def task(manager: DatabaseManager) -> None:
        for _ in range(INCREMENTS):
            await increment(manager)

    await asyncio.gather(*(task(dbs[k % len(dbs)]) for k in range(TASKS)))
    async with db.session() as session:
        found = await BaseRepository(session, model).get(1)
        if model is Tally:
            assert found.version == 1 + TASKS * INCREMENTS  # type: ignore[union-attr]
        return found.value


async def test_unprotected_read_committed_loses_updates(cdbs: list[DatabaseManager]) -> None:
    """The control: without protection the count falls short (so the suite can fail); on
    sqlite between two connections to one file."""
    assert await _run(cdbs, increment_unprotected) < TASKS * INCREMENTS


@pytest.mark.parametrize("increment", [increment_for_update, increment_serializable],
                         ids=["for_update", "serializable+with_db_retry"])
async def test_protected_increments_are_all_kept(
        cdbs: list[DatabaseManager],
        increment: Callable[[DatabaseManager], Awaitable[None]]) -> None:
    assert await _run(cdbs, increment) == TASKS * INCREMENTS


async def test_expected_version_with_retry_keeps_every_increment(
        cdbs: list[DatabaseManager]) -> None:
    assert await _run(cdbs, increment_versioned, Tally) == TASKS * INCREMENTS

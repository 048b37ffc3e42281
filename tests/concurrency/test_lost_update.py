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


async def _run(db: DatabaseManager, increment: Callable[[DatabaseManager], Awaitable[Any]],
               model: type[Counter | Tally] = Counter) -> int:
    async with db.session() as session:
        await BaseRepository(session, model).create({"id": 1, "value": 0})

    async def task() -> None:
        for _ in range(INCREMENTS):
            await increment(db)

    await asyncio.gather(*(task() for _ in range(TASKS)))
    async with db.session() as session:
        found = await BaseRepository(session, model).get(1)
        if model is Tally:
            assert found.version == 1 + TASKS * INCREMENTS  # type: ignore[union-attr]
        return found.value


async def test_unprotected_read_committed_loses_updates(cdb: DatabaseManager,
                                                        backend: str) -> None:
    """The control: without protection the count falls short (so the suite can fail)."""
    if backend == "sqlite":
        pytest.skip("sqlite sessions of one manager take turns on its one connection")
    assert await _run(cdb, increment_unprotected) < TASKS * INCREMENTS


@pytest.mark.parametrize("increment", [increment_for_update, increment_serializable],
                         ids=["for_update", "serializable+with_db_retry"])
async def test_protected_increments_are_all_kept(
        cdb: DatabaseManager, increment: Callable[[DatabaseManager], Awaitable[None]]) -> None:
    assert await _run(cdb, increment) == TASKS * INCREMENTS


async def test_expected_version_with_retry_keeps_every_increment(cdb: DatabaseManager) -> None:
    assert await _run(cdb, increment_versioned, Tally) == TASKS * INCREMENTS

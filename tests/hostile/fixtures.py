"""Fixtures of the hostile-input and hardening tests: a manager holding OWNERS and ITEMS."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from aegis_tortoise import BaseRepository, DatabaseManager
from tests.conftest import fresh_manager
from tests.hostile.models import ITEMS, MODELS, OWNERS, Item, Owner


async def seeded(url: str, backend: str) -> AsyncIterator[DatabaseManager]:
    """A manager of the hostile models on fresh tables holding OWNERS and ITEMS."""
    async for manager in fresh_manager(url, backend, MODELS, pool_size=2, max_overflow=0):
        async with manager.session() as session:
            await BaseRepository(session, Owner).create_many(OWNERS)
            await BaseRepository(session, Item).create_many(ITEMS)
        yield manager


async def table(manager: DatabaseManager) -> list[tuple[Any, ...]]:
    """Every item row, every column, in id order: to compare before and after a call."""
    async with manager.session() as session:
        rows = await BaseRepository(session, Item).list(limit=None, order_by="id")
        return [tuple(row.__dict__[name] for name in Item._meta.fields_db_projection)
                for row in rows]


@pytest.fixture
async def items(db_url: str, backend: str) -> AsyncIterator[DatabaseManager]:
    """The seeded manager on ``backend``."""
    async for manager in seeded(db_url, backend):
        yield manager

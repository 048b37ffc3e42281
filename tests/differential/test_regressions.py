"""Divergences the differential suite found beyond issue 11's list, pinned one by one."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import pytest

from aegis_tortoise import BaseRepository, DatabaseManager
from tests.conftest import fresh_manager
from tests.differential.models import MODELS, Item


@pytest.fixture
async def diff_db(db_url: str, backend: str) -> AsyncIterator[DatabaseManager]:
    async for manager in fresh_manager(db_url, backend, models=MODELS):
        yield manager


async def test_update_returns_floats_as_floats(diff_db: DatabaseManager) -> None:
    """sqlite's RETURNING gives a REAL column's integral value as int (0, not 0.0); the
    instance update() returns must hold the float a read gives."""
    async with diff_db.session() as session:
        repo = BaseRepository(session, Item)
        item = await repo.create({"num": 1, "name": "a", "ratio": 0.0})
        updated = await repo.update(item.id, ratio=3.0, note="x")
        unchanged = await repo.update(item.id, note="y")
        fresh = await Item.get(id=item.id)
    assert updated is not None
    assert unchanged is not None
    assert type(updated.ratio) is float
    assert updated.ratio == 3.0
    assert type(unchanged.ratio) is float
    assert type(fresh.ratio) is float


async def test_update_keyword_data_sets_a_field_named_data(diff_db: DatabaseManager) -> None:
    """``update(id, data=[...])`` on a model with a field named ``data`` sets that field (a
    list is no payload), as ``save()`` would; a dict stays the documented payload."""
    async with diff_db.session() as session:
        repo = BaseRepository(session, Item)
        item = await repo.create({"num": 1, "name": "a"})
        updated = await repo.update(item.id, data=[1, 2], note="x")
        by_payload = await repo.update(item.id, {"data": {"k": 1}})
        fresh = await Item.get(id=item.id)
    assert updated is not None
    assert updated.data == [1, 2]
    assert updated.note == "x"
    assert by_payload is not None
    assert by_payload.data == {"k": 1}
    assert fresh.data == {"k": 1}


async def test_update_stores_datetimes_as_create_does(diff_db: DatabaseManager) -> None:
    """An aware datetime in another offset: update() converts it as Model() does (create(),
    Tortoise's update_from_dict), so sqlite stores the same text, and text order stays time
    order."""
    offset = dt.timezone(dt.timedelta(hours=5, minutes=30))
    moment = dt.datetime(2000, 1, 1, tzinfo=offset)
    async with diff_db.session() as session:
        repo = BaseRepository(session, Item)
        created = await repo.create({"num": 1, "name": "a", "moment": moment})
        other = await repo.create({"num": 2, "name": "b"})
        updated = await repo.update(other.id, moment=moment)
        result = await session.execute(
            "SELECT moment FROM diff_item WHERE id IN (:a, :b) ORDER BY id",
            {"a": created.id, "b": other.id})
        stored = result.scalars().all()
    assert updated is not None
    assert updated.moment == moment
    assert stored[0] == stored[1]

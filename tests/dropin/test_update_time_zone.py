"""Issue 11 item 7: update() stamps updated_at as Tortoise's save() does, in the manager's
configured time zone (and naive with use_tz=False), on both backends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from aegis_tortoise import DatabaseManager
from aegis_tortoise.examples.models import User
from aegis_tortoise.examples.repositories import UserRepository
from tests.conftest import EXAMPLE_MODELS, reset_pg_schema


@pytest.fixture(params=[(True, "Asia/Shanghai"), (False, "Asia/Tokyo")],
                ids=["aware-shanghai", "naive-tokyo"])
async def zoned_db(request: pytest.FixtureRequest, db_url: str,
                   backend: str) -> AsyncIterator[DatabaseManager]:
    if backend == "postgres":
        await reset_pg_schema(db_url)
    use_tz, zone = request.param
    db = DatabaseManager(db_url, models=EXAMPLE_MODELS, use_tz=use_tz, timezone=zone)
    await db.generate_schemas()
    try:
        yield db
    finally:
        await db.close()


async def test_update_stamps_updated_at_like_save(zoned_db: DatabaseManager) -> None:
    async with zoned_db.session() as session:
        repo = UserRepository(session)
        first = await repo.create({"email": "a@x", "name": "A"})
        second = await repo.create({"email": "b@x", "name": "B"})
        updated = await repo.update(first.id, name="A2")
        plain = await User.get(id=second.id)
        plain.name = "B2"
        await plain.save(update_fields=["name", "updated_at"])
        reread = await User.get(id=second.id)
    assert updated is not None
    # The same kind of value as Tortoise's own save() leaves, read back the same way.
    assert updated.updated_at.tzinfo == reread.updated_at.tzinfo
    assert updated.updated_at.utcoffset() == reread.updated_at.utcoffset()
    if zoned_db.use_tz:
        assert updated.updated_at.utcoffset() == timedelta(hours=8)
        assert abs(updated.updated_at - datetime.now(UTC)) < timedelta(minutes=1)
    else:
        assert updated.updated_at.tzinfo is None
        assert abs(updated.updated_at - reread.updated_at) < timedelta(minutes=1)

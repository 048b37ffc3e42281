"""Soft delete: deleted_at in UTC, restore, and hide_soft_deleted with include_deleted."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from aegis_tortoise import BaseRepository, ConfigurationError, DatabaseManager, EntityNotFoundError
from tests.integration.test_repository_models import Gadget
from tests.integration.test_repository_support import (
    HiddenUserRepository,
    UserRepository,
    gadgets_fixture,  # noqa: F401 - the gadgets fixture
)


async def test_soft_delete_and_restore(db: DatabaseManager) -> None:
    async with db.session() as session:
        repo = UserRepository(session)
        user = await repo.create({"email": "s@x.io", "name": "S"})
        before = datetime.now(UTC)
        deleted = await repo.soft_delete(user.id)
        after = datetime.now(UTC)
        assert deleted is not None
        assert deleted.id == user.id
        assert deleted.deleted_at is not None
        assert deleted.deleted_at.utcoffset() == timedelta(0)  # aware, UTC
        assert before - timedelta(seconds=1) <= deleted.deleted_at <= after
        assert deleted.name == "S"
        assert deleted.is_deleted
        await asyncio.sleep(0.01)
        again = await repo.soft_delete(user.id)
        assert again is not None
        assert again.deleted_at == deleted.deleted_at
        assert await repo.soft_delete(999_999) is None
        restored = await repo.restore(user.id)
        assert restored is not None
        assert restored.deleted_at is None
        assert not restored.is_deleted
        assert (await repo.restore(user.id)).deleted_at is None  # type: ignore[union-attr]
        assert await repo.restore(999_999) is None
    async with db.session() as session:
        assert (await UserRepository(session).get(user.id)).deleted_at is None


async def test_default_keeps_soft_deleted_rows_visible(db: DatabaseManager) -> None:
    async with db.session() as session:
        repo = UserRepository(session)
        alive, gone = await repo.create_many(
            [{"email": "alive@x.io", "name": "A"}, {"email": "gone@x.io", "name": "G"}])
        await repo.soft_delete(gone.id)
        assert (await repo.get(gone.id)).deleted_at is not None
        assert await repo.get_by_id(gone.id) is not None
        assert len(await repo.get_by_ids([alive.id, gone.id])) == 2
        assert len(await repo.list()) == 2
        assert await repo.count() == 2
        assert await repo.exists(gone.id)
        assert (await repo.paginate()).total == 2
        assert await repo.query().count() == 2
        # The seed's get_active_users: filters={"deleted_at": None}
        assert [u.id for u in await repo.list(filters={"deleted_at": None})] == [alive.id]


async def test_hide_soft_deleted(db: DatabaseManager) -> None:
    async with db.session() as session:
        repo = HiddenUserRepository(session)
        alive, gone = await repo.create_many(
            [{"email": "alive@x.io", "name": "A"}, {"email": "gone@x.io", "name": "G"}])
        assert await repo.soft_delete(gone.id) is not None

        assert await repo.get_by_id(gone.id) is None
        with pytest.raises(EntityNotFoundError, match=f"User not found: {gone.id}"):
            await repo.get(gone.id)
        assert [u.id for u in await repo.get_by_ids([gone.id, alive.id])] == [alive.id]
        assert [u.id for u in await repo.list()] == [alive.id]
        assert await repo.count() == 1
        assert not await repo.exists(gone.id)
        page = await repo.paginate()
        assert (page.total, [u.id for u in page.items]) == (1, [alive.id])
        assert await repo.query().count() == 1

        assert (await repo.get_by_id(gone.id, include_deleted=True)) is not None
        assert (await repo.get(gone.id, include_deleted=True)).id == gone.id
        assert len(await repo.get_by_ids([gone.id, alive.id], include_deleted=True)) == 2
        assert len(await repo.list(include_deleted=True)) == 2
        assert await repo.count(include_deleted=True) == 2
        assert await repo.exists(gone.id, include_deleted=True)
        assert (await repo.paginate(include_deleted=True)).total == 2
        assert await repo.query(include_deleted=True).count() == 2

        # Soft-deleting a hidden row again keeps it hidden; restore always finds it.
        assert (await repo.soft_delete(gone.id)) is not None
        restored = await repo.restore(gone.id)
        assert restored is not None
        assert restored.deleted_at is None
        assert await repo.count() == 2
        assert (await repo.get(gone.id)).email == "gone@x.io"


async def test_hide_soft_deleted_needs_the_field(gadgets: DatabaseManager) -> None:
    class HiddenGadgets(BaseRepository[Gadget]):
        hide_soft_deleted = True

    async with gadgets.session() as session:
        with pytest.raises(ConfigurationError, match="no 'deleted_at' field"):
            HiddenGadgets(session)
        assert BaseRepository(session, Gadget).model is Gadget

"""paginate_keyset: pages equal to plain Tortoise's order, opaque signed cursors, stable pages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from aegis_tortoise import BaseRepository, DatabaseManager, KeysetPage, ValidationError
from aegis_tortoise.examples.models import User
from tests.integration.test_repository_support import (
    HiddenUserRepository,
    PolicyRepository,
    UserRepository,
    recorded_sql,
)

N = 230


async def _seed(repo: BaseRepository[User]) -> list[User]:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    users = await repo.create_many(
        [{"email": f"k{i:04d}@x.io", "name": f"name {i % 7}"} for i in range(N)])
    # Distinct and repeated timestamps, so -created_at needs the key as tie-breaker.
    for i, user in enumerate(users):
        user.created_at = start + timedelta(minutes=i // 3)
    await repo.update_many([{"id": u.id, "created_at": u.created_at} for u in users])
    return users


async def _walk(repo: BaseRepository[User], limit: int, **options: Any) -> list[int]:
    ids: list[int] = []
    after = None
    pages = 0
    while True:
        page = await repo.paginate_keyset(limit=limit, after=after, **options)
        assert isinstance(page, KeysetPage)
        assert len(page.items) <= limit
        ids += [u.id for u in page.items]
        pages += 1
        if not page.has_next:
            assert page.next_cursor is None
            return ids
        assert page.next_cursor is not None
        after = page.next_cursor


@pytest.mark.parametrize("order_by", [None, "name", "-created_at", ["name", "-email"],
                                      ["-name", "created_at"], "-id"])
async def test_pages_follow_plain_tortoise_order(db: DatabaseManager, order_by: Any) -> None:
    async with db.session() as session:
        repo = UserRepository(session)
        await _seed(repo)
        fields = [order_by] if isinstance(order_by, str) else list(order_by or [])
        if "id" not in (f.lstrip("-") for f in fields):
            fields.append("id")
        expected = await User.all().order_by(*fields).values_list("id", flat=True)
        assert await _walk(repo, 17, order_by=order_by) == expected
        assert await _walk(repo, N + 5, order_by=order_by) == expected  # one page, no next


async def test_filters_and_hidden_rows(db: DatabaseManager) -> None:
    async with db.session() as session:
        users = await _seed(UserRepository(session))
        repo = HiddenUserRepository(session)
        await repo.soft_delete(users[3].id)
        expected = await User.filter(name="name 3", deleted_at=None).order_by(
            "-created_at", "id").values_list("id", flat=True)
        got = await _walk(repo, 4, order_by="-created_at", filters={"name": "name 3"})
        assert got == expected
        assert users[3].id not in got
        # A filter only Tortoise's QuerySet renders (icontains) takes that path, same pages.
        expected = await User.filter(name__icontains="E 5", deleted_at=None).order_by(
            "email", "id").values_list("id", flat=True)
        assert await _walk(repo, 6, order_by="email", filters={"name__icontains": "E 5"}) \
            == expected


async def test_cost_does_not_grow_with_depth(db: DatabaseManager) -> None:
    async with db.session() as session:
        repo = UserRepository(session)
        await _seed(repo)
        page = await repo.paginate_keyset(limit=200, order_by=["name", "-email"])
        async with recorded_sql(session) as sql:
            deep = await repo.paginate_keyset(limit=5, order_by=["name", "-email"],
                                              after=page.next_cursor)
        assert len(deep.items) == 5
        assert len(sql) == 1
        assert "OFFSET" not in sql[0].upper()
        assert "LIMIT" in sql[0].upper()


async def test_stable_under_inserts_and_deletes(db: DatabaseManager) -> None:
    async with db.session() as session:
        repo = UserRepository(session)
        await _seed(repo)
        first = await repo.paginate_keyset(limit=50, order_by="email")
        last = first.items[-1].email
        # Rows inserted before and after the cursor, rows deleted on both sides.
        await repo.create_many([{"email": "a-before@x.io", "name": "new"},
                                {"email": "k0100a@x.io", "name": "new"}])
        await repo.delete(first.items[10].id)
        await repo.delete_where({"email__in": ["k0051@x.io", "k0052@x.io"]})
        second = await repo.paginate_keyset(limit=50, order_by="email",
                                            after=first.next_cursor)
        expected = await User.filter(email__gt=last).order_by("email", "id").limit(50)
        assert [u.id for u in second.items] == [u.id for u in expected]
        assert second.items[0].email == "k0050@x.io"
        assert "k0100a@x.io" in [u.email for u in second.items]


async def test_bad_cursors_are_validation_errors(db: DatabaseManager) -> None:
    async with db.session() as session:
        repo = UserRepository(session)
        await _seed(repo)
        cursor = (await repo.paginate_keyset(limit=3, order_by="name")).next_cursor
        assert cursor is not None
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."
        for i, char in enumerate(cursor):
            changed = cursor[:i] + alphabet[(alphabet.index(char) + 1) % len(alphabet)] \
                + cursor[i + 1:]
            with pytest.raises(ValidationError) as info:
                await repo.paginate_keyset(limit=3, order_by="name", after=changed)
            assert info.value.details["field"] == "after"
        for bad in ["", "x", "a.b.c", cursor + "A", cursor[:-1], "é.é", cursor.upper()]:
            with pytest.raises(ValidationError):
                await repo.paginate_keyset(limit=3, order_by="name", after=bad)
        with pytest.raises(ValidationError):  # another ordering
            await repo.paginate_keyset(limit=3, order_by="-name", after=cursor)
        with pytest.raises(ValidationError):  # another model, same ordering
            await PolicyRepository(session).paginate_keyset(limit=3, order_by="id",
                                                            after=cursor)
        own = (await repo.paginate_keyset(limit=3)).next_cursor
        with pytest.raises(ValidationError):
            await PolicyRepository(session).paginate_keyset(limit=3, after=own)
        with pytest.raises(ValidationError, match="columns of the model itself"):
            await PolicyRepository(session).paginate_keyset(limit=3, order_by="user__name")
        with pytest.raises(ValidationError):
            await repo.paginate_keyset(limit=0)
        # Still usable, and the good cursor still works.
        assert len((await repo.paginate_keyset(limit=3, order_by="name",
                                               after=cursor)).items) == 3

"""Set-based writes: upsert/upsert_many, update_many, update_where/delete_where/soft_delete_where.

Results are compared with what plain Tortoise or SQL reads back; every multi-row write is all
or nothing under a failure in the middle of the batch, and leaves the session usable.
"""

from __future__ import annotations

import asyncio

import pytest

from aegis_tortoise import DatabaseManager, DuplicateEntityError, ValidationError
from aegis_tortoise.examples.models import User
from tests.integration.test_repository_support import (
    HiddenUserRepository,
    PolicyRepository,
    UserRepository,
    recorded_sql,
)

N = 2_000


def _users(n: int, prefix: str = "u") -> list[dict[str, str]]:
    return [{"email": f"{prefix}{i}@x.io", "name": f"N{i}"} for i in range(n)]


async def _stored(session: object) -> dict[str, str]:
    rows = await User.all().order_by("id").values_list("email", "name")
    return dict(rows)  # type: ignore[arg-type]


async def test_upsert_inserts_then_updates(db: DatabaseManager) -> None:
    async with db.session() as session:
        repo = UserRepository(session)
        user, created = await repo.upsert({"email": "a@x.io", "name": "A"}, conflict=["email"],
                                          update=["name"])
        assert created is True
        assert user.id is not None
        await asyncio.sleep(0.01)
        again, created = await repo.upsert({"email": "a@x.io", "name": "B"},
                                           conflict=["email"], update=["name"])
        assert created is False
        assert again.id == user.id
        assert again.name == "B"
        assert again.created_at == user.created_at
        assert again.updated_at > user.updated_at
        stored = await User.get(id=user.id)
        assert (stored.name, stored.updated_at) == ("B", again.updated_at)


async def test_upsert_do_nothing_returns_the_row_unchanged(db: DatabaseManager) -> None:
    async with db.session() as session:
        repo = UserRepository(session)
        first = await repo.create({"email": "a@x.io", "name": "A"})
        user, created = await repo.upsert({"email": "a@x.io", "name": "Z"}, conflict=["email"])
        assert created is False
        assert (user.id, user.name, user.updated_at) == (first.id, "A", first.updated_at)
        _, created = await repo.upsert({"email": "b@x.io", "name": "B"}, conflict=["email"],
                                         update=None)
        assert created is True
        assert await User.filter(email="b@x.io").values_list("name", flat=True) == ["B"]


@pytest.mark.parametrize("update", [["name"], None])
async def test_upsert_many_input_order_and_flags(db: DatabaseManager, update: list[str] | None
                                                 ) -> None:
    async with db.session() as session:
        repo = UserRepository(session)
        await repo.create_many(_users(N)[::2])  # the even ones exist
        rows = [{**row, "name": f"new {row['name']}"} for row in _users(N)][::-1]
        results = await repo.upsert_many(rows, conflict=["email"], update=update)
        assert [u.email for u, _ in results] == [r["email"] for r in rows]
        assert [created for _, created in results] == [int(r["email"][1:-5]) % 2 == 1
                                                       for r in rows]
        stored = await _stored(session)
        assert len(stored) == N
        for user, created in results:
            assert stored[user.email] == user.name
            expect_new = created or update is not None
            assert user.name.startswith("new ") is expect_new
        ids = dict(await User.all().values_list("email", "id"))
        assert all(ids[u.email] == u.id for u, _ in results)


async def test_upsert_many_all_or_nothing(db: DatabaseManager) -> None:
    async with db.session() as session:
        repo = UserRepository(session)
        await repo.create_many(_users(10))
        before = await _stored(session)
        rows = _users(N, "v")
        rows[N // 2]["name"] = None  # type: ignore[call-overload]
        with pytest.raises(ValidationError) as info:
            await repo.upsert_many(rows, conflict=["email"], update=["name"])
        assert info.value.details["field"] == "name"
        assert await _stored(session) == before
        # A conflict on the key while another unique field collides: DuplicateEntityError.
        existing = await User.get(email="u3@x.io")
        rows = [{"id": 10_000 + i, "email": f"w{i}@x.io", "name": "W"} for i in range(100)]
        rows[50]["email"] = "u3@x.io"
        with pytest.raises(DuplicateEntityError) as dup:
            await repo.upsert_many(rows, conflict=["id"], update=["name", "email"])
        assert dup.value.details["field"] == "email"
        assert await _stored(session) == before
        assert (await User.get(id=existing.id)).name == existing.name
        # The session is usable and commits.
        assert (await repo.upsert({"email": "ok@x.io", "name": "ok"}, conflict=["email"]))[1]
    async with db.session() as session:
        assert await UserRepository(session).count() == 11


async def test_upsert_many_refuses_bad_conflict_targets(db: DatabaseManager) -> None:
    async with db.session() as session:
        repo = UserRepository(session)
        rows = [{"email": "a@x.io", "name": "A"}, {"email": "a@x.io", "name": "B"}]
        with pytest.raises(ValidationError, match="same email"):
            await repo.upsert_many(rows, conflict=["email"], update=["name"])
        with pytest.raises(ValidationError, match="unique"):
            await repo.upsert_many(rows[:1], conflict=["name"], update=["email"])
        with pytest.raises(ValidationError, match="unknown conflict field"):
            await repo.upsert_many(rows[:1], conflict=["nope"])
        assert await repo.count() == 0
        assert await repo.upsert_many([], conflict=["email"]) == []


async def test_update_many_groups_by_field_set(db: DatabaseManager, backend: str) -> None:
    async with db.session() as session:
        repo = UserRepository(session)
        users = await repo.create_many(_users(N))
        await asyncio.sleep(0.01)
        rows: list[dict[str, object]] = []
        for i, user in enumerate(users):
            if i % 3 == 0:
                rows.append({"id": user.id, "name": f"renamed {i}"})
            elif i % 3 == 1:
                rows.append({"id": user.id, "email": f"moved{i}@x.io", "name": f"both {i}"})
        rows.insert(5, {"id": 10**9, "name": "ghost"})  # no such id: skipped
        async with recorded_sql(session) as sql:
            updated = await repo.update_many(rows)
        if backend == "postgres":
            assert sum(s.lstrip().upper().startswith("UPDATE") for s in sql) == 2
        assert [u.id for u in updated] == [r["id"] for r in rows if r["id"] != 10**9]
        by_id = {u.id: u for u in updated}
        stored = {u.id: u for u in await User.all()}
        for row in rows:
            if row["id"] == 10**9:
                continue
            user = stored[row["id"]]  # type: ignore[index]
            assert by_id[user.id].name == user.name == row["name"]
            assert user.email == row.get("email", by_id[user.id].email)
            assert user.updated_at == by_id[user.id].updated_at > users[0].updated_at
        untouched = [u for i, u in enumerate(users) if i % 3 == 2]
        assert all(stored[u.id].name == u.name for u in untouched)
        assert all(stored[u.id].updated_at == u.updated_at for u in untouched)


async def test_update_many_all_or_nothing(db: DatabaseManager) -> None:
    async with db.session() as session:
        repo = UserRepository(session)
        users = await repo.create_many(_users(100))
        before = await _stored(session)
        rows: list[dict[str, object]] = [{"id": u.id, "name": "x"} for u in users[:-1]]
        rows.append({"id": users[0].id, "email": "twice@x.io"})
        with pytest.raises(ValidationError, match="twice"):
            await repo.update_many(rows)
        # The second group (a field set of its own) collides on email after the first ran.
        rows[-1] = {"id": users[-1].id, "email": "u7@x.io"}
        with pytest.raises(DuplicateEntityError) as info:
            await repo.update_many(rows)
        assert info.value.details["field"] == "email"
        assert await _stored(session) == before
        with pytest.raises(ValidationError) as bad:
            await repo.update_many([{"id": users[0].id, "name": "y"},
                                    {"id": users[1].id, "name": None}])
        assert bad.value.details["field"] == "name"
        with pytest.raises(ValidationError, match="needs the 'id'"):
            await repo.update_many([{"name": "y"}])
        assert await _stored(session) == before
        assert [u.name for u in await repo.update_many([{"id": users[0].id, "name": "z"}])] == [
            "z"]


async def test_where_methods_count_as_plain_tortoise(db: DatabaseManager) -> None:
    async with db.session() as session:
        repo = UserRepository(session)
        users = await repo.create_many(_users(50))
        expected = await User.filter(name__startswith="N1").count()
        await asyncio.sleep(0.01)
        assert await repo.update_where({"name__startswith": "N1"}, name="one") == expected
        assert await User.filter(name="one").count() == expected
        moved = await User.filter(name="one").first()
        assert moved is not None
        assert moved.updated_at > users[0].updated_at
        assert await repo.update_where({"name": "nobody"}, name="x") == 0
        assert await repo.soft_delete_where({"name": "one"}) == expected
        assert await repo.soft_delete_where({"name": "one"}) == 0  # already deleted
        gone = await User.filter(name="one").first()
        assert gone is not None
        assert gone.deleted_at is not None
        assert gone.updated_at > moved.updated_at
        assert await repo.delete_where({"id__in": [u.id for u in users[:5]]}) == 5
        assert await User.all().count() == 45
        with pytest.raises(ValidationError):
            await repo.update_where({"nope": 1}, name="x")
        with pytest.raises(ValidationError):
            await repo.update_where({}, nope="x")


async def test_where_methods_honour_hide_soft_deleted(db: DatabaseManager) -> None:
    async with db.session() as session:
        repo = HiddenUserRepository(session)
        users = await repo.create_many(_users(10))
        await repo.soft_delete(users[0].id)
        assert await repo.update_where({}, name="all") == 9
        assert (await User.get(id=users[0].id)).name == "N0"
        assert await repo.soft_delete_where({}) == 9
        assert await repo.delete_where({}) == 0
        assert await User.all().count() == 10
        assert await repo.update_many([{"id": users[1].id, "name": "hidden"}]) == []
        assert await UserRepository(session).delete_where({}) == 10


async def test_upsert_on_the_primary_key(db: DatabaseManager) -> None:
    async with db.session() as session:
        repo = UserRepository(session)
        users = await repo.create_many(_users(3))
        results = await repo.upsert_many(
            [{"id": users[1].id, "email": "u1@x.io", "name": "changed"},
             {"id": 5000, "email": "fresh@x.io", "name": "fresh"}],
            conflict=["id"], update=["name"])
        assert [(u.id, u.name, created) for u, created in results] == [
            (users[1].id, "changed", False), (5000, "fresh", True)]
        assert await User.filter(id=5000).exists()
        assert (await User.get(id=users[1].id)).name == "changed"


async def test_where_methods_across_relations(db: DatabaseManager) -> None:
    async with db.session() as session:
        repo = UserRepository(session)
        users = await repo.create_many(_users(4))
        for user in users[:2]:
            await PolicyRepository(session).create_many(
                [{"user_id": user.id, "title": "gold"}, {"user_id": user.id, "title": "gold"}])
        # Two matching policies per user: each user counts once.
        assert await repo.update_where({"policies__title": "gold"}, name="gold") == 2
        assert await User.filter(name="gold").count() == 2
        assert await repo.soft_delete_where({"policies__title": "gold"}) == 2
        assert await repo.delete_where({"policies__title": "gold"}) == 2
        assert await User.all().count() == 2

"""BaseRepository: construction, CRUD, update, delete, list/count/exists/paginate."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from pydantic import BaseModel
from tortoise.expressions import F

from aegis_tortoise import (
    BaseRepository,
    ConfigurationError,
    DatabaseManager,
    DuplicateEntityError,
    EntityNotFoundError,
    PaginatedResponse,
    Session,
    ValidationError,
)
from aegis_tortoise.examples.models import Policy, User
from tests.integration.test_repository_models import Gadget
from tests.integration.test_repository_support import (
    PolicyRepository,
    UserRepository,
    recorded_sql,
)


class UserCreate(BaseModel):
    email: str
    name: str


class UserPatch(BaseModel):
    email: str | None = None
    name: str | None = None


class SeedUserRepository(BaseRepository[User]):
    """Written exactly as in the seed: ``super().__init__(session, User)``."""

    def __init__(self, session: Session) -> None:
        super().__init__(session, User)

    async def get_by_email(self, email: str) -> User | None:
        return await self.query().get_or_none(email=email)

    async def get_active_users(self) -> list[User]:
        return await self.list(filters={"deleted_at": None})


# -- construction ---------------------------------------------------------------------------


async def test_model_resolution(db: DatabaseManager) -> None:
    async with db.session() as session:
        assert UserRepository(session).model is User
        assert UserRepository(session).session is session
        assert BaseRepository(session, User).model is User
        assert BaseRepository(User, session).model is User
        assert SeedUserRepository(session).model is User

        class Deeper(UserRepository):
            pass

        assert Deeper(session).model is User
        with pytest.raises(ConfigurationError, match="needs a Tortoise model"):
            BaseRepository(session)
        with pytest.raises(ConfigurationError, match="open Session"):
            BaseRepository(object(), User)  # type: ignore[call-overload]
        with pytest.raises(ConfigurationError, match="not one of this manager's models"):
            BaseRepository(session, Gadget)


async def test_repository_sees_plain_tortoise_writes_of_its_session(db: DatabaseManager) -> None:
    async with db.session() as session:
        await User.create(email="plain@x.io", name="Plain")
        repo = UserRepository(session)
        assert (await repo.list())[0].email == "plain@x.io"


# -- create / get ---------------------------------------------------------------------------


async def test_create_from_entity_dict_and_pydantic(db: DatabaseManager) -> None:
    before = datetime.now(UTC)
    async with db.session() as session:
        repo = UserRepository(session)
        a = await repo.create(User(email="a@x.io", name="A"))
        b = await repo.create({"email": "b@x.io", "name": "B"})
        c = await repo.create(UserCreate(email="c@x.io", name="C"))
        assert [u.id for u in (a, b, c)] == sorted({a.id, b.id, c.id})
        assert all(u.id is not None and u._saved_in_db for u in (a, b, c))
        assert a.created_at >= before
        assert a.updated_at >= before
        assert a.deleted_at is None
    async with db.session() as session:
        stored = await UserRepository(session).get(c.id)
        assert (stored.email, stored.name) == ("c@x.io", "C")


async def test_create_rejects_bad_input_before_sql(db: DatabaseManager) -> None:
    async with db.session() as session:
        repo = UserRepository(session)
        with pytest.raises(ValidationError, match="unknown field 'nmae'"):
            await repo.create({"email": "x@x.io", "nmae": "typo"})
        with pytest.raises(ValidationError, match=r"missing required field.*name"):
            await repo.create({"email": "x@x.io"})
        with pytest.raises(ValidationError, match=r"missing required field.*user"):
            await PolicyRepository(session).create({"title": "orphan"})
        with pytest.raises(ValidationError, match="stores User, not Policy"):
            await repo.create(Policy(title="t", user_id=1))  # type: ignore[arg-type]
        saved = await repo.create({"email": "y@x.io", "name": "Y"})
        with pytest.raises(ValidationError, match="already saved"):
            await repo.create(saved)
        assert await repo.count() == 1  # the session is still usable


async def test_create_duplicate_raises_duplicate_entity_error(db: DatabaseManager) -> None:
    async with db.session() as session:
        await UserRepository(session).create({"email": "dup@x.io", "name": "One"})
    with pytest.raises(DuplicateEntityError) as info:
        async with db.session() as session:
            await UserRepository(session).create({"email": "dup@x.io", "name": "Two"})
    assert info.value.entity_type == "User"
    assert info.value.details["field"] == "email"
    assert info.value.__cause__ is not None
    async with db.session() as session:
        assert await UserRepository(session).count() == 1


async def test_get_by_id_get_and_get_by_ids(db: DatabaseManager) -> None:
    async with db.session() as session:
        repo = UserRepository(session)
        users = [await repo.create({"email": f"u{i}@x.io", "name": f"U{i}"}) for i in range(3)]
        assert (await repo.get_by_id(users[1].id)) == users[1]
        assert await repo.get_by_id(999_999) is None
        assert (await repo.get(str(users[0].id))).email == "u0@x.io"  # ids are converted
        with pytest.raises(EntityNotFoundError) as info:
            await repo.get(999_999)
        assert str(info.value) == "User not found: 999999"
        assert info.value.status_code == 404
        ids = [users[2].id, 999_999, users[0].id, users[2].id]
        assert [u.id for u in await repo.get_by_ids(ids)] == [users[2].id, users[0].id]
        assert await repo.get_by_ids([]) == []
        with pytest.raises(ValidationError, match="Invalid User id"):
            await repo.get_by_id("not-a-number")


# -- update ---------------------------------------------------------------------------------


async def test_update_changes_only_given_fields_and_updated_at(db: DatabaseManager) -> None:
    async with db.session() as session:
        repo = UserRepository(session)
        user = await repo.create({"email": "old@x.io", "name": "Old"})
    await asyncio.sleep(0.01)
    async with db.session() as session:
        repo = UserRepository(session)
        # Another writer changes the email; our update of the name must not undo it.
        await session.execute("UPDATE users SET email = :e WHERE id = :i",
                              {"e": "new@x.io", "i": user.id})
        async with recorded_sql(session) as sql:
            updated = await repo.update(user.id, name="Jane")
        assert updated is not None
        assert (updated.name, updated.email) == ("Jane", "new@x.io")
        assert updated.created_at == user.created_at
        assert updated.updated_at > user.updated_at
        assert updated.deleted_at is None
        statements = [s for s in sql if not s.upper().startswith(("BEGIN", "SAVEPOINT"))]
        assert len(statements) == 1
        assert statements[0].upper().startswith("UPDATE")
        assert "RETURNING" in statements[0].upper()
    async with db.session() as session:
        stored = await UserRepository(session).get(user.id)
        assert (stored.name, stored.email) == ("Jane", "new@x.io")


async def test_update_forms(db: DatabaseManager) -> None:
    async with db.session() as session:
        repo = UserRepository(session)
        user = await repo.create({"email": "f@x.io", "name": "F"})
        assert (await repo.update(user.id, {"name": "From dict"})).name == "From dict"  # type: ignore[union-attr]
        patched = await repo.update(user.id, UserPatch(name="From pydantic"))
        assert patched is not None
        assert (patched.name, patched.email) == ("From pydantic", "f@x.io")
        both = await repo.update(user.id, {"name": "ignored"}, name="kw wins")
        assert both is not None
        assert both.name == "kw wins"
        unchanged = await repo.update(user.id)
        assert unchanged is not None
        assert unchanged.name == "kw wins"
        assert await repo.update(999_999, name="nobody") is None
        with pytest.raises(ValidationError, match="unknown field 'nmae'"):
            await repo.update(user.id, nmae="typo")
        with pytest.raises(ValidationError, match="primary key"):
            await repo.update(user.id, id=5)
        other = await repo.create({"email": "g@x.io", "name": "G"})
        policy = await PolicyRepository(session).create({"user": user, "title": "T"})
        moved = await PolicyRepository(session).update(policy.id, user=other, title=F("title"))
        assert moved is not None
        assert moved.user_id == other.id
        assert moved.title == "T"


async def test_update_duplicate(db: DatabaseManager) -> None:
    async with db.session() as session:
        repo = UserRepository(session)
        await repo.create({"email": "taken@x.io", "name": "A"})
        user = await repo.create({"email": "free@x.io", "name": "B"})
    with pytest.raises(DuplicateEntityError, match="email"):
        async with db.session() as session:
            await UserRepository(session).update(user.id, email="taken@x.io")


# -- delete ---------------------------------------------------------------------------------


async def test_delete(db: DatabaseManager) -> None:
    async with db.session() as session:
        repo = UserRepository(session)
        user = await repo.create({"email": "d@x.io", "name": "D"})
        await PolicyRepository(session).create({"user": user, "title": "cascade"})
        assert await repo.exists(user.id)
        assert await repo.delete(user.id) is True
        assert await repo.delete(user.id) is False
        assert not await repo.exists(user.id)
        assert await repo.get_by_id(user.id) is None
        assert await PolicyRepository(session).count() == 0  # ON DELETE CASCADE


# -- list / count / paginate ----------------------------------------------------------------


async def _seed_users(repo: UserRepository, n: int) -> list[User]:
    return await repo.create_many(
        [{"email": f"user{i:02d}@x.io", "name": f"Name {i % 3}"} for i in range(n)])


async def test_list_skip_limit_order(db: DatabaseManager) -> None:
    async with db.session() as session:
        repo = UserRepository(session)
        users = await _seed_users(repo, 12)
        ids = [u.id for u in users]
        assert [u.id for u in await repo.list()] == ids  # default order: primary key
        assert [u.id for u in await repo.list(skip=2, limit=3)] == ids[2:5]
        assert [u.id for u in await repo.list(skip=10, limit=None)] == ids[10:]
        assert await repo.list(limit=0) == []
        desc = await repo.list(order_by="-email", limit=2)
        assert [u.email for u in desc] == ["user11@x.io", "user10@x.io"]
        by_name = await repo.list(order_by=["name", "-id"])
        assert [(u.name, u.id) for u in by_name] == sorted(
            ((u.name, u.id) for u in users), key=lambda t: (t[0], -t[1]))
        assert len(await repo.list(limit=100)) == 12
        with pytest.raises(ValidationError, match="skip"):
            await repo.list(skip=-1)
        with pytest.raises(ValidationError, match="limit"):
            await repo.list(limit=-5)


async def test_count_and_exists(db: DatabaseManager) -> None:
    async with db.session() as session:
        repo = UserRepository(session)
        users = await _seed_users(repo, 9)
        assert await repo.count() == 9
        assert await repo.count({"name": "Name 1"}) == 3
        assert await repo.count({"email__startswith": "user0"}) == 9
        assert await repo.exists(users[0].id) is True
        assert await repo.exists(999_999) is False


async def test_paginate(db: DatabaseManager) -> None:
    async with db.session() as session:
        repo = UserRepository(session)
        users = await _seed_users(repo, 45)
        page = await repo.paginate(page=2, page_size=20)
        assert isinstance(page, PaginatedResponse)
        assert (page.total, page.page, page.page_size, page.total_pages) == (45, 2, 20, 3)
        assert [u.id for u in page.items] == [u.id for u in users[20:40]]
        assert page.has_next
        assert page.has_previous
        last = await repo.paginate(page=3, page_size=20)
        assert len(last.items) == 5
        assert not last.has_next
        beyond = await repo.paginate(page=9, page_size=20)
        assert beyond.items == []
        assert beyond.total == 45
        filtered = await repo.paginate(page=1, page_size=10, filters={"name": "Name 0"},
                                       order_by="-email")
        assert filtered.total == 15
        assert filtered.total_pages == 2
        assert filtered.items[0].email == "user42@x.io"
        empty = await repo.paginate(filters={"name": "nobody"})
        assert (empty.total, empty.total_pages, empty.items) == (0, 0, [])
        with pytest.raises(ValidationError, match="page must be"):
            await repo.paginate(page=0)
        with pytest.raises(ValidationError, match="page_size must be"):
            await repo.paginate(page_size=0)


async def test_query_is_bound_to_the_session(db: DatabaseManager) -> None:
    async with db.session() as session:
        repo = UserRepository(session)
        await _seed_users(repo, 3)
        assert await repo.query().filter(name="Name 1").count() == 1
        assert repo.query()._db is session.connection
        await session.rollback()
        assert await repo.query().count() == 0


async def test_seed_walkthrough(db: DatabaseManager) -> None:
    """The seed's Base Repository example, line by line."""
    async with db.session() as session:
        user_repo = SeedUserRepository(session)
        new_user = User(email="user@example.com", name="John Doe")
        created_user = await user_repo.create(new_user)
        assert created_user.id is not None
        user = await user_repo.get_by_id(created_user.id)
        assert user is not None
        user_by_email = await user_repo.get_by_email("user@example.com")
        assert user_by_email == user
        updated_user = await user_repo.update(user.id, name="Jane Doe")
        assert updated_user is not None
        assert updated_user.name == "Jane Doe"
        users = await user_repo.list(skip=0, limit=10)
        assert [u.id for u in users] == [user.id]
        assert [u.id for u in await user_repo.get_active_users()] == [user.id]
        assert await user_repo.count() == 1
        await user_repo.soft_delete(user.id)
        assert await user_repo.get_active_users() == []
        assert await user_repo.count() == 1  # soft-deleted rows stay visible by default
        await user_repo.delete(user.id)
        assert await user_repo.count() == 0


async def test_invalid_values_raise_validation_error(db: DatabaseManager) -> None:
    async with db.session() as session:
        repo = UserRepository(session)
        user = await repo.create({"email": "v@x.io", "name": "V"})
        with pytest.raises(ValidationError):
            await repo.create({"email": "long@x.io", "name": "x" * 500})
        with pytest.raises(ValidationError):
            await repo.create({"id": "abc", "email": "abc@x.io", "name": "A"})
        with pytest.raises(ValidationError):
            await repo.create_many([{"email": "ok@x.io", "name": "ok"},
                                    {"email": "long@x.io", "name": "x" * 500}])
        with pytest.raises(ValidationError):
            await repo.update(user.id, name="x" * 500)
        with pytest.raises(ValidationError):
            await PolicyRepository(session).update(1, user_id="abc")
        assert [u.email for u in await repo.list()] == ["v@x.io"]  # still usable

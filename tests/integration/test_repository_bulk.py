"""create_many: ids on every backend, one statement per chunk, all or nothing, auto fields."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from pydantic import BaseModel

from aegis_tortoise import BaseRepository, DatabaseManager, DuplicateEntityError, ValidationError
from aegis_tortoise._bulk import SQLITE_MAX_VARIABLES
from aegis_tortoise.examples.models import User
from tests.conftest import reset_pg_schema
from tests.integration.test_repository_models import Gadget
from tests.integration.test_repository_pg_models import SHEET_MODELS, Sheet
from tests.integration.test_repository_support import (
    PolicyRepository,
    UserRepository,
    gadgets_fixture,  # noqa: F401 - the gadgets fixture
    inserts,
    recorded_sql,
)

N = 10_000


class UserIn(BaseModel):
    email: str
    name: str


def _rows(n: int, prefix: str = "bulk") -> list[dict[str, str]]:
    return [{"email": f"{prefix}{i}@x.io", "name": f"Bulk {i}"} for i in range(n)]


async def test_create_many_10000_rows_one_transaction(db: DatabaseManager, backend: str) -> None:
    before = datetime.now(UTC)
    async with db.session() as session:
        repo = UserRepository(session)
        async with recorded_sql(session) as sql:
            users = await repo.create_many(_rows(N))
        ids = [u.id for u in users]
        assert len(set(ids)) == N
        assert None not in ids
        assert all(u._saved_in_db for u in users)
        assert all(u.created_at >= before and u.updated_at >= before for u in users)
        # One INSERT per chunk: one on PostgreSQL (unnest), ceil(N / rows-per-chunk) on sqlite.
        per_chunk = SQLITE_MAX_VARIABLES // 5  # created/updated/deleted_at, email, name
        expected = 1 if backend == "postgres" else math.ceil(N / per_chunk)
        assert len(inserts(sql)) == expected
        assert sum(s.upper().startswith("SAVEPOINT") for s in sql) == 1
        if backend == "postgres":
            # Not committed yet: another session sees none of the rows.
            async with db.session() as other:
                assert await UserRepository(other).count() == 0
        # Every id belongs to the row that was given at its position.
        stored = {row["id"]: row["email"] for row in
                  (await session.execute("SELECT id, email FROM users")).mappings().all()}
        assert stored == {u.id: u.email for u in users}
        assert [u.email for u in users] == [f"bulk{i}@x.io" for i in range(N)]
    async with db.session() as session:
        assert await UserRepository(session).count() == N


async def test_create_many_duplicate_writes_nothing(db: DatabaseManager) -> None:
    async with db.session() as session:
        repo = UserRepository(session)
        existing = await repo.create({"email": "existing@x.io", "name": "Existing"})
        rows = _rows(N)
        rows[7777]["email"] = rows[3]["email"]  # one duplicate inside the batch
        with pytest.raises(DuplicateEntityError) as info:
            await repo.create_many(rows)
        assert info.value.details["field"] == "email"
        assert info.value.entity_type == "User"
        assert info.value.__cause__ is not None
        assert await repo.count() == 1  # none of the 10,000 was written
        instances = [User(**r) for r in _rows(3, "again")]
        instances.append(User(email="existing@x.io", name="Clash with a stored row"))
        with pytest.raises(DuplicateEntityError, match="email"):
            await repo.create_many(instances)
        assert all(u.pk is None for u in instances)
        assert not any(u._saved_in_db for u in instances)
        # The session is still usable, and its earlier work commits.
        later = await repo.create({"email": "later@x.io", "name": "Later"})
        assert later.id is not None
    async with db.session() as session:
        emails = sorted(u.email for u in await UserRepository(session).list())
        assert emails == ["existing@x.io", "later@x.io"]
        assert (await UserRepository(session).get(existing.id)).name == "Existing"


async def test_create_many_mixed_inputs_and_relations(db: DatabaseManager) -> None:
    async with db.session() as session:
        repo = UserRepository(session)
        assert await repo.create_many([]) == []
        users = await repo.create_many([
            User(email="m1@x.io", name="Entity"),
            {"email": "m2@x.io", "name": "Dict"},
            UserIn(email="m3@x.io", name="Pydantic"),
        ])
        assert [u.name for u in await repo.get_by_ids([u.id for u in users])] == [
            "Entity", "Dict", "Pydantic"]
        policies = await PolicyRepository(session).create_many(
            [{"user": users[0], "title": "A"}, {"user_id": users[1].id, "title": "B"}])
        assert [(p.user_id, p.title) for p in policies] == [(users[0].id, "A"),
                                                            (users[1].id, "B")]
        with pytest.raises(ValidationError, match="unknown field"):
            await repo.create_many([{"email": "z@x.io", "name": "Z", "age": 3}])
        with pytest.raises(ValidationError, match="missing required field"):
            await repo.create_many([{"email": "z@x.io"}])
        assert await repo.count() == 3


async def test_create_many_fills_defaults_like_create(gadgets: DatabaseManager) -> None:
    async with gadgets.session() as session:
        repo = BaseRepository(session, Gadget)
        single = await repo.create({"code": "single"})
        many = await repo.create_many([
            {"code": "a", "data": {"k": [1, 2]}, "price": Decimal("1.50")},
            Gadget(code="b", qty=7, active=False),
            {"code": "c", "id": 1000},  # an explicit primary key goes in its own statement
            {"code": "d"},
        ])
        assert [g.id for g in many] == [single.id + 1, single.id + 2, 1000, single.id + 3]
        for gadget in [single, *many]:
            assert isinstance(gadget.token, uuid.UUID)
            assert gadget.made_at is not None
            assert gadget.changed_at is not None
        assert len({g.token for g in many}) == 4  # the callable default ran per row
        stored = {g.code: g for g in await repo.list(limit=None)}
        assert stored["a"].data == {"k": [1, 2]}
        assert stored["a"].price == Decimal("1.50")
        assert (stored["b"].qty, stored["b"].active) == (7, False)
        assert (stored["d"].qty, stored["d"].active, stored["d"].data) == (1, True, None)
        for gadget in many:
            assert stored[gadget.code].token == gadget.token
            assert stored[gadget.code].made_at == gadget.made_at
        with pytest.raises(ValidationError, match="no 'deleted_at' field"):
            await repo.soft_delete(single.id)
        with pytest.raises(ValidationError, match="no 'deleted_at' field"):
            await repo.restore(single.id)


async def test_create_many_array_columns_on_postgres(backend: str, db_url: str) -> None:
    if backend != "postgres":
        pytest.skip("array columns are PostgreSQL-only")
    await reset_pg_schema(db_url)
    async with DatabaseManager(db_url, models=SHEET_MODELS, pool_size=1, max_overflow=0,
                               pool_timeout=10) as manager:
        await manager.generate_schemas()
        async with manager.session() as session:
            repo = BaseRepository(session, Sheet)
            async with recorded_sql(session) as sql:
                sheets = await repo.create_many(
                    [{"name": f"s{i}", "tags": [f"t{i}", "x", "y"][: i % 3 + 1]}
                     for i in range(5)])
            assert [s.id for s in sheets] == sorted({s.id for s in sheets})
            assert len(inserts(sql)) == 1
            assert "VALUES" in inserts(sql)[0]
            stored = {s.name: s.tags for s in await repo.list()}
            assert stored == {"s0": ["t0"], "s1": ["t1", "x"], "s2": ["t2", "x", "y"],
                              "s3": ["t3"], "s4": ["t4", "x"]}

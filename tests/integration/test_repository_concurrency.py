"""get_or_create under concurrency, and loading relations in a fixed number of queries."""

from __future__ import annotations

import asyncio

import pytest

from aegis_tortoise import DatabaseManager, DuplicateEntityError
from aegis_tortoise.examples.models import User
from tests.integration.test_repository_support import (
    PolicyRepository,
    UserRepository,
    recorded_sql,
    selects,
)

TASKS = 50


async def test_get_or_create_50_concurrent_sessions(db: DatabaseManager) -> None:
    start = asyncio.Event()

    async def worker(i: int) -> tuple[int, bool, int]:
        await start.wait()
        async with db.session() as session:
            repo = UserRepository(session)
            user, created = await repo.get_or_create(email="race@x.io",
                                                     defaults={"name": f"Task {i}"})
            # The session is still usable after losing the race.
            seen = await repo.count({"email": "race@x.io"})
            await repo.create({"email": f"after{i}@x.io", "name": "After"})
            return user.id, created, seen

    tasks = [asyncio.create_task(worker(i)) for i in range(TASKS)]
    await asyncio.sleep(0)
    start.set()
    results = await asyncio.gather(*tasks)  # none raises
    assert sum(created for _, created, _ in results) == 1
    assert len({user_id for user_id, _, _ in results}) == 1
    assert all(seen == 1 for _, _, seen in results)
    async with db.session() as session:
        repo = UserRepository(session)
        assert await repo.count({"email": "race@x.io"}) == 1
        assert await repo.count({"email__startswith": "after"}) == TASKS


async def test_get_or_create_waits_for_an_uncommitted_insert(db: DatabaseManager,
                                                             backend: str) -> None:
    """B looks up the key while A's insert is uncommitted: B must return A's row, not fail."""
    if backend != "postgres":
        pytest.skip("sqlite runs one session at a time")
    async with db.session() as a:
        mine, created = await UserRepository(a).get_or_create(
            email="slow@x.io", defaults={"name": "A"})
        assert created

        async def other() -> tuple[User, bool]:
            async with db.session() as b:
                found = await UserRepository(b).get_or_create(
                    email="slow@x.io", defaults={"name": "B"})
                assert await UserRepository(b).count() == 1  # B's session is usable
                return found

        task = asyncio.create_task(other())
        await asyncio.sleep(0.3)
        assert not task.done()  # B's INSERT waits on A's row lock
    theirs, created = await asyncio.wait_for(task, timeout=10)
    assert not created
    assert theirs.id == mine.id
    assert theirs.name == "A"


async def test_get_or_create_basics(db: DatabaseManager) -> None:
    async with db.session() as session:
        repo = UserRepository(session)
        user, created = await repo.get_or_create(email="g@x.io", defaults={"name": "G"})
        assert created
        assert user.id is not None
        assert user.name == "G"
        again, created = await repo.get_or_create(defaults={"name": "ignored"}, email="g@x.io")
        assert not created
        assert again.id == user.id
        assert again.name == "G"
        by_lookup, created = await repo.get_or_create(email__iexact="G@X.IO")
        assert not created
        assert by_lookup.id == user.id
        await repo.soft_delete(user.id)
        deleted, created = await repo.get_or_create(email="g@x.io", defaults={"name": "new"})
        assert not created
        assert deleted.id == user.id
        # A conflict on another unique field than the lookup cannot be resolved: it raises,
        # and the session's transaction is not aborted.
        with pytest.raises(DuplicateEntityError, match="email"):
            await repo.get_or_create(name="Other", defaults={"email": "g@x.io"})
        assert await repo.count() == 1
    async with db.session() as session:
        assert await UserRepository(session).count() == 1


# -- relations: a fixed number of queries ------------------------------------------------------


async def _users_with_policies(db: DatabaseManager, n: int) -> None:
    async with db.session() as session:
        users = await UserRepository(session).create_many(
            [{"email": f"p{i}@x.io", "name": f"P{i}"} for i in range(n)])
        await PolicyRepository(session).create_many(
            [{"user": u, "title": f"{u.name}-{k}"} for u in users for k in range(3)])


@pytest.mark.parametrize("n", [10, 100])
async def test_prefetch_loads_relations_in_two_queries(db: DatabaseManager, n: int) -> None:
    await _users_with_policies(db, n)
    async with db.session() as session:
        repo = UserRepository(session)
        async with recorded_sql(session) as sql:
            users = await repo.list(limit=None, prefetch=["policies"])
            titles = {u.email: sorted(p.title for p in u.policies) for u in users}
        assert len(users) == n
        assert titles["p7@x.io"] == ["P7-0", "P7-1", "P7-2"]
        assert sum(len(t) for t in titles.values()) == 3 * n
        assert len(selects(sql)) == 2  # users, then all their policies: not 1 + n

        async with recorded_sql(session) as sql:
            users = await repo.query().prefetch_related("policies").order_by("id")
            assert sum(len(u.policies) for u in users) == 3 * n
        assert len(selects(sql)) == 2

        async with recorded_sql(session) as sql:
            page = await repo.paginate(page=1, page_size=n, prefetch=["policies"])
            one = await repo.get(users[0].id, prefetch=["policies"])
            some = await repo.get_by_ids([u.id for u in users[:5]], prefetch=["policies"])
        assert sum(len(u.policies) for u in page.items) == 3 * n
        assert len(one.policies) == 3
        assert all(len(u.policies) == 3 for u in some)
        assert len(selects(sql)) == 3 + 2 + 2  # count + page + policies, get, get_by_ids


async def test_prefetch_through_the_foreign_key(db: DatabaseManager) -> None:
    await _users_with_policies(db, 20)
    async with db.session() as session:
        async with recorded_sql(session) as sql:
            policies = await PolicyRepository(session).list(limit=None, prefetch=["user"])
            owners = {p.user.email for p in policies}
        assert len(policies) == 60
        assert len(owners) == 20
        assert len(selects(sql)) == 2

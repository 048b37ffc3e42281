"""Pages neither repeat nor skip rows, and a unique order needs no tie-breaker."""

from __future__ import annotations

from aegis_tortoise import DatabaseManager
from aegis_tortoise.examples.repositories import UserRepository


async def test_pages_of_a_non_unique_order_neither_repeat_nor_skip(db: DatabaseManager) -> None:
    async with db.session() as session:
        repo = UserRepository(session)
        await repo.create_many([{"email": f"u{i}@example.com", "name": "same"}
                                for i in range(25)])
        seen = []
        for page in range(1, 6):
            result = await repo.paginate(page=page, page_size=5, order_by="name")
            seen += [u.id for u in result.items]
        assert len(seen) == 25
        assert len(set(seen)) == 25
        desc = await repo.list(limit=25, order_by="-name")
        assert [u.id for u in desc] == sorted(u.id for u in desc)  # ties broken by the key


async def test_the_primary_key_is_added_only_when_the_order_is_not_total(
        db: DatabaseManager) -> None:
    async with db.session() as session:
        repo = UserRepository(session)
        assert repo._ordering(["email"]) == ["email"]          # unique, not null
        assert repo._ordering(["-email"]) == ["-email"]
        assert repo._ordering(["name"]) == ["name", "id"]       # ties possible
        assert repo._ordering(["deleted_at"]) == ["deleted_at", "id"]
        assert repo._ordering([]) == ["id"]
        assert repo._ordering(["-id"]) == ["-id"]

"""db.session(readonly=True) without replicas: the primary, read only, on both backends."""

from __future__ import annotations

import pytest

from aegis_tortoise import DatabaseManager, TransactionError
from tests.integration.test_repository_support import UserRepository


async def test_readonly_session_reads_and_refuses_writes(db: DatabaseManager) -> None:
    async with db.session() as session:
        await UserRepository(session).create({"email": "a@x.org", "name": "a"})
    async with db.session(readonly=True) as session:
        repo = UserRepository(session)
        assert [u.email for u in await repo.list()] == ["a@x.org"]
        assert await repo.count() == 1
        assert (await repo.paginate()).total == 1
        assert "readonly" in repr(session)
    with pytest.raises(TransactionError, match=r"db\.session\(readonly=True\)"):
        async with db.session(readonly=True) as session:
            await UserRepository(session).create({"email": "b@x.org", "name": "b"})
    with pytest.raises(TransactionError, match=r"readonly session"):
        async with db.session(readonly=True) as session:
            await session.execute("DELETE FROM users")
    # The connection is writable again for the next ordinary session.
    async with db.session() as session:
        await UserRepository(session).create({"email": "c@x.org", "name": "c"})
        assert await UserRepository(session).count() == 2
    assert "replica_reads" not in db.stats()

"""create_many by binary COPY (PostgreSQL, from COPY_THRESHOLD rows) and streamed from a
generator (returning=False, both backends): ids, all or nothing, duplicates, one transaction."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from aegis_tortoise import DatabaseManager, DuplicateEntityError, ValidationError
from aegis_tortoise._copy import COPY_THRESHOLD
from aegis_tortoise._create_many import STREAM_CHUNK
from tests.integration.test_repository_support import UserRepository, recorded_sql


def _rows(n: int, prefix: str = "c") -> Iterator[dict[str, str]]:
    return ({"email": f"{prefix}{i}@x.io", "name": f"C {i}"} for i in range(n))


async def test_copy_sets_ids_of_the_rows_given(pg_db: DatabaseManager) -> None:
    async with pg_db.session() as session:
        repo = UserRepository(session)
        await repo.create({"email": "first@x.io", "name": "first"})
        async with recorded_sql(session) as sql:
            users = await repo.create_many(list(_rows(COPY_THRESHOLD)))
        assert any("nextval" in s for s in sql)
        assert not [s for s in sql if s.upper().startswith("INSERT")]  # COPY is not logged
        stored = dict((await session.execute("SELECT id, email FROM users")).fetchall())
        assert stored == {1: "first@x.io"} | {u.id: u.email for u in users}
        assert [u.email for u in users] == [f"c{i}@x.io" for i in range(COPY_THRESHOLD)]
        assert all(u._saved_in_db and u.created_at is not None for u in users)
        after = await repo.create({"email": "after@x.io", "name": "after"})
        assert after.id > max(u.id for u in users)  # the sequence moved past the COPY


async def test_copy_duplicate_writes_nothing(pg_db: DatabaseManager) -> None:
    async with pg_db.session() as session:
        repo = UserRepository(session)
        await repo.create({"email": "c77@x.io", "name": "existing"})
        with pytest.raises(DuplicateEntityError) as info:
            await repo.create_many(list(_rows(COPY_THRESHOLD)))
        assert info.value.details["field"] == "email"
        assert await repo.count() == 1
        assert len(await repo.create_many(list(_rows(10, "ok")))) == 10
    async with pg_db.session() as session:
        assert await UserRepository(session).count() == 11


async def test_generator_streams_in_one_transaction(db: DatabaseManager, backend: str) -> None:
    n = 2 * STREAM_CHUNK + 123
    async with db.session() as session:
        repo = UserRepository(session)
        assert await repo.create_many(_rows(n), returning=False) == n
        if backend == "postgres":
            async with db.session() as other:
                assert await UserRepository(other).count() == 0  # not committed yet
        assert await repo.count() == n
    async with db.session() as session:
        assert await UserRepository(session).count() == n


async def test_generator_failure_in_a_late_chunk_writes_nothing(db: DatabaseManager) -> None:
    n = 2 * STREAM_CHUNK + 10

    def rows(bad: str) -> Iterator[dict[str, object]]:
        for row in _rows(n):
            if row["email"] == f"c{n - 5}@x.io":
                yield {"email": "c3@x.io", "name": "dup"} if bad == "dup" else {
                    "email": "x@x.io", "name": None}
            else:
                yield row

    async with db.session() as session:
        repo = UserRepository(session)
        with pytest.raises(DuplicateEntityError):
            await repo.create_many(rows("dup"), returning=False)
        with pytest.raises(ValidationError):
            await repo.create_many(rows("null"), returning=False)
        assert await repo.count() == 0
        assert await repo.create_many(iter([]), returning=False) == 0
        assert await repo.create_many(_rows(3), returning=False) == 3

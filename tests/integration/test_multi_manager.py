"""Several managers in one event loop: same models, different databases and dialects."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aegis_tortoise import DatabaseManager, TransactionError
from aegis_tortoise.examples.models import Policy, User
from tests.conftest import EXAMPLE_MODELS, count_rows, reset_pg_schema


async def _manager(url: str) -> DatabaseManager:
    if url.startswith("postgres"):
        await reset_pg_schema(url)
    db = DatabaseManager(url, models=EXAMPLE_MODELS, pool_size=3, max_overflow=2,
                         pool_timeout=10)
    await db.generate_schemas()
    return db


@pytest.fixture
async def two_pg(pg_database: str, pg_database_b: str
                 ) -> AsyncIterator[tuple[DatabaseManager, DatabaseManager]]:
    a, b = await _manager(pg_database), await _manager(pg_database_b)
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def _emails(db: DatabaseManager) -> list[str]:
    async with db.session():
        return sorted(await User.all().values_list("email", flat=True))  # type: ignore[arg-type]


async def _interleaved_writes(a: DatabaseManager, b: DatabaseManager) -> None:
    async def write(db: DatabaseManager, tag: str, i: int) -> None:
        async with db.session() as session:
            user = await User.create(email=f"{tag}{i}@x", name=tag)
            await asyncio.sleep(0)  # let the other manager's sessions run in between
            await Policy.create(user=user, title=f"{tag}{i}")
            await session.execute("SELECT 1")

    await asyncio.gather(*(write(db, tag, i) for i in range(15)
                           for db, tag in ((a, "a"), (b, "b"))))


async def test_two_postgres_databases_concurrently(
    two_pg: tuple[DatabaseManager, DatabaseManager],
) -> None:
    a, b = two_pg
    await _interleaved_writes(a, b)
    assert await _emails(a) == sorted(f"a{i}@x" for i in range(15))
    assert await _emails(b) == sorted(f"b{i}@x" for i in range(15))
    assert await count_rows(a, "policies") == await count_rows(b, "policies") == 15


async def test_two_postgres_databases_nested_sessions(
    two_pg: tuple[DatabaseManager, DatabaseManager],
) -> None:
    a, b = two_pg

    async def unit_of_work() -> None:
        async with a.session():
            await User.create(email="a@x", name="A")
            async with b.session():  # another database, inside a's session
                await User.create(email="b@x", name="B")
                assert await User.all().count() == 1  # b's table, not a's
            assert await User.filter(email="a@x").exists()  # a's session again
            raise RuntimeError("undo a only")

    with pytest.raises(RuntimeError):
        await unit_of_work()
    assert await _emails(a) == []
    assert await _emails(b) == ["b@x"]


async def test_two_sqlite_databases(tmp_path: Path) -> None:
    a = await _manager(f"sqlite:///{tmp_path}/a.db")
    b = await _manager("sqlite://:memory:")
    try:
        await _interleaved_writes(a, b)
        assert await _emails(a) == sorted(f"a{i}@x" for i in range(15))
        assert await _emails(b) == sorted(f"b{i}@x" for i in range(15))
        async with a.session():  # sessions of two sqlite managers may nest
            async with b.session():
                await User.create(email="b-nested@x", name="B")
            assert not await User.filter(email="b-nested@x").exists()
    finally:
        await a.close()
        await b.close()


async def test_sqlite_and_postgres_one_after_the_other(pg_database: str) -> None:
    lite = await _manager("sqlite://:memory:")
    pg = await _manager(pg_database)
    try:
        for round_ in range(3):
            for db in (lite, pg, lite, pg):
                async with db.session():
                    user = await User.create(email=f"{db.dialect}{round_}-{id(db)}"
                                                   f"-{await User.all().count()}@x", name="U")
                    await Policy.create(user=user, title="T")
                    # a query built from the model's prepared base query (select related)
                    policies = await Policy.filter(user__email=user.email).select_related("user")
                    assert policies[0].user.email == user.email
                    await user.delete()
                    await User.create(email=f"{db.dialect}-{round_}-{user.email}", name="V")
        assert await count_rows(lite) == 6
        assert await count_rows(pg) == 6
        assert await count_rows(lite, "policies") == await count_rows(pg, "policies") == 0
    finally:
        await lite.close()
        await pg.close()


async def test_sqlite_and_postgres_at_the_same_time_is_a_clear_error(pg_database: str) -> None:
    lite = await _manager("sqlite://:memory:")
    pg = await _manager(pg_database)
    try:
        async with lite.session():
            await User.create(email="lite@x", name="L")
            with pytest.raises(TransactionError, match="same model classes") as info:
                async with pg.session():
                    pass
            assert info.value.details == {"dialect": "postgres", "busy_dialect": "sqlite"}
            assert await User.all().count() == 1  # the sqlite session is unharmed
        # ... and the other way round, from another task
        inside = asyncio.Event()
        leave = asyncio.Event()

        async def hold_pg() -> None:
            async with pg.session():
                await User.create(email="pg@x", name="P")
                inside.set()
                await leave.wait()

        holder = asyncio.create_task(hold_pg())
        await inside.wait()
        with pytest.raises(TransactionError, match="one after the other"):
            async with lite.session():
                pass
        leave.set()
        await holder
        assert await count_rows(lite) == 1
        assert await count_rows(pg) == 1
    finally:
        await lite.close()
        await pg.close()


async def test_initialising_another_dialect_while_one_is_busy_is_refused(
    pg_database: str,
) -> None:
    lite = await _manager("sqlite://:memory:")
    pg = DatabaseManager(pg_database, models=EXAMPLE_MODELS)  # not initialised yet
    try:
        async with lite.session():
            with pytest.raises(TransactionError):
                async with pg.session():
                    pass
            await User.create(email="lite@x", name="L")  # still sqlite SQL
        await reset_pg_schema(pg_database)
        await pg.generate_schemas()  # now it may
        assert await count_rows(pg) == 0
        assert await count_rows(lite) == 1
    finally:
        await lite.close()
        await pg.close()


async def test_shared_classes_under_another_module_name_are_detected(
    pg_database: str,
) -> None:
    lite = await _manager("sqlite://:memory:")
    await reset_pg_schema(pg_database)
    pg = DatabaseManager(pg_database, models=["tests.integration.reexported_models"])
    try:
        async with lite.session():
            await User.create(email="before@x", name="B")
            with pytest.raises(TransactionError, match="same model classes"):
                async with pg.session():
                    pass
            # The failed initialisation left the classes on sqlite's dialect and connection.
            await User.create(email="after@x", name="A")
            users = await User.filter(email__in=["before@x", "after@x"]).order_by("email")
            assert [u.email for u in users] == ["after@x", "before@x"]
        await pg.generate_schemas()
        async with pg.session():
            await User.create(email="pg@x", name="P")
        assert await count_rows(pg) == 1
        assert await count_rows(lite) == 2
    finally:
        await lite.close()
        await pg.close()


async def test_managers_of_different_model_sets_do_not_conflict(pg_database: str) -> None:
    lite = DatabaseManager("sqlite://:memory:", models=[])  # raw SQL only
    pg = await _manager(pg_database)
    try:
        async with pg.session():
            await User.create(email="pg@x", name="P")
            async with lite.session() as session:  # shares no model: no conflict
                assert (await session.execute("SELECT 40 + 2")).scalar() == 42
    finally:
        await lite.close()
        await pg.close()

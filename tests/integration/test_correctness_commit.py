"""Issue 11, items 1, 2 and 15: commit never lies, one operation at a time on a session, and
``:name`` inside quoted text is not a parameter."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from tortoise.exceptions import IntegrityError, OperationalError
from tortoise.transactions import in_transaction

from aegis_tortoise import (
    DatabaseManager,
    DuplicateEntityError,
    TransactionError,
    TransactionManager,
    ValidationError,
)
from aegis_tortoise.examples.models import User
from tests.conftest import count_rows
from tests.integration.test_repository_support import UserRepository


def _user(i: int | str) -> dict[str, str]:
    return {"email": f"u{i}@x.io", "name": f"User {i}"}


# -- item 1: a statement that failed outside a savepoint leaves the session pending rollback --


async def test_caught_duplicate_then_block_end_raises_and_writes_nothing(
        db: DatabaseManager) -> None:
    async def unit_of_work() -> None:
        async with db.session() as session:
            repo = UserRepository(session)
            await repo.create(_user(1))
            with pytest.raises(DuplicateEntityError):
                await repo.create(_user(1))

    with pytest.raises(TransactionError, match="DuplicateEntityError") as info:
        await unit_of_work()
    assert "rolled back" in str(info.value)
    assert isinstance(info.value.__cause__, Exception)
    assert await count_rows(db) == 0


async def test_commit_after_a_caught_error_raises_then_the_session_starts_afresh(
        db: DatabaseManager) -> None:
    async with db.session() as session:
        repo = UserRepository(session)
        await repo.create(_user(1))
        with pytest.raises(DuplicateEntityError):
            await repo.create(_user(1))
        # Same on both backends: later statements are refused until the rollback.
        with pytest.raises(TransactionError, match="must be rolled back"):
            await repo.count()
        with pytest.raises(TransactionError, match="User already exists"):
            await session.commit()
        assert not session.in_transaction
        await repo.create(_user(2))  # a new transaction
    async with db.session() as session:
        assert [u.email for u in await UserRepository(session).list()] == ["u2@x.io"]


async def test_plain_tortoise_and_raw_sql_failures_count_too(db: DatabaseManager) -> None:
    async def plain() -> None:
        async with db.session():
            await User.create(**_user(1))
            with pytest.raises(IntegrityError):
                await User.create(**_user(1))

    async def raw() -> None:
        async with db.session() as session:
            await session.execute("INSERT INTO users (email, name, created_at, updated_at) "
                                  "VALUES ('a@x', 'A', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)")
            with pytest.raises(ValidationError):
                await session.execute("INSERT INTO users (email) VALUES (NULL)")

    for unit_of_work in (plain, raw):
        with pytest.raises(TransactionError):
            await unit_of_work()
    assert await count_rows(db) == 0


async def test_rollback_clears_the_failure(db: DatabaseManager) -> None:
    async with db.session() as session:
        repo = UserRepository(session)
        await repo.create(_user(1))
        with pytest.raises(DuplicateEntityError):
            await repo.create(_user(1))
        await session.rollback()
        await repo.create(_user(3))
    assert await count_rows(db) == 1


async def test_a_savepoint_keeps_the_session_usable(db: DatabaseManager) -> None:
    async with db.session() as session:
        repo = UserRepository(session)
        await repo.create(_user(1))
        with pytest.raises(DuplicateEntityError):
            async with TransactionManager(session).transaction():
                await repo.create(_user(1))
        # The documented ways that never leave the session pending.
        with pytest.raises(DuplicateEntityError):
            await repo.create_many([_user(2), _user(1)])
        user, created = await repo.get_or_create(email="u1@x.io", defaults={"name": "X"})
        assert not created
        assert user.name == "User 1"
        await repo.create(_user(4))
    async with db.session() as session:
        assert sorted(u.email for u in await UserRepository(session).list()) == [
            "u1@x.io", "u4@x.io"]


async def test_an_error_caught_inside_a_savepoint_block_rolls_the_block_back(
        db: DatabaseManager) -> None:
    async with db.session() as session:
        repo = UserRepository(session)
        await repo.create(_user(1))

        async def unit() -> None:
            async with TransactionManager(session).transaction():
                await repo.create(_user(2))
                with pytest.raises(DuplicateEntityError):
                    await repo.create(_user(1))

        with pytest.raises(TransactionError, match="savepoint block was rolled back"):
            await unit()
        await repo.create(_user(3))  # the session itself is fine

        async def plain_tortoise() -> None:
            async with in_transaction():
                with pytest.raises(IntegrityError):
                    await User.create(**_user(1))

        with pytest.raises(OperationalError, match="savepoint block was rolled back"):
            await plain_tortoise()  # Tortoise's in_transaction(): Tortoise's error

        async def own_savepoint() -> None:
            async with session.savepoint():
                with pytest.raises(DuplicateEntityError):
                    await repo.create(_user(1))

        with pytest.raises(TransactionError, match="savepoint block was rolled back"):
            await own_savepoint()
    async with db.session() as session:
        assert sorted(u.email for u in await UserRepository(session).list()) == [
            "u1@x.io", "u3@x.io"]


async def test_a_commit_answered_with_rollback_is_an_error(pg_db: DatabaseManager) -> None:
    # A failure the session cannot see (straight on the driver's connection): the server
    # answers COMMIT with ROLLBACK, which must not pass for a success.
    async def unit_of_work() -> None:
        async with pg_db.session() as session:
            await UserRepository(session).create(_user(1))
            raw = session.connection._connection  # type: ignore[attr-defined]
            with pytest.raises(asyncpg.DivisionByZeroError):
                await raw.execute("SELECT 1/0")

    with pytest.raises(TransactionError, match="answered COMMIT with ROLLBACK"):
        await unit_of_work()
    assert await count_rows(pg_db) == 0
    async with pg_db.session() as session:  # an explicit commit(), and carrying on after it
        await UserRepository(session).create(_user(2))
        with pytest.raises(asyncpg.DivisionByZeroError):
            await session.connection._connection.execute("SELECT 1/0")  # type: ignore[attr-defined]
        with pytest.raises(TransactionError, match="answered COMMIT with ROLLBACK"):
            await session.commit()
        await UserRepository(session).create(_user(3))
        await session.commit()
    assert await count_rows(pg_db) == 1


# -- item 2: two calls at once on one session ---------------------------------------------------


async def test_two_create_many_at_once_are_serialised(db: DatabaseManager) -> None:
    async with db.session() as session:
        repo = UserRepository(session)
        first, second = await asyncio.gather(
            repo.create_many([_user(f"a{i}") for i in range(50)]),
            repo.create_many([_user(f"b{i}") for i in range(50)]))
        assert len({u.id for u in first + second}) == 100
    assert await count_rows(db) == 100


async def test_a_failing_call_at_once_with_another_is_all_or_nothing(
        db: DatabaseManager) -> None:
    async with db.session() as session:
        repo = UserRepository(session)
        await repo.create(_user("dup"))
        results = await asyncio.gather(
            repo.create_many([_user(f"a{i}") for i in range(20)]),
            repo.create_many([*(_user(f"b{i}") for i in range(20)), _user("dup")]),
            User.create(**_user("plain")),
            return_exceptions=True)
        assert isinstance(results[1], DuplicateEntityError)
        assert not isinstance(results[0], BaseException)
        assert not isinstance(results[2], BaseException)
    async with db.session() as session:
        emails = {u.email for u in await UserRepository(session).list(limit=None)}
    assert emails == {"udup@x.io", "uplain@x.io", *(f"ua{i}@x.io" for i in range(20))}


async def test_savepoint_blocks_in_two_tasks_do_not_interleave(db: DatabaseManager) -> None:
    async with db.session() as session:
        repo = UserRepository(session)

        async def unit(tag: str, fail: bool) -> None:
            async with TransactionManager(session).transaction():
                await repo.create(_user(f"{tag}1"))
                await asyncio.sleep(0.01)
                await repo.create(_user(f"{tag}2"))
                if fail:
                    raise RuntimeError(tag)

        results = await asyncio.gather(unit("x", False), unit("y", True), unit("z", False),
                                       return_exceptions=True)
        assert [type(r) for r in results] == [type(None), RuntimeError, type(None)]
    async with db.session() as session:
        emails = sorted(u.email for u in await UserRepository(session).list())
    assert emails == ["ux1@x.io", "ux2@x.io", "uz1@x.io", "uz2@x.io"]


# -- item 15: :name inside quoted identifiers and string literals -----------------------------


async def test_colon_names_inside_quotes_are_not_parameters(db: DatabaseManager,
                                                            backend: str) -> None:
    async with db.session() as session:
        result = await session.execute(
            """SELECT 'x:y' AS "a:b", CAST(:v AS INTEGER) AS w, '' || ':z' AS "c"":d" """, {"v": 5})
        assert result.keys() == ("a:b", "w", 'c":d')
        assert result.one() == ("x:y", 5, ":z")
        if backend == "sqlite":
            result = await session.execute("SELECT 1 AS [a:b], 2 AS `c:d`, :v AS e", {"v": 3})
            assert result.keys() == ("a:b", "c:d", "e")
            assert result.one() == (1, 2, 3)
        else:
            result = await session.execute(r"SELECT E'it\'s :no' AS s, :v::int AS n, "
                                           "(ARRAY[1,2,3])[:v] AS a", {"v": 2})
            assert result.one() == ("it's :no", 2, 2)  # [:v] is a subscript here


async def test_the_pending_error_names_the_first_failure_once(db: DatabaseManager) -> None:
    async def unit_of_work() -> None:
        async with db.session() as session:
            await User.create(**_user(1))
            with pytest.raises(IntegrityError):
                await User.create(**_user(1))
            with pytest.raises(TransactionError):
                await UserRepository(session).count()
            with pytest.raises(TransactionError):
                await session.execute("SELECT 1")
            # Plain Tortoise calls raise Tortoise's error, as for PostgreSQL's aborted
            # transaction, on both backends.
            with pytest.raises(OperationalError, match="must be rolled back"):
                await User.filter(name="x").count()

    with pytest.raises(TransactionError) as info:
        await unit_of_work()
    assert str(info.value).count("failed earlier") == 1
    assert info.value.details["earlier_error"] == "DuplicateEntityError"
    assert "unique" in str(info.value.__cause__).lower()  # chained to the earlier failure

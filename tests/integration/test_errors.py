"""Driver errors on real databases become the library's errors, chained to their cause."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import asyncpg
import pytest
from tortoise import exceptions as tortoise_exc

from aegis_tortoise import (
    ConfigurationError,
    DatabaseConnectionError,
    DatabaseManager,
    DuplicateEntityError,
    EntityNotFoundError,
    PoolTimeoutError,
    TransactionError,
    TransactionOutcomeUnknownError,
    ValidationError,
)
from aegis_tortoise.errors import driver_error
from aegis_tortoise.examples.models import Policy, User
from tests.conftest import EXAMPLE_MODELS, count_rows

INSERT = ("INSERT INTO users (email, name, created_at, updated_at) "
          "VALUES (:email, 'N', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)")


def _assert_code(exc: BaseException, backend: str, code: str, name: str) -> None:
    root = driver_error(exc)
    if backend == "postgres":
        assert isinstance(root, asyncpg.PostgresError)
        assert root.sqlstate == code
    else:
        assert isinstance(root, sqlite3.Error)
        assert root.sqlite_errorname == name


async def test_unique_violation_in_raw_sql(db: DatabaseManager, backend: str) -> None:
    caught: list[DuplicateEntityError] = []

    async def unit_of_work() -> None:
        async with db.session() as session:
            await session.execute(INSERT, {"email": "a@x"})
            with pytest.raises(DuplicateEntityError) as info:
                await session.execute(INSERT, {"email": "a@x"})
            caught.append(info.value)

    # The error was caught inside the block: the session needs a rollback (commit never lies).
    with pytest.raises(TransactionError, match="rolled back"):
        await unit_of_work()
    err = caught[0]
    assert err.status_code == 409
    assert err.error_code == "COMMON_1005"
    assert err.__cause__ is not None
    assert err.cause is err.__cause__
    _assert_code(err, backend, "23505", "SQLITE_CONSTRAINT_UNIQUE")
    assert err.details.get("sqlstate" if backend == "postgres" else "sqlite_errorname")
    assert "email" in (err.field or "")


async def test_unique_violation_of_plain_tortoise_call_leaving_session(
    db: DatabaseManager, backend: str
) -> None:
    async def unit_of_work() -> None:
        async with db.session():
            await User.create(email="dup@x", name="A")
            await User.create(email="dup@x", name="B")

    with pytest.raises(DuplicateEntityError) as info:
        await unit_of_work()
    assert isinstance(info.value.__cause__, tortoise_exc.IntegrityError)
    _assert_code(info.value, backend, "23505", "SQLITE_CONSTRAINT_UNIQUE")
    assert await count_rows(db) == 0  # the whole session was rolled back


async def test_other_constraint_violations_are_validation_errors(
    db: DatabaseManager, backend: str
) -> None:
    async def orphan_policy() -> None:
        async with db.session() as session:
            await session.execute(
                "INSERT INTO policies (user_id, title, created_at, updated_at) "
                "VALUES (999, 't', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)")

    with pytest.raises(ValidationError) as info:
        await orphan_policy()
    assert not isinstance(info.value, DuplicateEntityError)
    _assert_code(info.value, backend, "23503", "SQLITE_CONSTRAINT_FOREIGNKEY")


async def test_tortoise_does_not_exist_becomes_entity_not_found(db: DatabaseManager) -> None:
    async def unit_of_work() -> None:
        async with db.session():
            await User.get(id=12345)

    with pytest.raises(EntityNotFoundError) as info:
        await unit_of_work()
    assert info.value.entity_type == "User"
    assert info.value.status_code == 404
    assert isinstance(info.value.__cause__, tortoise_exc.DoesNotExist)


async def test_refused_connection() -> None:
    db = DatabaseManager("postgresql://postgres@127.0.0.1:1/none", models=EXAMPLE_MODELS,
                         pool_timeout=5)
    try:
        with pytest.raises(DatabaseConnectionError) as info:
            async with db.session():
                pass
        assert not isinstance(info.value, PoolTimeoutError)
        assert info.value.error_code == "DB_2000"
        assert info.value.status_code == 503
        assert isinstance(info.value.__cause__, ConnectionRefusedError | OSError)
        assert db._active_sessions == 0
    finally:
        await db.close()


async def test_unopenable_sqlite_file_is_a_configuration_error(tmp_path: Path) -> None:
    db = DatabaseManager(f"sqlite:///{tmp_path}/missing-dir/x.db", models=EXAMPLE_MODELS)
    try:
        with pytest.raises(ConfigurationError, match="Cannot open") as info:
            async with db.session():
                pass
        assert isinstance(info.value.__cause__, sqlite3.OperationalError)
        assert db._active_sessions == 0
        assert not db._client()._lock.locked()
    finally:
        await db.close()


async def _terminate(admin: asyncpg.Connection, pid: int) -> None:
    assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
    for _ in range(500):  # until the backend is gone
        if not await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid):
            return
        await asyncio.sleep(0.01)


async def test_lost_connection_mid_session(
    pg_db: DatabaseManager, pg_admin: asyncpg.Connection
) -> None:
    async def unit_of_work() -> None:
        async with pg_db.session() as session:
            await User.create(email="before@x", name="B")
            pid = (await session.execute("SELECT pg_backend_pid()")).scalar_one()
            await _terminate(pg_admin, pid)
            await session.execute("SELECT 1")

    with pytest.raises(DatabaseConnectionError) as info:
        await unit_of_work()
    assert not isinstance(info.value, TransactionOutcomeUnknownError)
    assert info.value.__cause__ is not None
    assert await count_rows(pg_db) == 0
    pool = pg_db._client()._pool
    assert pool.get_idle_size() == pool.get_size()  # the dead connection was given back


async def test_lost_connection_on_plain_tortoise_call(
    pg_db: DatabaseManager, pg_admin: asyncpg.Connection
) -> None:
    async def unit_of_work() -> None:
        async with pg_db.session() as session:
            pid = (await session.execute("SELECT pg_backend_pid()")).scalar_one()
            await _terminate(pg_admin, pid)
            await User.create(email="lost@x", name="L")

    with pytest.raises(DatabaseConnectionError) as info:
        await unit_of_work()
    assert info.value.__cause__ is not None
    async with pg_db.session():  # the pool replaced the connection
        await Policy.all().count()


async def test_lost_connection_before_commit(
    pg_db: DatabaseManager, pg_admin: asyncpg.Connection
) -> None:
    async def unit_of_work() -> None:
        async with pg_db.session() as session:
            await User.create(email="lost@x", name="L")
            pid = (await session.execute("SELECT pg_backend_pid()")).scalar_one()
            await _terminate(pg_admin, pid)
            await session.commit()

    with pytest.raises(DatabaseConnectionError) as info:
        await unit_of_work()
    assert await count_rows(pg_db) == 0
    assert info.value.__cause__ is not None or "before COMMIT" in str(info.value)


async def test_violation_found_at_commit_is_translated_not_unknown(
    pg_db: DatabaseManager,
) -> None:
    async with pg_db.session() as session:
        await session.execute("CREATE TABLE codes (code int UNIQUE DEFERRABLE INITIALLY DEFERRED)")
    async with pg_db.session() as session:
        await session.execute("INSERT INTO codes VALUES (1), (1)")  # checked at COMMIT
        with pytest.raises(DuplicateEntityError) as info:
            await session.commit()
        assert not isinstance(info.value, TransactionOutcomeUnknownError)
        assert info.value.details["sqlstate"] == "23505"
        await session.execute("INSERT INTO codes VALUES (2)")  # a new transaction
    async with pg_db.session() as session:
        assert (await session.execute("SELECT array_agg(code) FROM codes")).scalar() == [2]


async def test_sqlite_deferred_violation_at_commit_leaves_nothing_behind(
    sqlite_db: DatabaseManager,
) -> None:
    async def unit_of_work() -> None:
        async with sqlite_db.session() as session:
            await session.execute("PRAGMA defer_foreign_keys = ON")
            await session.execute(
                "INSERT INTO policies (user_id, title, created_at, updated_at) "
                "VALUES (999, 'orphan', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)")

    with pytest.raises(ValidationError) as info:
        await unit_of_work()  # the foreign key is checked at COMMIT, which fails
    _assert_code(info.value, "sqlite", "", "SQLITE_CONSTRAINT_FOREIGNKEY")
    # sqlite keeps the transaction open after a failed COMMIT; the next session must not
    # inherit (and commit) the orphan row.
    async with sqlite_db.session():
        await User.create(email="next@x", name="N")
    assert await count_rows(sqlite_db, "policies") == 0
    assert await count_rows(sqlite_db) == 1


async def test_failed_commit_inside_the_block_means_rolled_back(db: DatabaseManager) -> None:
    async with db.session() as session:
        if db.dialect == "postgres":
            await session.execute("ALTER TABLE policies ALTER CONSTRAINT "
                                  "policies_user_id_fkey DEFERRABLE INITIALLY DEFERRED")
        else:
            await session.execute("PRAGMA defer_foreign_keys = ON")
        await session.execute(
            "INSERT INTO policies (user_id, title, created_at, updated_at) "
            "VALUES (999, 'orphan', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)")
        with pytest.raises(ValidationError):
            await session.commit()
        assert not session.in_transaction
        await User.create(email="after@x", name="A")  # a new transaction, not the failed one
    assert await count_rows(db, "policies") == 0
    assert await count_rows(db) == 1

"""Session: commit/rollback, cancellation, plain Tortoise calls, nesting, raw SQL results."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from aegis_tortoise import (
    DatabaseManager,
    MultipleResultsFoundError,
    NoResultFoundError,
    Session,
    TransactionError,
    ValidationError,
)
from aegis_tortoise.examples.models import Policy, User
from tests.conftest import count_rows

INSERT = ("INSERT INTO users (email, name, created_at, updated_at) "
          "VALUES (:email, :name, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)")


async def _emails(db: DatabaseManager) -> list[str]:
    async with db.session() as session:
        result = await session.execute("SELECT email FROM users ORDER BY email")
        return list(result.scalars().all())


def _pool_is_idle(db: DatabaseManager) -> bool:
    pool = db._client()._pool
    return bool(pool.get_idle_size() == pool.get_size())


async def _session_free(db: DatabaseManager, backend: str) -> None:
    """The connection went back: nothing leased, and (PostgreSQL) every pooled one idle."""
    assert db._active_sessions == 0
    if backend == "postgres":
        assert _pool_is_idle(db)
    else:
        assert not db._client()._lock.locked()


# -- commit and rollback ----------------------------------------------------------------------


async def test_commits_on_success(db: DatabaseManager, backend: str) -> None:
    async with db.session() as session:
        await session.execute(INSERT, {"email": "a@x", "name": "A"})
        assert session.in_transaction
    assert await _emails(db) == ["a@x"]
    await _session_free(db, backend)


async def test_rolls_back_on_exception(db: DatabaseManager, backend: str) -> None:
    class BoomError(Exception):
        pass

    async def unit_of_work() -> None:
        async with db.session() as session:
            await session.execute(INSERT, {"email": "a@x", "name": "A"})
            await User.create(email="b@x", name="B")
            raise BoomError

    with pytest.raises(BoomError):
        await unit_of_work()
    assert await _emails(db) == []
    await _session_free(db, backend)


async def test_user_errors_leave_the_session_unchanged(db: DatabaseManager) -> None:
    # An OSError or TimeoutError of the caller's own code is not a database error.
    async def unit_of_work(error: Exception) -> None:
        async with db.session() as session:
            await session.execute(INSERT, {"email": "a@x", "name": "A"})
            raise error

    for error in (FileNotFoundError(2, "no such file"), TimeoutError(), ValueError("v")):
        with pytest.raises(type(error)) as info:
            await unit_of_work(error)
        assert info.value is error
    assert await count_rows(db) == 0


async def test_cancelled_task_writes_nothing_and_returns_the_connection(
    db: DatabaseManager, backend: str
) -> None:
    inside = asyncio.Event()

    async def unit_of_work() -> None:
        async with db.session():
            await User.create(email="c@x", name="C")
            inside.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(unit_of_work())
    await inside.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await _emails(db) == []
    await _session_free(db, backend)


async def test_cancelled_mid_query_writes_nothing_and_frees_the_server(
    pg_db: DatabaseManager, pg_admin: asyncpg.Connection
) -> None:
    db = pg_db
    pids: list[int] = []

    async def unit_of_work() -> None:
        async with db.session() as session:
            await User.create(email="c@x", name="C")
            pids.append((await session.execute("SELECT pg_backend_pid()")).scalar_one())
            await session.execute("SELECT pg_sleep(30)")

    task = asyncio.create_task(unit_of_work())
    for _ in range(500):  # until the server runs the pg_sleep
        if pids and await pg_admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND state = 'active' "
                "AND query LIKE 'SELECT pg_sleep%'", pids[0]):
            break
        await asyncio.sleep(0.01)
    else:
        pytest.fail("the query never started")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await _emails(db) == []
    await _session_free(db, "postgres")
    # The server is not left running the statement or holding a transaction open.
    busy = await pg_admin.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 "
        "AND (state <> 'idle' OR query LIKE 'SELECT pg_sleep%' AND state = 'active')", pids[0])
    assert busy == 0
    async with db.session() as session:  # and the pool still works
        assert (await session.execute("SELECT 1")).scalar() == 1


async def test_plain_tortoise_calls_join_the_session(db: DatabaseManager, backend: str) -> None:
    async def unit_of_work() -> None:
        async with db.session() as session:
            user = await User.create(email="a@x", name="A")
            await Policy.create(user=user, title="P")
            assert await User.filter(email="a@x").count() == 1
            # raw SQL sees the ORM's uncommitted rows: one connection, one transaction
            assert (await session.execute("SELECT count(*) FROM policies")).scalar() == 1
            if backend == "postgres":
                async with db.session() as other:  # another connection sees nothing yet
                    assert (await other.execute("SELECT count(*) FROM users")).scalar() == 0
            raise RuntimeError("undo")

    with pytest.raises(RuntimeError):
        await unit_of_work()
    assert await count_rows(db) == 0
    assert await count_rows(db, "policies") == 0


async def test_tortoise_transactions_inside_a_session_are_savepoints(
    db: DatabaseManager,
) -> None:
    from tortoise.transactions import atomic, in_transaction

    @atomic()
    async def atomic_create(email: str) -> None:
        await User.create(email=email, name="T")

    async def failing_in_transaction() -> None:
        async with in_transaction():
            await User.create(email="undone@x", name="U")
            raise RuntimeError

    async def unit_of_work() -> None:
        async with db.session():
            async with in_transaction() as conn:
                await User.create(email="a@x", name="A", using_db=conn)
            with pytest.raises(RuntimeError):
                await failing_in_transaction()
            await atomic_create("b@x")
            user, created = await User.get_or_create(email="c@x", defaults={"name": "C"})
            assert created
            assert (await User.get_or_create(email="c@x"))[0].pk == user.pk
            await User.bulk_create([User(email=f"bulk{i}@x", name="B") for i in range(3)])
            assert await User.all().count() == 6
            raise RuntimeError("and the session rolls all of it back")

    with pytest.raises(RuntimeError, match="session rolls"):
        await asyncio.wait_for(unit_of_work(), 10)  # a deadlock would hang here
    assert await count_rows(db) == 0


async def test_session_connection_is_the_bound_client(db: DatabaseManager) -> None:
    async with db.session() as session:
        await User.create(email="a@x", name="A")
        assert await User.all().using_db(session.connection).count() == 1


async def test_client_kept_past_its_session_is_refused(db: DatabaseManager) -> None:
    async with db.session() as session:
        client = session.connection
        await User.create(email="a@x", name="A")
    async with db.session():
        with pytest.raises(TransactionError, match="closed"):
            await User.all().using_db(client).count()
        with pytest.raises(TransactionError, match="closed"):
            await User.create(email="b@x", name="B", using_db=client)
    assert await _emails(db) == ["a@x"]


async def test_commit_inside_block_starts_a_new_transaction(db: DatabaseManager) -> None:
    async def unit_of_work() -> None:
        async with db.session() as session:
            await User.create(email="kept@x", name="K")
            await session.commit()
            assert not session.in_transaction
            await User.create(email="lost@x", name="L")
            assert session.in_transaction
            raise RuntimeError("undo the second transaction only")

    with pytest.raises(RuntimeError):
        await unit_of_work()
    assert await _emails(db) == ["kept@x"]


async def test_rollback_inside_block_then_continue(db: DatabaseManager) -> None:
    async with db.session() as session:
        await session.execute(INSERT, {"email": "lost@x", "name": "L"})
        await session.rollback()
        await session.execute(INSERT, {"email": "kept@x", "name": "K"})
    assert await _emails(db) == ["kept@x"]


async def test_commit_and_rollback_without_statements_are_noops(db: DatabaseManager) -> None:
    async with db.session() as session:
        await session.commit()
        await session.rollback()
        assert not session.in_transaction


async def test_nested_session_postgres_is_independent(pg_db: DatabaseManager) -> None:
    db = pg_db
    async def unit_of_work() -> None:
        async with db.session() as outer:
            await User.create(email="outer@x", name="O")
            async with db.session() as inner:
                assert inner is not outer
                # its own connection: the outer, uncommitted row is invisible
                assert await User.filter(email="outer@x").count() == 0
                assert (await inner.execute("SELECT pg_backend_pid()")).scalar() != (
                    await outer.execute("SELECT pg_backend_pid()")).scalar()
                await User.create(email="inner@x", name="I")
            # back in the outer session: plain calls use its transaction again
            assert await User.filter(email="outer@x").count() == 1
            raise RuntimeError("undo the outer session only")

    with pytest.raises(RuntimeError):
        await unit_of_work()
    assert await _emails(db) == ["inner@x"]
    assert _pool_is_idle(db)


async def test_nested_session_sqlite_is_a_clear_error(sqlite_db: DatabaseManager) -> None:
    db = sqlite_db
    async with db.session():
        await User.create(email="outer@x", name="O")
        with pytest.raises(TransactionError, match="single connection"):
            async with db.session():
                pass
        # the outer session is untouched and still works
        assert await User.all().count() == 1
    assert await _emails(db) == ["outer@x"]
    await _session_free(db, "sqlite")


async def test_sqlite_sessions_in_other_tasks_take_turns(sqlite_db: DatabaseManager) -> None:
    db = sqlite_db

    async def add(i: int) -> None:
        async with db.session():
            await User.create(email=f"{i}@x", name=str(i))
            await asyncio.sleep(0)

    await asyncio.gather(*(add(i) for i in range(20)))
    assert await count_rows(db) == 20


async def test_session_misuse_is_a_transaction_error(db: DatabaseManager) -> None:
    session = db.session()
    with pytest.raises(TransactionError, match="not open"):
        await session.execute("SELECT 1")
    async with session:
        pass
    with pytest.raises(TransactionError, match="closed"):
        await session.execute("SELECT 1")
    with pytest.raises(TransactionError, match="closed"):
        await session.commit()
    with pytest.raises(TransactionError, match="only once"):
        async with session:
            pass


async def test_postgres_failed_statement_aborts_until_rollback(pg_db: DatabaseManager) -> None:
    async with pg_db.session() as session:
        await session.execute(INSERT, {"email": "a@x", "name": "A"})
        with pytest.raises(ValidationError):
            await session.execute("SELECT 1/0")
        with pytest.raises(TransactionError, match="aborted"):
            await session.execute("SELECT 1")
        await session.rollback()
        assert (await session.execute("SELECT count(*) FROM users")).scalar() == 0


# -- Session.execute and Result -------------------------------------------------------------------


async def _seed(session: Session) -> None:
    for i, name in enumerate(["Ann", "Bob", "Cid"]):
        await session.execute(INSERT, {"email": f"{name.lower()}@x", "name": name})
        assert i >= 0


async def test_named_parameters_and_every_result_method(db: DatabaseManager) -> None:
    async with db.session() as session:
        await _seed(session)
        query = "SELECT email, name FROM users WHERE name <> :skip ORDER BY name"

        rows = (await session.execute(query, {"skip": "Cid"})).fetchall()
        assert rows == [("ann@x", "Ann"), ("bob@x", "Bob")]
        assert rows[0][0] == "ann@x"
        assert rows[0].email == "ann@x"
        assert rows[0]._mapping["email"] == "ann@x"
        assert rows[0]._mapping == {"email": "ann@x", "name": "Ann"}
        with pytest.raises(AttributeError, match="columns: email, name"):
            _ = rows[0].missing

        result = await session.execute(query, {"skip": "Cid"})
        assert result.keys() == ("email", "name")
        assert result.fetchone() == ("ann@x", "Ann")
        assert result.fetchone() == ("bob@x", "Bob")
        assert result.fetchone() is None

        assert (await session.execute(query, {"skip": ""})).first().name == "Ann"
        assert (await session.execute(query, {"skip": "x"})).all()[2].name == "Cid"
        assert (await session.execute(query, {"skip": "x"})).scalar() == "ann@x"
        assert (await session.execute("SELECT count(*) FROM users")).scalar_one() == 3
        by_email = "SELECT name FROM users WHERE email = :e"
        assert (await session.execute(by_email, {"e": "nobody"})).scalar_one_or_none() is None
        assert (await session.execute(by_email, {"e": "bob@x"})).scalar_one_or_none() == "Bob"
        assert (await session.execute(query, {"skip": ""})).scalars().all() == [
            "ann@x", "bob@x", "cid@x"]
        assert (await session.execute(query, {"skip": ""})).scalars(1).all() == [
            "Ann", "Bob", "Cid"]
        assert (await session.execute(query, {"skip": "Bob"})).mappings().all() == [
            {"email": "ann@x", "name": "Ann"}, {"email": "cid@x", "name": "Cid"}]
        assert (await session.execute(query, {"skip": ""})).rowcount == 3

        with pytest.raises(NoResultFoundError):
            (await session.execute("SELECT 1 WHERE 1 = 0")).scalar_one()
        with pytest.raises(MultipleResultsFoundError):
            (await session.execute(query, {"skip": ""})).scalar_one()
        with pytest.raises(MultipleResultsFoundError):
            (await session.execute(query, {"skip": ""})).scalar_one_or_none()
        assert (await session.execute("SELECT 1 WHERE 1 = 0")).first() is None
        assert (await session.execute("SELECT 1 WHERE 1 = 0")).scalar() is None
        empty = await session.execute("SELECT email, name FROM users WHERE 1 = 0")
        assert (empty.keys(), empty.returns_rows, empty.fetchall()) == (
            ("email", "name"), True, [])
        dml = await session.execute("UPDATE users SET name = name WHERE 1 = 0")
        assert (dml.keys(), dml.returns_rows, dml.rowcount) == ((), False, 0)


async def test_same_parameter_twice_and_casts(db: DatabaseManager) -> None:
    async with db.session() as session:
        await _seed(session)
        result = await session.execute(
            "SELECT count(*) FROM users WHERE name = :n OR email = :n OR name = :m",
            {"n": "Ann", "m": "Bob"})
        assert result.scalar() == 2
        if db.dialect == "postgres":
            assert (await session.execute("SELECT :v::int + 1", {"v": 41})).scalar() == 42
            assert (await session.execute(
                "SELECT '10:30'::time::text, :v::text", {"v": "5"})).first() == ("10:30:00", "5")


async def test_dml_rowcount_and_returning(db: DatabaseManager) -> None:
    async with db.session() as session:
        inserted = await session.execute(
            "INSERT INTO users (email, name, created_at, updated_at) "
            "SELECT 'u' || n || '@x', 'U', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP FROM "
            + ("generate_series(1, 4) AS n" if db.dialect == "postgres" else
               "(WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 4) "
               "SELECT n FROM s)"))
        assert inserted.rowcount == 4
        assert not inserted.returns_rows
        updated = await session.execute("UPDATE users SET name = :n WHERE email <> :e",
                                        {"n": "V", "e": "u1@x"})
        assert updated.rowcount == 3
        none = await session.execute("UPDATE users SET name = 'W' WHERE 1 = 0")
        assert none.rowcount == 0
        returned = await session.execute(
            "INSERT INTO users (email, name, created_at, updated_at) VALUES "
            "(:e, 'R', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP) RETURNING id, email", {"e": "r@x"})
        row = returned.one()
        assert row.email == "r@x"
        assert isinstance(row.id, int)
        assert returned.rowcount == 1
        deleted = await session.execute("DELETE FROM users WHERE name = 'V' RETURNING email")
        assert sorted(deleted.scalars().all()) == ["u2@x", "u3@x", "u4@x"]
        assert deleted.rowcount == 3
        assert (await session.execute("DELETE FROM users WHERE 1 = 0")).rowcount == 0
        assert (await session.execute(
            "WITH gone AS (DELETE FROM users WHERE email = 'u1@x' RETURNING id) "
            "SELECT count(*) FROM gone" if db.dialect == "postgres" else
            "DELETE FROM users WHERE email = 'u1@x'")).rowcount == 1
    assert await _emails(db) == ["r@x"]


async def test_rowcount_counts_only_the_statements_own_rows(db: DatabaseManager) -> None:
    async with db.session() as session:
        users = [await User.create(email=f"{i}@x", name="U") for i in range(2)]
        for user in users:
            await Policy.create(user=user, title="cascaded on delete")
        deleted = await session.execute("DELETE FROM users WHERE email = :e", {"e": "0@x"})
        assert deleted.rowcount == 1  # not 2: the cascaded policy row is not counted
        assert (await session.execute("SELECT count(*) FROM policies")).scalar() == 1
        with_delete = await session.execute(
            "WITH doomed AS (SELECT id FROM users WHERE email = '1@x') "
            "DELETE FROM users WHERE id IN (SELECT id FROM doomed)")
        assert with_delete.rowcount == 1
        selected = await session.execute(
            "WITH n AS (SELECT 1 AS x UNION ALL SELECT 2) SELECT x FROM n")
        assert selected.rowcount == 2


async def test_positional_params_and_bad_input(db: DatabaseManager) -> None:
    async with db.session() as session:
        mark = "$1::int" if db.dialect == "postgres" else "?"
        assert (await session.execute(f"SELECT {mark}", [7])).scalar() == 7
        with pytest.raises(ValidationError, match=":missing"):
            await session.execute("SELECT :missing", {})
        with pytest.raises(ValidationError, match="SQL string"):
            await session.execute(42)  # type: ignore[arg-type]


async def test_nul_and_unicode_values_round_trip(db: DatabaseManager) -> None:
    text: Any = "naïve ☃ 'quoted' :colon"
    async with db.session() as session:
        assert (await session.execute("SELECT :t", {"t": text})).scalar() == text

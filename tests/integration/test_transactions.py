"""TransactionManager and @transactional: savepoints in a session, sessions from a manager."""

from __future__ import annotations

from typing import Any

import pytest
import tortoise.exceptions

from aegis_tortoise import (
    ConfigurationError,
    DatabaseManager,
    Session,
    TransactionManager,
    ValidationError,
    transactional,
)
from aegis_tortoise.examples.models import Policy, User
from tests.conftest import count_rows


async def _emails(db: DatabaseManager) -> list[str]:
    async with db.session() as session:
        result = await session.execute("SELECT email FROM users ORDER BY email")
        return list(result.scalars().all())


async def test_savepoint_undoes_only_its_own_work(db: DatabaseManager) -> None:
    async with db.session() as session:
        await User.create(email="before@x", name="B")
        tm = TransactionManager(session)

        async def failing_block() -> None:
            async with tm.transaction() as inner:
                assert inner is session
                user = await User.create(email="inside@x", name="I")
                await Policy.create(user=user, title="P")
                await User.create(email="before@x", name="dup")  # fails: unique email

        # A plain Tortoise call's error leaves the block as Tortoise raised it (API.md).
        with pytest.raises(tortoise.exceptions.IntegrityError):
            await failing_block()
        # The session stays usable, on PostgreSQL too (no "current transaction is aborted").
        assert await User.all().count() == 1
        await User.create(email="after@x", name="A")
        assert (await session.execute("SELECT count(*) FROM policies")).scalar() == 0
    assert await _emails(db) == ["after@x", "before@x"]


async def test_savepoint_with_raw_sql_failure(db: DatabaseManager) -> None:
    async def failing_block(session: Session) -> None:
        async with TransactionManager(session).transaction():
            await session.execute(
                "INSERT INTO users (email, name, created_at, updated_at) "
                "VALUES ('in@x', 'I', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)")
            await session.execute("SELECT 1/0" if db.dialect == "postgres" else
                                  "INSERT INTO users (email) VALUES (NULL)")

    async with db.session() as session:
        with pytest.raises(ValidationError):
            await failing_block(session)
        assert (await session.execute("SELECT count(*) FROM users")).scalar() == 0
        await User.create(email="ok@x", name="O")
    assert await _emails(db) == ["ok@x"]


async def test_savepoint_reraises_the_callers_own_error(db: DatabaseManager) -> None:
    class DomainError(Exception):
        pass

    async def failing_block(session: Session) -> None:
        async with TransactionManager(session).transaction():
            await User.create(email="undone@x", name="U")
            raise DomainError

    async with db.session() as session:
        await User.create(email="kept@x", name="K")
        with pytest.raises(DomainError):
            await failing_block(session)
    assert await _emails(db) == ["kept@x"]


async def test_successful_savepoint_is_kept_and_committed_with_the_session(
    db: DatabaseManager,
) -> None:
    async def failing_block(session: Session) -> None:
        async with TransactionManager(session).transaction():
            await User.create(email="c@x", name="C")
            raise RuntimeError

    async with db.session() as session:
        async with TransactionManager(session).transaction():
            await User.create(email="a@x", name="A")
        async with TransactionManager(session).transaction():  # nested savepoints
            await User.create(email="b@x", name="B")
            with pytest.raises(RuntimeError):
                await failing_block(session)
    assert await _emails(db) == ["a@x", "b@x"]


async def test_savepoint_is_undone_when_the_session_rolls_back(db: DatabaseManager) -> None:
    async def unit_of_work() -> None:
        async with db.session() as session:
            async with TransactionManager(session).transaction():
                await User.create(email="a@x", name="A")
            raise RuntimeError("the session fails after the savepoint")

    with pytest.raises(RuntimeError):
        await unit_of_work()
    assert await count_rows(db) == 0


async def test_savepoint_as_first_statement_begins_the_session(db: DatabaseManager) -> None:
    async with db.session() as session:
        assert not session.in_transaction
        async with TransactionManager(session).transaction():
            assert session.in_transaction
            await User.create(email="a@x", name="A")
        await session.rollback()  # the savepoint was inside the session's transaction
    assert await count_rows(db) == 0


async def test_transaction_of_a_manager_is_a_new_session(db: DatabaseManager) -> None:
    async with TransactionManager(db).transaction() as session:
        assert isinstance(session, Session)
        assert session.is_active
        await User.create(email="a@x", name="A")
    assert not session.is_active
    assert await _emails(db) == ["a@x"]

    async def failing() -> None:
        async with TransactionManager(db).transaction():
            await User.create(email="b@x", name="B")
            raise RuntimeError

    with pytest.raises(RuntimeError):
        await failing()
    assert await _emails(db) == ["a@x"]


class UserService:
    """The seed's shape: a service holding a manager, with @transactional methods."""

    def __init__(self, db_manager: DatabaseManager) -> None:
        self.db_manager = db_manager
        self.sessions: list[Session] = []

    @transactional
    async def create_two(self, first: str, second: str, session: Any = None) -> int:
        self.sessions.append(session)
        await User.create(email=first, name="1")
        await User.create(email=second, name="2")
        return int(await User.all().count())

    @transactional
    async def create_plain(self, email: str) -> None:
        await User.create(email=email, name="P")


async def test_transactional_method_commits_or_rolls_back(db: DatabaseManager) -> None:
    service = UserService(db)
    assert await service.create_two("a@x", "b@x") == 2
    assert isinstance(service.sessions[0], Session)
    assert not service.sessions[0].is_active
    # Plain Tortoise calls in the method keep Tortoise's own error (API.md).
    with pytest.raises(tortoise.exceptions.IntegrityError):
        await service.create_two("c@x", "a@x")  # the second one is a duplicate
    assert await _emails(db) == ["a@x", "b@x"]  # c@x was rolled back with it
    await service.create_plain("p@x")
    assert await count_rows(db) == 3


async def test_transactional_inside_an_open_session_uses_a_savepoint(db: DatabaseManager) -> None:
    service = UserService(db)
    async with db.session() as session:
        await User.create(email="outer@x", name="O")
        with pytest.raises(tortoise.exceptions.IntegrityError):
            await service.create_two("in@x", "outer@x", session=session)
        assert service.sessions == [session]
        assert await User.all().count() == 1  # the session is still usable
    assert await _emails(db) == ["outer@x"]


async def test_transactional_session_given_by_position(db: DatabaseManager) -> None:
    service = UserService(db)
    async with db.session() as session:
        assert await service.create_two("a@x", "b@x", session) == 2
        assert service.sessions == [session]
    await service.create_two("c@x", "d@x", None)  # None: a session of its own
    assert service.sessions[1] is not session
    assert await count_rows(db) == 4


async def test_transactional_needs_a_db_manager() -> None:
    class NoManager:
        @transactional
        async def run(self) -> None: ...

    with pytest.raises(ConfigurationError, match="db_manager"):
        await NoManager().run()
    with pytest.raises(ConfigurationError, match="Session or a DatabaseManager"):
        TransactionManager("postgresql://x")  # type: ignore[arg-type]

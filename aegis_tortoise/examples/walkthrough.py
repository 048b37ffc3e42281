"""The seed's walkthrough, step by step, on any database (``python -m aegis_tortoise demo``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from aegis_tortoise import (
    DatabaseConnectionError,
    DatabaseError,
    DatabaseManager,
    DuplicateEntityError,
    EntityNotFoundError,
    TransactionManager,
    with_db_retry,
)
from aegis_tortoise.examples.models import Policy, User
from aegis_tortoise.examples.repositories import PolicyRepository, UserRepository

__all__ = ["MODELS", "run_walkthrough"]

MODELS = ["aegis_tortoise.examples.models"]
logger = logging.getLogger("aegis_tortoise.demo")


class _Steps:
    def __init__(self, out: Callable[[str], Any]) -> None:
        self.out = out
        self.number = 0

    def step(self, title: str) -> None:
        self.number += 1
        self.out(f"\n[{self.number}] {title}")

    def say(self, text: str) -> None:
        self.out(f"    {text}")


async def run_walkthrough(database_url: str = "sqlite+aiosqlite:///:memory:",
                          out: Callable[[str], Any] = print) -> None:
    """Run every example of the seed against ``database_url`` and print what happens.

    The example tables (``users``, ``policies``) are created if missing and emptied first.
    """
    s = _Steps(out)
    db = DatabaseManager(database_url=database_url, models=MODELS, pool_size=20,
                         max_overflow=10, pool_timeout=30)
    s.step(f"DatabaseManager on {db.url.masked()}")
    s.say(repr(db))
    try:
        await db.generate_schemas()
        async with db.session() as session:
            await session.execute("DELETE FROM policies")
            await session.execute("DELETE FROM users")
        await _sessions(db, s)
        await _crud(db, s)
        await _transactions(db, s)
        await _retry(db, s)
        await _queries(db, s)
        await _errors(db, s)
    finally:
        await db.close()
        s.step("db.close(): every connection released")


async def _sessions(db: DatabaseManager, s: _Steps) -> None:
    s.step("Session: raw SQL with :name parameters, committed when the block ends")
    async with db.session() as session:
        await session.execute(
            "INSERT INTO users (email, name, created_at, updated_at) "
            "VALUES (:email, :name, :now, :now)",
            {"email": "raw@example.com", "name": "Raw SQL", "now": datetime.now(UTC)})
        result = await session.execute("SELECT * FROM users")
        users = result.fetchall()
        emails = [u.email for u in users]
        s.say(f"users -> {len(users)} row(s): {emails}")
    async with db.session() as session:
        result = await session.execute("SELECT count(*) FROM users WHERE email = :email",
                                       {"email": "raw@example.com"})
        s.say(f"after the block the row is committed: count = {result.scalar_one()}")


async def _crud(db: DatabaseManager, s: _Steps) -> None:
    s.step("BaseRepository: create, get, update, list, filter, count, soft/hard delete")
    async with db.session() as session:
        user_repo = UserRepository(session)
        created_user = await user_repo.create(User(email="user@example.com", name="John Doe"))
        s.say(f"create -> {created_user!r} ({created_user.email})")
        user = await user_repo.get_by_id(created_user.id)
        assert user is not None  # noqa: S101 - the demo just created it
        by_email = await user_repo.get_by_email("user@example.com")
        s.say(f"get_by_id -> {user.name}; get_by_email -> id {by_email.id if by_email else None}")
        updated_user = await user_repo.update(user.id, name="Jane Doe")
        s.say(f"update(name='Jane Doe') -> {updated_user.name if updated_user else None}")
        users = await user_repo.list(skip=0, limit=10)
        s.say(f"list(skip=0, limit=10) -> {[u.email for u in users]}")
        active_users = await user_repo.get_active_users()
        s.say(f"get_active_users -> {len(active_users)} user(s)")
        s.say(f"count -> {await user_repo.count()}")
        await user_repo.soft_delete(user.id)
        s.say(f"soft_delete -> active users now {len(await user_repo.get_active_users())}, "
              f"all users {await user_repo.count()}")
        await user_repo.delete(user.id)
        s.say(f"delete -> get_by_id returns {await user_repo.get_by_id(user.id)}")


async def _transactions(db: DatabaseManager, s: _Steps) -> None:
    s.step("TransactionManager: a user and a policy, all or nothing")
    async with db.session() as session:
        transaction_manager = TransactionManager(session)
        async with transaction_manager.transaction():
            user_repo = UserRepository(session)
            policy_repo = PolicyRepository(session)
            user = await user_repo.create(User(email="tx@example.com", name="Tx User"))
            policy = await policy_repo.create(Policy(user_id=user.id, title="New Policy"))
        s.say(f"committed: {user!r} with {policy!r} '{policy.title}'")
        try:
            async with transaction_manager.transaction():
                other = await user_repo.create(User(email="tx2@example.com", name="Tx 2"))
                await policy_repo.create(Policy(user_id=other.id, title="Second"))
                raise RuntimeError("something failed after two writes")  # noqa: TRY301
        except RuntimeError as exc:
            s.say(f"failed with '{exc}': rolled back, "
                  f"tx2 exists = {await user_repo.get_by_email('tx2@example.com') is not None}")
        s.say(f"the session is still usable: {await user_repo.count()} users")


async def _retry(db: DatabaseManager, s: _Steps) -> None:
    s.step("with_db_retry: a transient failure on attempt 1, success on attempt 2")
    attempts: list[int] = []

    @with_db_retry(max_attempts=3, backoff_factor=0.05)
    async def create_user_with_retry(user_data: dict[str, Any]) -> User:
        async with db.session() as session:
            attempts.append(len(attempts) + 1)
            user_repo = UserRepository(session)
            user = await user_repo.create(User(**user_data))
            if len(attempts) == 1:  # simulate a connection lost before COMMIT
                raise DatabaseConnectionError("simulated: connection lost")
            return user

    try:
        user = await create_user_with_retry({"email": "retry@example.com", "name": "Retry"})
        s.say(f"created {user.email} after {len(attempts)} attempts; the failed attempt "
              "was rolled back, so the row exists once")
    except DatabaseConnectionError:
        s.say("데이터베이스 연결에 실패했습니다 (the database connection failed)")


async def _queries(db: DatabaseManager, s: _Steps) -> None:
    s.step("Complex queries, batches and relations")
    async with db.session() as session:
        user_repo = UserRepository(session)
        batch = await user_repo.create_users_batch(
            [{"email": f"batch{i}@example.com", "name": f"Batch {i}"} for i in range(5)])
        s.say(f"create_users_batch -> ids {[u.id for u in batch]}")
        changed = await user_repo.update_users_batch(
            [{"id": u.id, "name": f"Renamed {u.id}"} for u in batch[:2]])
        s.say(f"update_users_batch -> {changed} updated")
        await PolicyRepository(session).create_many(
            [Policy(user_id=batch[0].id, title=f"P{i}") for i in range(3)])
        with_policies = await user_repo.get_users_with_policies(limit=10)
        s.say("get_users_with_policies -> "
              + ", ".join(f"{u.email}: {u.policy_count}" for u in with_policies))  # type: ignore[attr-defined]
        found = await user_repo.search_users(
            "batch", {"active_only": True,
                      "created_after": datetime.now(UTC) - timedelta(days=1)})
        s.say(f"search_users('batch', active_only) -> {len(found)} users")
        user = await user_repo.get_user_with_policies(batch[0].id)
        titles = [p.title for p in user.policies] if user else []
        s.say(f"get_user_with_policies -> {titles} (prefetch_related, no N+1)")
        page = await user_repo.paginate(page=1, page_size=3, order_by="id")
        s.say(f"paginate(page=1, page_size=3) -> {len(page.items)} of {page.total}, "
              f"{page.total_pages} pages")


async def _errors(db: DatabaseManager, s: _Steps) -> None:
    s.step("Error handling")
    async with db.session() as session:
        user_repo = UserRepository(session)
        try:
            user = await user_repo.get_by_id(999_999)
            if not user:
                raise EntityNotFoundError("User", 999_999)  # noqa: TRY301 - the seed's pattern
        except EntityNotFoundError as exc:
            s.say(f"EntityNotFoundError: {exc} -> HTTP {exc.status_code} {exc.error_code}")
        try:
            async with TransactionManager(session).transaction():
                await user_repo.create(User(email="tx@example.com", name="Duplicate"))
        except DuplicateEntityError as exc:
            s.say(f"DuplicateEntityError: {exc} -> HTTP {exc.status_code} {exc.error_code}")
        except DatabaseError as exc:  # pragma: no cover - shown for the seed's pattern
            s.say(f"Database error: {exc}")


def main(database_url: str = "sqlite+aiosqlite:///:memory:") -> None:
    """Run the walkthrough in a new event loop."""
    asyncio.run(run_walkthrough(database_url))

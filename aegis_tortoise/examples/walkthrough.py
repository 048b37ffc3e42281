"""The seed's walkthrough, step by step, on any database (``python -m aegis_tortoise demo``).

It never changes or deletes data it did not create. On PostgreSQL it works in a schema of
its own (``aegis_demo``), which it creates, marks with a comment and drops at the end; a
schema of that name that it did not create is refused. On a sqlite file it refuses a
database holding tables it did not create, unless ``allow_existing_data=True`` (the
command line's ``--allow-existing-data``), which lets it empty ``users`` and ``policies``.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from aegis_tortoise import (
    ConfigurationError,
    DatabaseConnectionError,
    DatabaseError,
    DatabaseManager,
    DuplicateEntityError,
    EntityNotFoundError,
    TransactionManager,
    with_db_retry,
)
from aegis_tortoise.config import parse_database_url
from aegis_tortoise.examples.models import Policy, User
from aegis_tortoise.examples.repositories import PolicyRepository, UserRepository

__all__ = ["DEMO_SCHEMA", "MODELS", "run_walkthrough"]

MODELS = ["aegis_tortoise.examples.models"]
DEMO_SCHEMA = "aegis_demo"
"""The PostgreSQL schema the demo creates, works in and drops."""
_MARK = "created by the aegis-tortoise demo; dropped when it ends"
_MARK_TABLE = "aegis_tortoise_demo"  # in a sqlite file: the demo made this database
_TABLES = frozenset({"users", "policies", _MARK_TABLE})
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
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
                          out: Callable[[str], Any] = print, *, schema: str = DEMO_SCHEMA,
                          allow_existing_data: bool = False) -> None:
    """Run every example of the seed against ``database_url`` and print what happens.

    Args:
        database_url: The database; in-memory sqlite by default.
        out: Where each line goes.
        schema: PostgreSQL: the schema of the demo's own, created here and dropped at the
            end; refused if it exists and the demo did not create it.
        allow_existing_data: sqlite file: run even though it holds tables the demo did not
            create, emptying ``users`` and ``policies``.

    Raises:
        ConfigurationError: the database holds data the demo did not create.
    """
    s = _Steps(out)
    options: dict[str, Any] = {}
    url = parse_database_url(database_url)
    if url.dialect == "postgres":
        await _claim_schema(database_url, schema)
        options["server_settings"] = {"search_path": schema}
    elif not url.is_memory:
        await _claim_sqlite_file(database_url, allow_existing_data=allow_existing_data)
    db = DatabaseManager(database_url=database_url, models=MODELS, pool_size=20,
                         max_overflow=10, pool_timeout=30, **options)
    s.step(f"DatabaseManager on {db.url.masked()}")
    s.say(repr(db) + (f", in schema {schema!r} of its own" if options else ""))
    try:
        await db.generate_schemas()
        if not options:  # sqlite: tables the demo made (or was allowed to use)
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
        if options:
            await _drop_schema(database_url, schema)
            s.say(f"schema {schema!r} dropped: nothing of the demo is left")


def _admin(database_url: str) -> DatabaseManager:
    """A manager for the demo's own bookkeeping: one connection, no settings read."""
    return DatabaseManager(database_url, models=[], pool_size=1, max_overflow=0,
                           pool_timeout=30, pool_recycle=3600, echo=False)


def _refuse(message: str, **details: Any) -> ConfigurationError:
    return ConfigurationError(message, details=details)


async def _claim_schema(database_url: str, schema: str) -> None:
    """Create the demo's schema; refuse one that exists and was not made by the demo."""
    if not _SCHEMA_NAME.fullmatch(schema):
        raise _refuse(f"Invalid schema name {schema!r}: lower-case letters, digits and _",
                      schema=schema)
    admin = _admin(database_url)
    try:
        async with admin.session() as session:
            result = await session.execute(
                "SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace "
                "WHERE nspname = :schema", {"schema": schema})
            row = result.fetchone()
            if row is not None and row[0] != _MARK:
                raise _refuse(
                    f"Schema {schema!r} exists and was not created by the demo; the demo "
                    "never touches data it did not create: choose another with --schema",
                    schema=schema)
            if row is not None:  # left by an earlier demo run that was killed
                await session.execute(f'DROP SCHEMA "{schema}" CASCADE')
            await session.execute(f'CREATE SCHEMA "{schema}"')
            await session.execute(f"COMMENT ON SCHEMA \"{schema}\" IS '{_MARK}'")
    finally:
        await admin.close()


async def _drop_schema(database_url: str, schema: str) -> None:
    admin = _admin(database_url)
    try:
        async with admin.session() as session:
            await session.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await admin.close()


async def _claim_sqlite_file(database_url: str, *, allow_existing_data: bool) -> None:
    """Refuse a sqlite file holding tables the demo did not create; mark it as the demo's."""
    admin = _admin(database_url)
    try:
        async with admin.session() as session:
            result = await session.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'")
            tables = set(result.scalars().all())
            foreign = sorted(tables - _TABLES) if _MARK_TABLE in tables else sorted(tables)
            if foreign and not allow_existing_data:
                shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
                raise _refuse(
                    f"The database holds tables the demo did not create ({shown}); the demo "
                    "empties users and policies, so it runs only on a new sqlite file, one "
                    "it made, or with --allow-existing-data",
                    tables=len(foreign))
            await session.execute(f'CREATE TABLE IF NOT EXISTS "{_MARK_TABLE}" (note TEXT)')
    finally:
        await admin.close()


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

"""Keyset pages and ``iterate`` against the defects of issue #18 (items 8, 9, 14 and 17).

Item 7 (timestamps under ``use_tz=False`` and a process time zone other than UTC) is the
configuration matrix of ``tests/differential/test_keyset_matrix.py``, which needs processes
of their own.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import gc
import hashlib
import hmac
import json
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import pytest

from aegis_tortoise import (
    BaseRepository,
    ConfigurationError,
    DatabaseManager,
    DatabaseSettings,
    ValidationError,
    _cursor,
)
from aegis_tortoise.examples.models import User
from tests.conftest import fresh_manager
from tests.differential.models import MODELS, Item, Tag
from tests.integration.test_repository_support import UserRepository

SECRET = "a-test-secret-of-32-bytes-000000"


@pytest.fixture
async def items_db(db_url: str, backend: str) -> AsyncIterator[DatabaseManager]:
    """A manager with the differential models (every field type)."""
    async for manager in fresh_manager(db_url, backend, models=MODELS,
                                       cursor_secret=SECRET):
        yield manager


async def _users(db: DatabaseManager, n: int) -> list[int]:
    async with db.session() as session:
        users = await UserRepository(session).create_many(
            [{"email": f"u{i:03d}@x.io", "name": f"n{i % 3}"} for i in range(n)])
    return [u.id for u in users]


async def _walk(repo: BaseRepository[Any], bound: int, **options: Any) -> list[Any]:
    """The ids of a full paginate_keyset walk; fails when it does not end."""
    ids: list[Any] = []
    after = None
    for _ in range(bound):
        page = await repo.paginate_keyset(after=after, **options)
        ids += [item.pk for item in page.items]
        if not page.has_next:
            return ids
        after = page.next_cursor
    pytest.fail(f"the walk did not end after {bound} pages: {ids[:40]}")


# -- item 8: iterate sees the rows that matched when it began ------------------------------------


@pytest.mark.parametrize("filters", [None, {"name": "n1"}, {"email__icontains": "U0"},
                                     {"name__in": ["n1", "n2"]}])
@pytest.mark.parametrize("order_by", ["id", "-email"])
async def test_iterate_skips_rows_the_loop_body_inserts(db: DatabaseManager,
                                                        filters: Any, order_by: str) -> None:
    await _users(db, 40)
    async with db.session() as session:
        repo = UserRepository(session)
        expected = await repo.list(filters=filters, order_by=[order_by, "id"], limit=None)
        seen: list[int] = []
        async with aclosing(repo.iterate(filters, order_by=order_by, batch_size=6)) as users:
            async for user in users:
                seen.append(user.id)
                # A matching row that sorts after every other one, in either direction.
                await repo.create({"email": f"{'u' if order_by == 'id' else 'a'}0-new"
                                            f"{len(seen)}@x.io", "name": "n1"})
                assert len(seen) <= len(expected), "iterate visits the rows it inserts"
        assert seen == [u.id for u in expected]


# -- item 9: leaving iterate early never breaks the session ---------------------------------------


async def test_break_then_write_commit_write_keeps_both_writes(db: DatabaseManager) -> None:
    await _users(db, 30)
    async with db.session() as session:
        repo = UserRepository(session)
        async for _user in repo.iterate(batch_size=5):
            break
        await repo.create({"email": "first@x.io", "name": "w"})
        await session.commit()
        await repo.create({"email": "second@x.io", "name": "w"})
        assert await _leftovers(session) == 0  # the cursor is closed, the table dropped
    async with db.session() as session:
        assert await UserRepository(session).count({"name": "w"}) == 2


async def _leftovers(session: Any) -> int:
    """Open cursors (PostgreSQL) or temporary tables (sqlite) of the session."""
    sql = ("SELECT count(*) FROM pg_cursors WHERE name <> ''" if session.dialect == "postgres"
           else "SELECT count(*) FROM sqlite_temp_master WHERE type = 'table'")
    return int((await session.execute(sql)).scalar())


async def test_a_late_finalizer_does_not_break_the_session(db: DatabaseManager) -> None:
    await _users(db, 30)
    errors: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        async with db.session() as session:
            repo = UserRepository(session)
            users = repo.iterate(batch_size=5)
            await users.__anext__()  # a cursor (or a snapshot table) is open now
            await repo.create({"email": "a@x.io", "name": "w"})
            await session.commit()
            del users  # dropped after the commit: asyncio's finalizer closes it, as a task
            gc.collect()
            await repo.create({"email": "b@x.io", "name": "w"})
            await session.commit()
            await repo.create({"email": "c@x.io", "name": "w"})
            kept = repo.iterate(batch_size=5)
            await kept.__anext__()
        del kept  # finalized after the session ended: nothing left to do, no error
        gc.collect()
        for _ in range(5):
            await asyncio.sleep(0)
        async with db.session() as session:
            assert await UserRepository(session).count({"name": "w"}) == 3
            # The walk finalized after its session ended left nothing behind either (on
            # sqlite the next walk drops its table).
            assert len([u async for u in UserRepository(session).iterate()]) == 33
            assert await _leftovers(session) == 0
    finally:
        loop.set_exception_handler(None)
    assert errors == []


# -- item 14: the cursor secret --------------------------------------------------------------------


def test_the_secret_is_a_setting_of_at_least_16_bytes(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_CURSOR_SECRET", raising=False)
    for bad in ["", "short", "x" * 15]:
        with pytest.raises(ConfigurationError, match="DATABASE_CURSOR_SECRET") as info:
            DatabaseSettings(database_cursor_secret=bad)
        assert bad not in str(info.value) or not bad
    env = tmp_path / ".env"
    env.write_text(f"DATABASE_CURSOR_SECRET={SECRET}\n")
    settings = DatabaseSettings(_env_file=env)  # type: ignore[call-arg]
    assert settings.database_cursor_secret is not None
    assert settings.database_cursor_secret.get_secret_value() == SECRET
    assert SECRET not in repr(settings)
    assert SECRET not in settings.model_dump_json()
    with pytest.raises(ConfigurationError, match="cursor_secret must be at least 16"):
        DatabaseManager("sqlite://:memory:", models=[], cursor_secret="x" * 8)
    monkeypatch.setenv("DATABASE_CURSOR_SECRET", "too-short")  # set after import: read too
    with pytest.raises(ConfigurationError, match="DATABASE_CURSOR_SECRET"):
        DatabaseSettings()


async def test_cursors_cover_the_secret_model_ordering_and_filters(
        db_url: str, backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_CURSOR_SECRET", raising=False)
    async for db in fresh_manager(db_url, backend, cursor_secret=SECRET):
        await _users(db, 20)
        async with db.session() as session:
            repo = UserRepository(session)
            filters = {"name__in": ["n1", "n2"]}
            page = await repo.paginate_keyset(limit=3, order_by="email", filters=filters)
            cursor = page.next_cursor
            assert cursor is not None
            # The same filters (another dict) accept it; other filters do not.
            again = await repo.paginate_keyset(limit=3, order_by="email",
                                               filters={"name__in": ["n1", "n2"]}, after=cursor)
            assert again.items[0].email > page.items[-1].email
            for other in [None, {"name__in": ["n1"]}, {"name": "n1"}]:
                with pytest.raises(ValidationError, match="filters"):
                    await repo.paginate_keyset(limit=3, order_by="email", filters=other,
                                               after=cursor)
            with pytest.raises(ValidationError):
                await repo.paginate_keyset(limit=3, order_by="email", filters=filters,
                                           after=cursor, include_deleted=True)
            # Signed, not encrypted: the last row's ordering values are readable.
            head = cursor.split(".")[0]
            payload = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
            assert payload[0] == page.items[-1].email
            # A cursor forged with an empty key (accepted before) is refused.
            forged_payload = json.dumps(["n", 1]).encode()
            mac = hmac.new(b"", forged_payload, hashlib.sha256).digest()[:16]
            forged = (base64.urlsafe_b64encode(forged_payload).rstrip(b"=").decode() + "."
                      + base64.urlsafe_b64encode(mac).rstrip(b"=").decode())
            with pytest.raises(ValidationError):
                await repo.paginate_keyset(limit=3, order_by="email", after=forged)

            class EmptyKey(UserRepository):
                cursor_secret = ""

            with pytest.raises(ConfigurationError, match="cursor_secret"):
                await EmptyKey(session).paginate_keyset(limit=3)
        # Another instance of the service, with the same secret from the environment (set
        # after import), reads the cursor; one with another secret does not.
        monkeypatch.setenv("DATABASE_CURSOR_SECRET", SECRET)
        other = DatabaseManager(db_url, models=["aegis_tortoise.examples.models"], pool_size=2)
        try:
            if backend == "sqlite":
                await other.generate_schemas()  # another in-memory database: empty
            async with other.session() as session:
                page = await UserRepository(session).paginate_keyset(
                    limit=3, order_by="email", filters=filters, after=cursor)
                if backend == "postgres":
                    assert page.items[0].email == again.items[0].email
        finally:
            await other.close()
        monkeypatch.setenv("DATABASE_CURSOR_SECRET", "another-secret-0123456789")
        stranger = DatabaseManager(db_url, models=["aegis_tortoise.examples.models"],
                                   pool_size=2)
        try:
            if backend == "sqlite":
                await stranger.generate_schemas()
            async with stranger.session() as session:
                with pytest.raises(ValidationError):
                    await UserRepository(session).paginate_keyset(
                        limit=3, order_by="email", filters=filters, after=cursor)
        finally:
            await stranger.close()


async def test_without_a_secret_a_process_key_and_one_warning(
        sqlite_db: DatabaseManager, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv("DATABASE_CURSOR_SECRET", raising=False)
    monkeypatch.delenv("AEGIS_CURSOR_SECRET", raising=False)
    monkeypatch.setattr(_cursor, "_warned", set())
    db = DatabaseManager("sqlite://:memory:", models=["aegis_tortoise.examples.models"])
    try:
        await db.generate_schemas()
        await _users(db, 5)
        with caplog.at_level(logging.WARNING, logger="aegis_tortoise.keyset"):
            async with db.session() as session:
                repo = UserRepository(session)
                page = await repo.paginate_keyset(limit=2)
                await repo.paginate_keyset(limit=2, after=page.next_cursor)
        warnings = [r for r in caplog.records if "DATABASE_CURSOR_SECRET" in r.getMessage()]
        assert len(warnings) == 1
        assert "restart" in warnings[0].getMessage()
        # The deprecated variable still works, read when needed (not at import).
        legacy = "legacy-secret-0123456789"
        monkeypatch.setenv("AEGIS_CURSOR_SECRET", legacy)
        fresh = DatabaseManager("sqlite://:memory:", models=["aegis_tortoise.examples.models"])
        same = DatabaseManager("sqlite://:memory:", models=["aegis_tortoise.examples.models"],
                               cursor_secret=legacy)
        cursors = []
        for manager in (fresh, same):
            await manager.generate_schemas()
            await _users(manager, 5)
            async with manager.session() as session:
                cursors.append((await UserRepository(session).paginate_keyset(
                    limit=2)).next_cursor)
            await manager.close()
        assert cursors[0] == cursors[1]
    finally:
        await db.close()


# -- item 17: every orderable field, NULLs included --------------------------------------------


async def _seed_items(db: DatabaseManager) -> None:
    async with db.session() as session:
        for i in range(23):
            await Item.create(
                using_db=session.connection, num=i % 4, name=f"i{i % 5}",
                span=None if i % 6 == 0 else dt.timedelta(seconds=i % 4, microseconds=i % 2),
                blob=None if i % 5 == 0 else bytes([i % 3, 255, i % 2]),
                note=None if i % 3 == 0 else f"n{i % 4}",
                moment=None if i % 4 == 0 else dt.datetime(2024, 1, 1 + i % 3, tzinfo=dt.UTC))


@pytest.mark.parametrize("order_by", ["span", "-span", "blob", "-blob", "note", "-note",
                                      "moment", ["-moment", "note"], ["note", "-span"]])
async def test_every_field_orders_pages_and_iterate(items_db: DatabaseManager,
                                                    order_by: Any) -> None:
    await _seed_items(items_db)
    fields = [order_by] if isinstance(order_by, str) else list(order_by)
    async with items_db.session() as session:
        repo = BaseRepository(session, Item)
        expected = await Item.all().using_db(session.connection).order_by(
            *fields, "id").values_list("id", flat=True)
        assert await _walk(repo, 12, limit=4, order_by=order_by) == expected
        got = [item.id async for item in repo.iterate(order_by=order_by, batch_size=5)]
        assert got == expected
        # The QuerySet path (a filter the cached SQL does not hold) too.
        expected = await Item.filter(name__icontains="I1").using_db(
            session.connection).order_by(*fields, "id").values_list("id", flat=True)
        assert await _walk(repo, 12, limit=2, order_by=order_by,
                           filters={"name__icontains": "I1"}) == expected
        got = [item.id async for item in repo.iterate(filters={"name__icontains": "I1"},
                                                      order_by=order_by, batch_size=2)]
        assert got == expected


async def test_orderings_that_cannot_be_walked_name_the_caller(items_db: DatabaseManager
                                                                ) -> None:
    async with items_db.session() as session:
        repo = BaseRepository(session, Item)
        with pytest.raises(ValidationError, match="paginate_keyset cannot order Item by 'data'"):
            await repo.paginate_keyset(order_by="data")
        with pytest.raises(ValidationError, match="iterate cannot order Item by 'owner__name'"):
            [item async for item in repo.iterate(order_by="owner__name")]
        assert await repo.count() == 0  # the session goes on


async def test_readonly_sqlite_iterate_walks_by_keyset(sqlite_db: DatabaseManager) -> None:
    ids = await _users(sqlite_db, 17)
    async with sqlite_db.session(readonly=True) as session:
        repo = UserRepository(session)
        got = [u.id async for u in repo.iterate(order_by="-name", batch_size=4)]
        expected = await User.all().using_db(session.connection).order_by(
            "-name", "id").values_list("id", flat=True)
        assert got == expected
        assert sorted(got) == ids


async def test_uuid_keys_walk_too(items_db: DatabaseManager) -> None:
    async with items_db.session() as session:
        item = await Item.create(using_db=session.connection, num=1, name="k")
        for i in range(11):
            await Tag.create(using_db=session.connection, label=f"t{i % 4}-{i}", item=item,
                             weight=float(i % 3))
    async with items_db.session() as session:
        for model, order_by in ((Tag, "-weight"), (Tag, "label")):
            repo = BaseRepository(session, model)
            pk = model._meta.pk_attr
            expected = await model.all().using_db(session.connection).order_by(
                order_by, pk).values_list(pk, flat=True)
            assert await _walk(repo, 10, limit=3, order_by=order_by) == expected
            got = [row.pk async for row in repo.iterate(order_by=order_by, batch_size=4)]
            assert got == expected

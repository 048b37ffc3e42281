"""update_many beyond the plain cases: rows that depend on each other within one call (one
statement up to 10,000 rows on PostgreSQL, as Tortoise's bulk_update), a cancellation while
the statement runs, a stored value that cannot become an instance."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from aegis_tortoise import BaseRepository, DatabaseManager, ValidationError
from aegis_tortoise.examples.models import User
from tests.conftest import PgServer, fresh_manager
from tests.differential.models import MODELS as DIFF_MODELS
from tests.differential.models import Item
from tests.integration.node_models import MODELS as NODE_MODELS
from tests.integration.node_models import Node
from tests.integration.test_repository_support import UserRepository

N = 2_501


class NodeRepository(BaseRepository[Node]):
    """Nodes."""


class ItemRepository(BaseRepository[Item]):
    """Items (an IntEnumField among the columns)."""


@pytest.fixture
async def nodes(pg_database: str) -> AsyncIterator[DatabaseManager]:
    async for db in fresh_manager(pg_database, "postgres", NODE_MODELS):
        async with db.session() as session:
            await NodeRepository(session).create_many(
                [{"id": 1, "code": "a"}] + [{"id": i + 1, "code": f"n{i}"} for i in range(1, N)])
            await Node.filter(id=N).update(parent_id="a")  # the last node's parent is "a"
        yield db


def _node_rows() -> list[dict[str, object]]:
    # Rename "a" to "a2" (the first row) and point the last node at "a2" (the last row).
    return [{"id": 1, "code": "a2", "parent_id": None}] + [
        {"id": i + 1, "code": f"n{i}", "parent_id": "a2" if i == N - 1 else None}
        for i in range(1, N)]


async def test_rows_that_depend_on_each_other(nodes: DatabaseManager) -> None:
    """PostgreSQL checks the foreign key (NO ACTION, as Tortoise creates it) at the end of
    each statement: as one statement, nothing references "a" by then, as with Tortoise's
    bulk_update; split, the first statement would rename "a" while node 2,501 still
    references it (23503)."""
    rows = _node_rows()
    async with nodes.session() as session:  # the reference: plain Tortoise 1.1.9
        objs = await Node.all().order_by("id")
        for obj, row in zip(objs, rows, strict=True):
            obj.code = row["code"]  # type: ignore[assignment]
            obj.parent_id = row["parent_id"]  # type: ignore[attr-defined]
        await Node.bulk_update(objs, fields=["code", "parent_id"])
        assert (await Node.get(id=N)).parent_id == "a2"  # type: ignore[attr-defined]
        await session.rollback()
    async with nodes.session() as session:
        updated = await NodeRepository(session).update_many(rows)
        assert len(updated) == N
        assert updated[-1].parent_id == "a2"  # type: ignore[attr-defined]
        assert (await Node.get(id=N)).parent_id == "a2"  # type: ignore[attr-defined]


async def _slow_trigger(session: Any, backend: str, seconds: float) -> None:
    """Updating a user to name 'slow' takes ``seconds`` (a BEFORE UPDATE row trigger)."""
    if backend == "postgres":
        await session.execute(f"""
            CREATE FUNCTION slow_update() RETURNS trigger AS $$
            BEGIN
                IF NEW.name = 'slow' THEN PERFORM pg_sleep({seconds}); END IF;
                RETURN NEW;
            END $$ LANGUAGE plpgsql""")
        await session.execute("CREATE TRIGGER slow_update BEFORE UPDATE ON users "
                              "FOR EACH ROW EXECUTE FUNCTION slow_update()")
    else:
        raw = session.connection._connection
        await raw.create_function("slow_sleep", 1, lambda s: time.sleep(s) or 0)
        await session.execute(
            "CREATE TRIGGER slow_update BEFORE UPDATE ON users FOR EACH ROW "
            f"WHEN NEW.name = 'slow' BEGIN SELECT slow_sleep({seconds}); END")


async def test_cancelled_update_many_leaves_nothing_running_and_rolls_back(
        db: DatabaseManager, backend: str, pg_server: PgServer,
        caplog: pytest.LogCaptureFixture) -> None:
    async with db.session() as session:
        users = await UserRepository(session).create_many(
            [{"email": f"u{i}@x.io", "name": f"N{i}"} for i in range(300)])
        await _slow_trigger(session, backend, 3)
    ids = [u.id for u in users]
    rows = [{"id": pk, "name": "slow" if i == 150 else f"c{i}"} for i, pk in enumerate(ids)]
    admin = None
    if backend == "postgres":
        admin = await asyncpg.connect(pg_server.admin_url.replace("postgresql+asyncpg://",
                                                                  "postgresql://"))
    try:
        async with db.session() as session:
            repo = UserRepository(session)
            pid = None
            if backend == "postgres":
                pid = (await session.execute("SELECT pg_backend_pid()")).scalar_one()
            await repo.update(ids[0], name="before")  # the transaction holds a write
            task = asyncio.create_task(repo.update_many(rows))
            await asyncio.sleep(1.0)  # the statement (with the slow row) is on the server
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            if admin is not None:
                active = await admin.fetch(
                    "SELECT query FROM pg_stat_activity WHERE pid = $1 AND state = 'active'",
                    pid)
                assert [r["query"] for r in active if "UPDATE" in r["query"]] == []
            # The savepoint was rolled back; the session goes on.
            names = dict(await User.filter(id__in=ids[:3]).values_list("id", "name"))
            assert names == {ids[0]: "before", ids[1]: "N1", ids[2]: "N2"}
            assert await repo.count({"name__startswith": "c"}) == 0
        async with db.session() as session:
            assert await UserRepository(session).count({"name__startswith": "c"}) == 0
            assert (await UserRepository(session).get(ids[0])).name == "before"
    finally:
        if admin is not None:
            await admin.close()
    gc.collect()
    assert "never retrieved" not in caplog.text


async def test_a_stored_value_that_cannot_become_an_instance(db_url: str,
                                                             backend: str) -> None:
    """A row whose stored IntEnum value is out of the enum: the error Tortoise's conversion
    raises, and nothing of the call is written."""
    async for db in fresh_manager(db_url, backend, DIFF_MODELS):
        async with db.session() as session:
            repo = ItemRepository(session)
            items = await repo.create_many(
                [{"id": i + 1, "num": i, "name": f"n{i}"} for i in range(300)])
            await session.execute("UPDATE diff_item SET kind = 9 WHERE id = 1")
        async with db.session() as session:
            repo = ItemRepository(session)
            with pytest.raises(ValidationError) as info:
                await repo.update_many([{"id": it.id, "num": -1} for it in items])
            assert "9 is not a valid Kind" in str(info.value)
            assert await repo.count({"num": -1}) == 0
            assert await repo.count() == 300

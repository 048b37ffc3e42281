"""Cases where the cached reads and the column-at-a-time create_many must still give
Tortoise's own answer: a custom manager, sqlite's NUMERIC casts, PostgreSQL array casts, a
server-side DEFAULT, a caller-given primary key, explicit NULLs, values that cannot convert,
and the sqlite connection's wait limit when another session is queued."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import pytest

from aegis_tortoise import BaseRepository, DatabaseManager, PoolTimeoutError, ValidationError
from tests.conftest import fresh_manager
from tests.integration.test_repository_models import GADGET_MODELS, Coded, Gadget, Listed
from tests.integration.test_repository_support import (
    gadgets_fixture,  # noqa: F401 - the gadgets fixture
)


async def test_a_custom_manager_is_honoured(gadgets: DatabaseManager) -> None:
    async with gadgets.session() as session:
        repo = BaseRepository(session, Listed)
        made = await repo.create_many([{"name": "on"}, {"name": "off", "active": False}])
        assert [x.name for x in await repo.list()] == ["on"]
        assert await repo.count() == 1
        assert (await repo.paginate()).total == 1
        assert [x.name for x in await repo.get_by_ids([m.id for m in made])] == ["on"]
        assert await repo.get_by_id(made[1].id) is None
        assert [x.name for x in await Listed.all().using_db(session.connection)] == ["on"]


async def test_decimal_filters_and_order_match_tortoise(gadgets: DatabaseManager) -> None:
    async with gadgets.session() as session:
        repo = BaseRepository(session, Gadget)
        await repo.create_many([{"code": c, "price": Decimal(p)}
                                for c, p in (("a", "9.00"), ("b", "10.00"), ("c", "100.50"))])
        cases: list[dict[str, Any]] = [
            {"price__gt": Decimal("9.5")}, {"price": Decimal("10")}, {"price__lt": 20},
            {"price__in": [Decimal("10.004")]}, {"price__in": [Decimal("9.999")]},
            {"price__in": [Decimal("10"), Decimal("100.5")]},
        ]
        for filters in cases:
            got = [g.code for g in await repo.list(filters=filters, order_by="code")]
            want = [g.code for g in await Gadget.filter(**filters).order_by("code")
                    .using_db(session.connection)]
            assert got == want, filters
            assert await repo.count(filters) == len(want), filters
        for order in ("price", "-price"):
            got = [g.code for g in await repo.list(order_by=order)]
            assert got == [g.code for g in await Gadget.all().order_by(order, "id")
                           .using_db(session.connection)], order
        assert [g.code for g in await repo.list(order_by="price")] == ["a", "b", "c"]


async def test_an_all_null_column_is_stored_null_not_the_server_default(
        gadgets: DatabaseManager, backend: str) -> None:
    async with gadgets.session() as session:
        if backend == "postgres":
            await session.execute(
                "ALTER TABLE repo_gadgets ALTER COLUMN data SET DEFAULT '{\"server\": 1}'")
        repo = BaseRepository(session, Gadget)
        made = await repo.create_many([{"code": "n1", "data": None}, {"code": "n2"}])
        assert [g.data for g in made] == [None, None]
        stored = await repo.get_by_ids([g.id for g in made])
        assert [g.data for g in stored] == [None, None]


async def test_a_given_primary_key_and_explicit_nulls(gadgets: DatabaseManager) -> None:
    async with gadgets.session() as session:
        coded = BaseRepository(session, Coded)
        made = await coded.create_many([{"pk": "B", "label": "b"},
                                        {"code": "C", "label": "c"}])
        assert [c.code for c in made] == ["B", "C"]
        assert [c.code for c in await coded.list(order_by="code")] == ["B", "C"]
        gadgets_repo = BaseRepository(session, Gadget)
        for bad in ({"code": "x", "made_at": None}, {"code": "x", "qty": None}):
            with pytest.raises(ValidationError, match=r"null was passed|missing required"):
                await gadgets_repo.create_many([bad])
            with pytest.raises(ValidationError, match=r"null was passed|missing required"):
                await gadgets_repo.create(bad)
        assert await gadgets_repo.count() == 0


@pytest.mark.parametrize("value", [object(), "abc", [1]])
async def test_values_that_cannot_convert_are_validation_errors(
        gadgets: DatabaseManager, value: object) -> None:
    async with gadgets.session() as session:
        repo = BaseRepository(session, Gadget)
        with pytest.raises(ValidationError, match="Invalid Gadget"):
            await repo.create_many([{"code": "ok"}, {"code": "bad", "price": value}])
        with pytest.raises(ValidationError):
            await repo.create_many([{"code": "bad", "token": 12}])  # not a UUID
        assert await repo.count() == 0


async def test_sqlite_pool_timeout_holds_behind_a_queued_session(db_url: str,
                                                                 backend: str) -> None:
    if backend != "sqlite":
        pytest.skip("sqlite's one connection")
    async for manager in fresh_manager(db_url, backend, GADGET_MODELS, pool_size=1,
                                       max_overflow=0, pool_timeout=0.5):
        first_in = asyncio.Event()

        async def queued(manager: DatabaseManager = manager,
                         first_in: asyncio.Event = first_in) -> None:
            await first_in.wait()
            async with manager.session():
                await asyncio.sleep(2)

        other = asyncio.create_task(queued())
        async with manager.session():
            first_in.set()
            await asyncio.sleep(0.05)  # the other session now waits for the connection
        # Released: the waiter is woken but has not run yet; the lock looks free.
        start = time.monotonic()
        with pytest.raises(PoolTimeoutError):
            async with manager.session():
                pass
        assert time.monotonic() - start < 1.5
        await other

"""Issue #18: every write path converts and checks values as ``update``/``create`` do."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import pytest

from aegis_tortoise import BaseRepository, DatabaseManager, ValidationError
from tests.hostile.fixtures import items, table
from tests.hostile.models import Item

__all__ = ["items"]

Write = Callable[[BaseRepository[Item], str, Any], Awaitable[Any]]

# Every path that changes a stored row's field.
UPDATES: dict[str, Write] = {
    "update": lambda r, f, v: r.update(1, **{f: v}),
    "update data=": lambda r, f, v: r.update(1, {f: v}),
    "update_many": lambda r, f, v: r.update_many([{"id": 1, f: v}, {"id": 2, f: v}]),
    "update_where": lambda r, f, v: r.update_where({"qty__lte": 2}, **{f: v}),
}
# And the ones that insert one.
CREATES: dict[str, Write] = {
    "create": lambda r, f, v: r.create({"id": 10, "name": "n", f: v}),
    "create_many": lambda r, f, v: r.create_many([{"id": 10, "name": "n", f: v}]),
    "create_many rows": lambda r, f, v: r.create_many([Item(id=10, name="n", **{f: v})]),
    "upsert": lambda r, f, v: r.upsert({"id": 1, "name": "n", f: v}, conflict=["id"],
                                       update=[f]),
    "upsert_many": lambda r, f, v: r.upsert_many([{"id": 10, "name": "n", f: v}],
                                                 conflict=["id"]),
}


async def _refused(manager: DatabaseManager, write: Write, field: str, value: Any) -> None:
    before = await table(manager)
    async with manager.session() as session:
        repo = BaseRepository(session, Item)
        with pytest.raises(ValidationError) as info:
            await write(repo, field, value)
        if write in UPDATES.values():  # (create reports Model()'s error, without a field)
            assert info.value.details.get("field") == field, info.value
        assert await repo.count() == 5  # the session is still usable
    assert await table(manager) == before  # and every read still works


@pytest.mark.parametrize("path", [p for p in [*UPDATES, *CREATES] if p != "create_many rows"])
@pytest.mark.parametrize("value", ["Infinity", "-Infinity", "sNaN", "1e30"])
async def test_decimals_a_decimal_field_cannot_hold_are_refused(items: DatabaseManager,
                                                                path: str, value: str) -> None:
    """Before: update_where stored them on sqlite, after which every read of the table
    failed; update and update_many stored Infinity too."""
    await _refused(items, {**UPDATES, **CREATES}[path], "price", Decimal(value))


@pytest.mark.parametrize("path", list(UPDATES))
async def test_an_int_for_a_timedelta_field_is_refused_on_update(items: DatabaseManager,
                                                                 path: str) -> None:
    """Tortoise 1.1.9's save() and QuerySet.update fail on an int (value.days)."""
    await _refused(items, UPDATES[path], "span", 5)
    async with items.session() as session:
        repo = BaseRepository(session, Item)
        await UPDATES[path](repo, "span", dt.timedelta(seconds=5))
        assert (await repo.get(1)).span == dt.timedelta(seconds=5)


async def test_an_int_for_a_timedelta_field_on_create_is_read_as_tortoise_reads_it(
        items: DatabaseManager) -> None:
    """``Model(span=5)`` takes 5 microseconds in Tortoise 1.1.9: create() keeps parity."""
    async with items.session() as session:
        repo = BaseRepository(session, Item)
        created = await repo.create({"id": 10, "name": "n", "span": 5})
        assert created.span == dt.timedelta(microseconds=5)
        assert (await repo.get(10)).span == dt.timedelta(microseconds=5)


@pytest.mark.parametrize("path", [*UPDATES, *CREATES])
async def test_nan_in_a_float_field(items: DatabaseManager, backend: str, path: str) -> None:
    """sqlite stores a NaN as NULL, silently: refused there; PostgreSQL stores NaN."""
    write = {**UPDATES, **CREATES}[path]
    if backend == "sqlite":
        await _refused(items, write, "ratio", math.nan)
        return
    async with items.session() as session:
        repo = BaseRepository(session, Item)
        await write(repo, "ratio", math.nan)
        stored = await repo.get(10 if path.startswith(("create", "upsert_many")) else 1)
        assert stored.ratio is not None
        assert math.isnan(stored.ratio)


async def test_good_decimals_are_quantized_on_every_update_path(items: DatabaseManager) -> None:
    async with items.session() as session:
        repo = BaseRepository(session, Item)
        for i, (name, write) in enumerate(UPDATES.items()):
            value = Decimal(f"{i + 1}.129")
            await write(repo, "price", value)
            assert (await repo.get(1)).price == Decimal(f"{i + 1}.13"), name

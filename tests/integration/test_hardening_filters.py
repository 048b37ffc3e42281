"""Issue #18: filter strings that reached the SQL text, filters that passed validation and
then failed, and a caller's programming error reported as the client's bad value."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from aegis_tortoise import (
    BaseRepository,
    ConfigurationError,
    DatabaseError,
    DatabaseManager,
    InvalidFilterError,
    ValidationError,
)
from tests.hostile.fixtures import items, table
from tests.hostile.models import ITEMS, Item, Owner

__all__ = ["items"]

pytestmark = pytest.mark.filterwarnings("error")

INJECTIONS = [
    "color'='x' OR 1=1 OR 'a",
    "color' || (SELECT substr(name, 1, 1) FROM hostile_items WHERE id = 2) || '",
    "a'; DELETE FROM hostile_items; --",
    "x'/*",
    "a\\'",
    "a*/b",
    "nul\x00byte",
    "back\\slash'",
    "k" * 256,
]


async def _walk(rows: Any) -> list[Any]:
    return [row async for row in rows]


# -- item 1: JSON __filter keys -----------------------------------------------------------------


@pytest.mark.parametrize("key", INJECTIONS)
async def test_hostile_json_keys_are_refused_and_touch_nothing(items: DatabaseManager,
                                                               key: str) -> None:
    before = await table(items)
    hostile = {"qty": 1, "data__filter": {key: "nope"}}
    async with items.session() as session:
        repo = BaseRepository(session, Item)
        for call in (repo.list(filters=hostile), repo.count(hostile),
                     repo.delete_where(hostile), repo.update_where(hostile, name="pwned"),
                     repo.paginate(filters=hostile), repo.paginate_keyset(filters=hostile),
                     _walk(repo.iterate(filters=hostile))):
            with pytest.raises(InvalidFilterError, match="JSON key"):
                await call
        assert await repo.count() == len(ITEMS)  # the session is still usable
    assert await table(items) == before


async def test_json_filter_keys_of_the_allowed_set_work(items: DatabaseManager,
                                                       backend: str) -> None:
    async with items.session() as session:
        repo = BaseRepository(session, Item)
        await repo.update_where({"id": 4}, data={"content-type": "text", "a b.c": 7,
                                                 "한글": "ok", "@type": "x", "$ref": "#/a:b+"})
        cases: list[tuple[dict[str, Any], list[int]]] = [
            ({"color": "c2"}, [2]),
            ({"n__gte": 4}, [5]),
            ({"tags__1": "t3"}, [3]),
            ({"content-type": "text"}, [4]),
            ({"a b.c": 7}, [4]),
            ({"한글": "ok"}, [4]),
            ({"@type": "x"}, [4]),
            ({"$ref": "#/a:b+"}, [4]),
        ]
        for json_filter, ids in cases:
            filters = {"data__filter": json_filter}
            if backend == "sqlite":  # Tortoise 1.1.9 has no JSON __filter on sqlite
                with pytest.raises(InvalidFilterError, match="does not support"):
                    await repo.list(filters=filters)
                continue
            assert [i.id for i in await repo.list(filters=filters)] == ids, json_filter
            assert await repo.count(filters) == len(ids)


@pytest.mark.parametrize("value", [{}, {"a": 1, "b": 2}, ["color", "c1"], "color", {1: "x"},
                                   {"n__in": 3}, {"n__range": [1]}])
async def test_json_filter_values_of_the_wrong_shape_are_refused(items: DatabaseManager,
                                                                 value: Any) -> None:
    async with items.session() as session:
        with pytest.raises(InvalidFilterError, match="data__filter"):
            await BaseRepository(session, Item).list(filters={"data__filter": value})


# -- item 16: filters that passed validation, then failed -------------------------------------


async def test_range_needs_two_bounds(items: DatabaseManager) -> None:
    async with items.session() as session:
        repo = BaseRepository(session, Item)
        for bad in ([1], [1, 2, 3], 5, "ab", None):
            if bad is None:
                continue
            with pytest.raises(InvalidFilterError, match="two bounds"):
                await repo.list(filters={"qty__range": bad})
        assert [i.id for i in await repo.list(filters={"qty__range": [2, 3]})] == [2, 3]
        assert await repo.count({"qty__range": (4, 9)}) == 2


async def test_a_path_back_through_a_to_many_relation_is_refused(items: DatabaseManager) -> None:
    async with items.session() as session:
        repo = BaseRepository(session, Item)
        await repo.update_where({"id": 1}, name="first")
        for call in (repo.list(filters={"owner__items__name": "item2"}),
                     repo.count({"owner__items__name": "item2"}),
                     repo.delete_where({"owner__items__qty__gte": 1})):
            with pytest.raises(InvalidFilterError, match="comes back to Item"):
                await call
        # No rollback needed: the write before the refused calls is still there.
        assert (await repo.get(1)).name == "first"
        # Paths Tortoise can join stay allowed: through the same table without a to-many
        # step back to the root, or back to another table.
        assert [i.id for i in await repo.list(filters={"owner__name": "bob"})] == [3]
        owners = BaseRepository(session, Owner)
        assert [o.id for o in await owners.list(
            filters={"items__owner__items__name": "item3"})] == [2]
    async with items.session() as session:
        assert (await BaseRepository(session, Item).get(1)).name == "first"


async def test_lists_beyond_the_driver_argument_limit(items: DatabaseManager) -> None:
    """asyncpg takes at most 32,767 arguments a statement: long lists go as one array."""
    ids = list(range(1, 40_001))
    async with items.session() as session:
        repo = BaseRepository(session, Item)
        assert await repo.count({"id__in": ids}) == 5
        assert await repo.count({"id__not_in": ids[2:]}) == 2
        found = await repo.list(filters={"id__in": ids, "name__icontains": "ITEM"})
        assert [i.id for i in found] == [1, 2, 3, 4, 5]
        assert await repo.count({"id__not_in": ids[2:], "name__icontains": "item"}) == 2
        names = [f"item{i}" for i in range(40_000)]
        assert await repo.count({"name__in": names, "qty__gte": 2}) == 4
        assert await repo.count({"owner__id__in": ids, "name__icontains": "item"}) == 5
        assert await repo.update_where({"id__in": ids[1:]}, qty=0) == 4
        assert await repo.delete_where({"id__in": ids[3:]}) == 2
        assert [(i.id, i.qty) for i in await repo.list(order_by="id")] == [
            (1, 1), (2, 0), (3, 0)]
        with pytest.raises(ValidationError, match="qty"):
            await repo.count({"qty__in": [*range(2000), "not a number"],
                              "name__icontains": "x"})


# -- item 15: a programming error is a TypeError, a library bug a 500 ------------------------


async def test_a_wrong_call_raises_type_error(items: DatabaseManager) -> None:
    async with items.session() as session:
        repo: Any = BaseRepository(session, Item)
        with pytest.raises(TypeError, match="conflict_fields"):
            await repo.upsert({"id": 1, "name": "x"}, conflict_fields=["id"])
        with pytest.raises(TypeError, match="positional"):
            await repo.upsert({"id": 1, "name": "x"}, ["id"])
        with pytest.raises(TypeError, match="'filter'"):
            await repo.list(filter={"qty": 1})
        assert await repo.count() == 5  # the session is untouched


async def test_a_type_error_in_a_value_conversion_is_still_bad_input(
        items: DatabaseManager) -> None:
    async with items.session() as session:
        repo = BaseRepository(session, Item)
        for filters in ({"qty": [1, 2]}, {"qty": [1, 2], "name__icontains": "i"},
                        {"span": 5, "name__icontains": "i"}):
            with pytest.raises(ValidationError):
                await repo.list(filters=filters)
        with pytest.raises(ValidationError, match="price"):
            await repo.update(1, price=object())


class _BuggyItems(BaseRepository[Item]):
    """A repository whose ``query()`` override has a bug (a TypeError of its own)."""

    def query(self, *, include_deleted: bool = False) -> Any:
        return super().query(include_deleted=include_deleted).filter(None + 1)  # type: ignore[operator]


async def test_a_type_error_elsewhere_is_a_logged_500(items: DatabaseManager,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    async with items.session() as session:
        with caplog.at_level(logging.ERROR, logger="aegis_tortoise.repository"), \
                pytest.raises(DatabaseError) as info:
            await _BuggyItems(session, Item).list(filters={"qty": 1})
        assert not isinstance(info.value, ValidationError)
        assert info.value.status_code == 500
        assert "a bug" in caplog.text
        repo: Any = BaseRepository(session, Item)
        with pytest.raises(TypeError, match="get_by_ids"):  # the caller's bug: a TypeError
            await repo.get_by_ids(5)


# -- item 19 -------------------------------------------------------------------------------------


async def test_nested_block_comments_in_raw_sql(items: DatabaseManager, backend: str) -> None:
    async with items.session() as session:
        if backend == "postgres":  # PostgreSQL nests: :a is inside the comment
            result = await session.execute(
                "SELECT /* a /* b */ :a */ CAST(:b AS INT) AS x", {"b": 7})
            assert result.scalar_one() == 7
            result = await session.execute(
                "SELECT /* /* */ ':c' */ CAST(:d AS INT) AS x", {"d": 8})
            assert result.scalar_one() == 8
        else:  # sqlite does not: the comment ends at the first */
            result = await session.execute("SELECT /* a /* b */ :a AS x", {"a": 9})
            assert result.scalar_one() == 9


def test_a_non_integer_port_in_credentials_is_a_configuration_error() -> None:
    for port in ("54x32", "hunter2-secret", 70000, 5432.5, True):
        config = {
            "connections": {"primary": {
                "engine": "tortoise.backends.asyncpg",
                "credentials": {"host": "localhost", "port": port, "user": "app",
                                "password": "pw", "database": "app"}}},
            "apps": {"models": {"models": ["aegis_tortoise.examples.models"],
                                "default_connection": "primary"}},
        }
        with pytest.raises(ConfigurationError) as info:
            DatabaseManager.from_tortoise_config(config)
        assert "'primary'" in str(info.value)
        assert info.value.details["field"] == "port"
        assert str(port) not in str(info.value) or port is True

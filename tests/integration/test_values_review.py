"""Review of the #18 values branch: what a second user and an attacker found after it.

Each test names the behaviour it pins; each failed on the branch before its fix.
"""

from __future__ import annotations

import datetime as dt
import decimal
import gc
import tracemalloc
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from aegis_tortoise import (
    BaseRepository,
    DatabaseError,
    DatabaseManager,
    InvalidFilterError,
)
from tests.conftest import fresh_manager
from tests.integration.values_review_models import MODELS, Color, Kind, Thing

pytestmark = pytest.mark.filterwarnings("error")

_UTC = dt.UTC
ROWS = [{"id": i, "code": f"c{i}", "token": uuid.UUID(int=i), "kind": Kind(1 + i % 2),
         "color": Color.RED if i % 2 else None, "at": dt.datetime(2024, 1, i, 12, tzinfo=_UTC),
         "day": dt.date(2024, 1, i), "price": decimal.Decimal(f"{i}.50"), "ratio": i / 4,
         "data": {"k": i}} for i in range(1, 6)]


@pytest.fixture
async def things(db_url: str, backend: str) -> AsyncIterator[DatabaseManager]:
    """A manager of :class:`Thing` holding ROWS."""
    async for manager in fresh_manager(db_url, backend, MODELS, pool_size=2, max_overflow=0):
        async with manager.session() as session:
            await BaseRepository(session, Thing).create_many(ROWS)
        yield manager


# -- long __in lists match what Tortoise matches ------------------------------------------------

#: (field, values that match some rows, padding that matches none)
_LONG_LISTS: list[tuple[str, list[Any], list[Any]]] = [
    ("price", [decimal.Decimal("1.5")], [decimal.Decimal(900 + i) for i in range(1100)]),
    ("price", [1.5], [float(900 + i) for i in range(1100)]),
    ("price", ["2.5"], [str(900 + i) for i in range(1100)]),
    ("id", [1, None, 1, "2"], list(range(1000, 2100))),
    ("code", ["c1", "c1"], [f"zz{i}" for i in range(1100)]),
    ("token", [str(uuid.UUID(int=1)), uuid.UUID(int=2)],
     [uuid.UUID(int=10**6 + i) for i in range(1100)]),
    ("at", [dt.datetime(2024, 1, 1, 21, tzinfo=dt.timezone(dt.timedelta(hours=9)))],
     [dt.datetime(1990, 1, 1, tzinfo=_UTC) + dt.timedelta(hours=i) for i in range(1100)]),
    ("day", ["2024-01-02"], [dt.date(1990, 1, 1) + dt.timedelta(days=i) for i in range(1100)]),
    ("color", [Color.RED], [Color.BLUE] * 1100),
    ("ratio", [0.25], [900.5 + i for i in range(1100)]),
]


@pytest.mark.parametrize(("field", "wanted", "padding"), _LONG_LISTS,
                         ids=[f"{f}-{i}" for i, (f, _, _) in enumerate(_LONG_LISTS)])
@pytest.mark.parametrize("lookup", ["in", "not_in"])
async def test_a_long_in_list_matches_what_tortoise_matches(
        things: DatabaseManager, field: str, wanted: list[Any], padding: list[Any],
        lookup: str) -> None:
    """More than MAX_BOUND_VALUES values take our array path on PostgreSQL; the rows must
    be Tortoise's own for the same list. Before the fix, sqlite rendered the list itself
    and a DecimalField list (``price__in=[Decimal("1.5"), ...1100 more]``) matched no row."""
    key = f"{field}__{lookup}"
    values = wanted + padding
    async with things.session() as session:
        repo = BaseRepository(session, Thing)
        ours = sorted(t.id for t in await repo.list(filters={key: values}, limit=None))
        short = sorted(t.id for t in await repo.list(filters={key: wanted}, limit=None))
        theirs = sorted(t.id for t in await Thing.filter(**{key: values})
                        .using_db(session.connection))
        assert ours == theirs
        assert ours == short
        assert await repo.count({key: values}) == len(theirs)


# -- lookups Tortoise registers on every field, that fail late or filter nothing ----------------


async def test_search_never_drops_the_filter(things: DatabaseManager, backend: str) -> None:
    """Tortoise 1.1.9 has no ``__search`` on sqlite: its criterion is None and the filter is
    dropped, so ``delete_where({"code__search": "zzz"})`` deleted every row. It works on
    PostgreSQL and is refused up front on sqlite."""
    async with things.session() as session:
        repo = BaseRepository(session, Thing)
        if backend == "postgres":
            assert [t.id for t in await repo.list(filters={"code__search": "c1"})] == [1]
            assert await repo.delete_where({"code__search": "zzz"}) == 0
        else:
            for call in (repo.list(filters={"code__search": "zzz"}),
                         repo.count({"code__search": "zzz"}),
                         repo.update_where({"code__search": "zzz"}, code="x"),
                         repo.delete_where({"code__search": "zzz"})):
                with pytest.raises(InvalidFilterError, match="search"):
                    await call
        assert await repo.count() == len(ROWS)


_AT_1 = {"year": 2024, "month": 1, "day": 1, "hour": 12, "quarter": 1, "week": 1,
         "minute": 0, "second": 0, "microsecond": 0}


@pytest.mark.parametrize(("key", "works_on"), [
    ("at__year", {"postgres"}), ("at__hour", {"postgres"}), ("day__month", {"postgres"}),
    ("day__hour", set()), ("day__microsecond", set()), ("id__year", set()),
    ("price__month", set()), ("code__day", set()), ("token__week", set()),
    ("flag__quarter", set()), ("code__search", {"postgres"}), ("id__search", set()),
    ("at__search", set()), ("kind__search", set()),
])
async def test_lookups_work_or_are_refused_up_front(things: DatabaseManager, backend: str,
                                                    key: str, works_on: set[str]) -> None:
    """Tortoise 1.1.9 registers the date-part lookups and ``__search`` on every field: on a
    field that cannot take them (or on sqlite, which has no EXTRACT) they passed our check
    and failed in the database as a 500 ``DatabaseError`` that aborted the session."""
    value: Any = "c1" if key.endswith("__search") else _AT_1[key.rsplit("__", 1)[1]]
    async with things.session() as session:
        repo = BaseRepository(session, Thing)
        if backend in works_on:
            theirs = await Thing.filter(**{key: value}).using_db(session.connection)
            ours = await repo.list(filters={key: value}, order_by="id")
            assert [t.id for t in ours] == sorted(t.id for t in theirs)
            assert ours
        else:
            with pytest.raises(InvalidFilterError, match=key.rsplit("__", 1)[1]):
                await repo.list(filters={key: value})
            with pytest.raises(InvalidFilterError):
                await repo.delete_where({key: value})
        assert await repo.count() == len(ROWS)  # the session is still usable


# -- JSON keys of any script --------------------------------------------------------------------

#: Words of scripts whose letters carry combining marks (Devanagari, Thai, Tamil), and an
#: accented key in decomposed form (NFD, as macOS and some clients send it).
_SCRIPT_KEYS = ["नाम", "ชื่อ", "தமிழ்", "cafe\u0301", "user-id", "日本語"]


@pytest.mark.parametrize("key", _SCRIPT_KEYS)
async def test_json_keys_in_any_script_work(things: DatabaseManager, backend: str,
                                            key: str) -> None:
    """The docs allow "letters and digits of any script"; the check refused a letter
    followed by a combining mark (``\\w`` does not match marks), so "नाम" or a decomposed
    "café" raised ``InvalidFilterError`` on PostgreSQL. (sqlite has no JSON ``__filter``.)"""
    async with things.session() as session:
        repo = BaseRepository(session, Thing)
        await repo.update(2, {"data": {key: "v"}})
        flt = {"data__filter": {key: "v"}}
        if backend == "postgres":
            assert [t.id for t in await repo.list(filters=flt)] == [2]
        else:
            with pytest.raises(InvalidFilterError, match="does not support"):
                await repo.list(filters=flt)


# -- a caller's argument of the wrong type is no library bug ------------------------------------

_NOT_ITERABLE: dict[str, Any] = {
    "create_many": lambda r: r.create_many(5),
    "get_by_ids": lambda r: r.get_by_ids(None),
    "upsert_many": lambda r: r.upsert_many(5, conflict=["id"]),
    "update_many": lambda r: r.update_many(5),
    "upsert conflict": lambda r: r.upsert({"id": 1, "code": "b"}, conflict=5),
    "list order_by": lambda r: r.list(order_by=5),
    "keyset order_by": lambda r: r.paginate_keyset(order_by=5),
    "list prefetch": lambda r: r.list(prefetch=5),
}


@pytest.mark.parametrize("call", list(_NOT_ITERABLE))
async def test_a_non_iterable_argument_is_the_callers_error_not_a_500(
        things: DatabaseManager, call: str, caplog: pytest.LogCaptureFixture) -> None:
    """``create_many(5)``, ``get_by_ids(None)``, ``order_by=5``...: Python's own
    ``TypeError`` ("'int' object is not iterable") from inside the method was reported as a
    500 ``DatabaseError`` and logged at ERROR as a bug of the library. It is the caller's
    bug: a ``TypeError`` naming the argument, as from any Python function (for ``order_by``
    and ``prefetch``, whose entries are checked already, ``InvalidFilterError``)."""
    expected: type[Exception] = InvalidFilterError if call.endswith(("order_by", "prefetch")) \
        else TypeError
    async with things.session() as session:
        with pytest.raises(expected, match=r"not int|not None") as info:
            await _NOT_ITERABLE[call](BaseRepository(session, Thing))
        assert not isinstance(info.value, DatabaseError)
        assert await BaseRepository(session, Thing).count() == len(ROWS)
    assert not [r for r in caplog.records if "a bug" in r.getMessage()]


# -- hostile sizes: a JSON path deeper than PostgreSQL parses, and the caches of SQL text -------


async def test_a_json_path_too_deep_is_refused_up_front(things: DatabaseManager,
                                                        backend: str) -> None:
    """5,000 parts of one letter passed the check, then PostgreSQL answered "stack depth limit
    exceeded" (a 500 that aborted the session). Paths are limited to MAX_JSON_PARTS parts."""
    async with things.session() as session:
        repo = BaseRepository(session, Thing)
        deep = "__".join(["a"] * 5000)
        with pytest.raises(InvalidFilterError, match="parts"):
            await repo.list(filters={"data__filter": {deep: "x"}})
        if backend == "postgres":
            await repo.update(1, {"data": {"a": {"a": {"a": "x"}}}})
            assert [t.id for t in await repo.list(
                filters={"data__filter": {"a__a__a": "x"}})] == [1]
        assert await repo.count() == len(ROWS)


async def test_statement_classification_keeps_no_huge_statement(
        things: DatabaseManager, backend: str) -> None:
    """Every statement is classified (plain read? stateless?) with its text as the key of two
    4,096-entry caches: each distinct hostile JSON key (up to 16 KB) or IN list length left
    its whole statement there, 4,096 of them 64 MB and more (gigabytes with the unlimited
    JSON paths, or sqlite's lists of up to 250,000 values).
    Statements longer than MAX_CACHED_STATEMENT keep their class in a cache of MAX_LONG_CACHED
    entries only."""
    if backend == "sqlite":  # the same code on both; sqlite3 keeps 128 statements of its own
        pytest.skip("no JSON __filter on sqlite; its driver's statement cache hides ours")
    async with things.session() as session:
        repo = BaseRepository(session, Thing)

        async def hostile(n: int) -> None:
            for i in range(n):
                key = "__".join([f"{i:04d}" + "k" * 250] * 63)
                await repo.list(filters={"data__filter": {key: "x"}})

        await hostile(3)  # warm up every other cache first
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            await hostile(100)  # 100 distinct statements of about 16 KB: 1.6 MB
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
    assert grown < 600_000, grown


# -- long lists the array path did not take -----------------------------------------------------


async def test_long_lists_on_a_reverse_relation_work(backend: str, db_url: str) -> None:
    """``items__in``/``items__not_in`` (a reverse foreign key: Tortoise joins the related
    table and compares its key) with 40,000 ids failed on PostgreSQL with the driver's
    "number of query arguments cannot exceed 32767" (a 500). They match what the short
    list and Tortoise match."""
    from tests.hostile.fixtures import seeded
    from tests.hostile.models import Owner

    padding = list(range(1000, 41_000))  # no item has these ids
    async for manager in seeded(db_url, backend):
        async with manager.session() as session:
            repo = BaseRepository(session, Owner)
            for lookup, short in (("in", [3]), ("not_in", [1, 2, 3])):
                key, values = f"items__{lookup}", short + padding
                theirs = await Owner.filter(**{key: short}).distinct().using_db(
                    session.connection)
                expected = sorted(o.id for o in theirs)
                assert sorted(o.id for o in await repo.list(filters={key: values})) == expected
                assert sorted(o.id for o in await repo.list(filters={key: short})) == expected
                assert await repo.count({key: values, "name__icontains": ""}) == len(expected)


async def test_a_json_in_list_beyond_the_driver_limit_is_refused_up_front(
        things: DatabaseManager, backend: str) -> None:
    """``{"data__filter": {"k__in": [40,000 values]}}`` passed the check, then failed on
    PostgreSQL as a 500 (32,767 arguments); Tortoise renders each value as a parameter."""
    async with things.session() as session:
        repo = BaseRepository(session, Thing)
        with pytest.raises(InvalidFilterError, match="30,000"):
            await repo.list(filters={"data__filter": {"k__in": list(range(40_000))}})
        with pytest.raises(InvalidFilterError, match="30,000"):
            await repo.delete_where({"data__filter": {"k__not_in": list(range(40_000))}})
        assert await repo.count() == len(ROWS)

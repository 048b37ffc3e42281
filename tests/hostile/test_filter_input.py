"""Hostile strings wherever a caller's text can reach SQL: filter keys and lookups, JSON keys
and values, ``order_by`` entries, prefetch names, field names of writes, and relation paths
back and forth (issue #18, "Scope"). One exhaustive test renders every Tortoise filter of the
test models with a marker value and checks no caller text lands in the statement.

Each generated call must either raise a typed :class:`InvalidFilterError` /
:class:`ValidationError`, or return what a safe reference computes in Python from the rows
the table holds; and the table must hold exactly what it held before (writes run in a
session that is rolled back after their effect was compared with the reference's).

Bounded by the differential suite's Hypothesis profiles (tests/differential/harness.py):
a few seconds in ``make test``; ``AEGIS_DIFF_PROFILE=fuzz`` runs many more cases.
"""

from __future__ import annotations

import asyncio
import decimal
import re
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from aegis_tortoise import (
    BaseRepository,
    DatabaseManager,
    InvalidFilterError,
    ValidationError,
)
from tests.differential.harness import scaled
from tests.hostile.fixtures import seeded, table
from tests.hostile.models import ITEMS, Item, Owner, Part

T = TypeVar("T")

#: The JSON key parts docs/reference/repositories.md allows (checked here on its own).
JSON_KEY = re.compile(r"[\w\-. @$:/+#]{1,255}")

#: Generated cases run, per backend (reported by tests/hostile/conftest.py).
CASES: dict[str, int] = {}

# -- strategies ------------------------------------------------------------------------------

_NASTY = ["'", "''", '"', "--", "/*", "*/", ";", "\\", "\x00", "%", "_", "$1", ":a", "?",
          " OR 1=1", "' OR '1'='1", ")", "(", "->>", "__", "\n", "ß", "한"]


def _hostile_text(max_size: int = 40) -> st.SearchStrategy[str]:
    """Text made of SQL's special characters and fragments, plus plain and long text."""
    fragments = st.lists(st.sampled_from(_NASTY) | st.text(max_size=4), max_size=8)
    return st.one_of(
        fragments.map("".join),
        st.text(max_size=max_size),
        st.sampled_from(_NASTY),
        st.integers(300, 3000).map(lambda n: "x'" * n),  # over-long
    )


_FIELDS = ["id", "name", "qty", "price", "owner_id", "owner__name"]
_LOOKUPS = ["", "__not", "__gt", "__gte", "__lt", "__lte", "__contains", "__icontains",
            "__startswith", "__endswith", "__in", "__not_in", "__range"]

_SCALARS = st.one_of(_hostile_text(), st.integers(-3, 8), st.sampled_from(["2", " 3", "item2"]))
_LISTS = st.lists(st.integers(-1, 6) | st.sampled_from(["2", " 3", "x", "item4"])
                  | _hostile_text(8), max_size=3)

#: ``{key: value}``: a valid field and lookup with a value of any shape, a valid field with a
#: hostile lookup, or a hostile key.
_VALID_ITEMS = st.tuples(
    st.tuples(st.sampled_from(_FIELDS), st.sampled_from(_LOOKUPS)).map("".join),
    _SCALARS | _LISTS)
filter_items = st.one_of(
    _VALID_ITEMS,
    st.one_of(
        st.tuples(st.tuples(st.sampled_from(_FIELDS), _hostile_text(12)).map("__".join),
                  _SCALARS),
        st.tuples(_hostile_text(), _SCALARS | _LISTS)),
)
filter_values = _SCALARS | _LISTS

# -- the safe reference ----------------------------------------------------------------------

_OWNER_NAMES = {1: "ann", 2: "bob"}
_UNKNOWN = object()  # the reference cannot tell (a case it does not model): an error is fine


def _column(row: dict[str, Any], field: str) -> Any:
    if field == "owner__name":
        return _OWNER_NAMES[row["owner_id"]]
    if field == "price":
        return decimal.Decimal(row["price"])
    return row[field]


def _as(field: str, value: Any) -> Any:
    """``value`` as the field converts it, or raise ValueError/TypeError as it would."""
    if isinstance(value, list):
        raise TypeError("a list")
    if field in ("id", "qty", "owner_id"):
        if isinstance(value, str) and value.strip().lstrip("+-").isdigit() and value.isascii():
            return int(value)
        if isinstance(value, int):
            return value
        raise ValueError(value)
    if field == "price":
        try:
            return decimal.Decimal(str(value)).quantize(decimal.Decimal("0.01"))
        except decimal.InvalidOperation as exc:
            raise ValueError(value) from exc
    return str(value)


def reference(key: str, value: Any) -> list[int] | object:
    """The ids ``{key: value}`` selects, computed in Python; None means "must be refused"."""
    field, lookup = None, ""
    for candidate in sorted(_FIELDS, key=len, reverse=True):
        if key == candidate or key.startswith(candidate + "__"):
            field, lookup = candidate, key[len(candidate):]
            break
    if field is None or lookup not in _LOOKUPS:
        return None
    text_lookup = lookup in ("__contains", "__icontains", "__startswith", "__endswith")
    if text_lookup or lookup in ("__in", "__not_in"):
        if lookup in ("__in", "__not_in") and not isinstance(value, list):
            return _UNKNOWN  # a string is an iterable of characters to Tortoise
        if text_lookup and (not isinstance(value, str) or "\x00" in value):
            return _UNKNOWN
    if lookup == "__range":
        if not isinstance(value, list) or len(value) != 2:
            return None
        if field in ("name", "owner__name"):
            return _UNKNOWN  # collation
    try:
        if lookup in ("__in", "__not_in", "__range"):
            wanted = [_as(field, v) for v in value]
        elif text_lookup:
            wanted = [str(value)]
        else:
            wanted = [_as(field, value)]
    except (ValueError, TypeError):
        return None
    if any(isinstance(w, str) and "\x00" in w for w in wanted):
        return _UNKNOWN  # PostgreSQL text cannot hold NUL: an error there, no match on sqlite
    if field in ("name", "owner__name") and any(isinstance(w, str) and not w.isascii()
                                                 for w in wanted):
        return _UNKNOWN  # collation and case folding differ from Python's
    ids = []
    for row in ITEMS:
        try:
            if _matches(lookup, _column(row, field), wanted):
                ids.append(row["id"])
        except TypeError:
            return None  # a str compared with an int: the field conversion refuses it
    return ids


def _matches(lookup: str, stored: Any, wanted: list[Any]) -> bool:
    """Whether a stored value passes ``lookup`` with the converted ``wanted`` value(s)."""
    w, text = wanted[0] if wanted else None, str(stored)
    if lookup == "":
        return bool(stored == w)
    if lookup == "__not":
        return bool(stored != w)
    if lookup in ("__gt", "__gte", "__lt", "__lte"):
        return {"__gt": stored > w, "__gte": stored >= w, "__lt": stored < w,
                "__lte": stored <= w}[lookup]
    if lookup in ("__contains", "__icontains", "__startswith", "__endswith"):
        return {"__contains": w in text, "__icontains": str(w).upper() in text.upper(),
                "__startswith": text.startswith(w), "__endswith": text.endswith(w)}[lookup]
    if lookup == "__range":
        return bool(wanted[0] <= stored <= wanted[1])
    return (stored in wanted) == (lookup == "__in")


def json_reference(key: str, value: str, backend: str) -> list[int] | None:
    """The ids ``data__filter={key: value}`` selects (PostgreSQL ``data->>'key' = value``)."""
    if backend == "sqlite":
        return None  # Tortoise 1.1.9 has no JSON __filter on sqlite
    if "__" in key or not JSON_KEY.fullmatch(key) or (key.isdigit() and not key.isascii()):
        return None
    if key.isdigit():
        return []  # an array index into an object: NULL
    ids = []
    for row in ITEMS:
        stored = row["data"].get(key)
        if stored is not None and not isinstance(stored, list) and str(stored) == value:
            ids.append(row["id"])
    return ids


# -- running ---------------------------------------------------------------------------------


class Runner:
    """One seeded manager and the loop it lives on, for every example of one test."""

    def __init__(self, loop: asyncio.Runner, manager: DatabaseManager, backend: str) -> None:
        self.loop = loop
        self.db = manager
        self.backend = backend
        self.before = loop.run(table(manager))

    def run(self, make: Callable[[DatabaseManager], Awaitable[T]]) -> T:
        CASES[self.backend] = CASES.get(self.backend, 0) + 1
        result = self.loop.run(make(self.db))
        assert self.loop.run(table(self.db)) == self.before, "the table changed"
        return result


@contextmanager
def runner(backend: str, url: str) -> Iterator[Runner]:
    with asyncio.Runner() as loop:
        managers = seeded(url, backend)
        manager = loop.run(anext(managers))  # type: ignore[arg-type]
        try:
            yield Runner(loop, manager, backend)
        finally:
            loop.run(managers.aclose())


async def _outcome(call: Awaitable[T]) -> T | ValidationError:
    """What the call returned, or the typed error it raised (anything else propagates)."""
    try:
        return await call
    except ValidationError as exc:  # InvalidFilterError included
        error = exc
    # The error names what is wrong without echoing kilobytes of the caller's input.
    assert len(str(error)) <= 2000, str(error)[:200]
    return error


def _check(got: Any, expected: list[int] | object | None, what: str) -> None:
    if expected is _UNKNOWN:
        return  # a typed error or any result: reaching here without a 500 is the check
    if expected is None:
        assert isinstance(got, ValidationError), f"{what}: not refused, got {got!r}"
        return
    if isinstance(got, ValidationError):
        # A value the reference accepts but the database refuses as bad input (e.g. a
        # numeric overflow) is a typed refusal: allowed. Anything typed as a bad filter
        # for a key the reference knows is not.
        assert not isinstance(got, InvalidFilterError), f"{what}: refused: {got}"
        return
    assert got == expected, what


# -- the tests -------------------------------------------------------------------------------


def test_hostile_filters_on_reads_and_writes(backend: str, db_url: str) -> None:
    """list, count, update_where and delete_where with generated keys and values."""
    with runner(backend, db_url) as r:

        @scaled(2)
        @given(item=filter_items)
        @example(item=("qty__range", [1]))  # found by review: a raw IndexError before #18
        def case(item: tuple[str, Any]) -> None:
            key, value = item
            expected = reference(key, value)
            filters = {key: value}

            async def body(db: DatabaseManager) -> None:
                async with db.session() as session:
                    repo = BaseRepository(session, Item)
                    got = await _outcome(repo.list(filters=filters, order_by="id"))
                    ids = got if isinstance(got, ValidationError) else [i.id for i in got]
                    _check(ids, expected, f"list {filters!r}")
                    count = await _outcome(repo.count(filters))
                    _check(count, expected if not isinstance(expected, list)
                           else len(expected), f"count {filters!r}")
                async with db.session() as session:
                    repo = BaseRepository(session, Item)
                    changed = await _outcome(repo.update_where(filters, name="changed"))
                    _check(changed, expected if not isinstance(expected, list)
                           else len(expected), f"update_where {filters!r}")
                    if isinstance(changed, int) and isinstance(expected, list):
                        rows = await repo.list(filters={"name": "changed"}, order_by="id")
                        assert [i.id for i in rows] == expected
                    await session.rollback()
                async with db.session() as session:
                    repo = BaseRepository(session, Item)
                    deleted = await _outcome(repo.delete_where(filters))
                    _check(deleted, expected if not isinstance(expected, list)
                           else len(expected), f"delete_where {filters!r}")
                    if isinstance(deleted, int) and isinstance(expected, list):
                        left = [i.id for i in await repo.list(order_by="id")]
                        assert left == [row["id"] for row in ITEMS if row["id"] not in expected]
                    await session.rollback()

            r.run(body)

        case()


def test_hostile_json_keys_and_values(backend: str, db_url: str) -> None:
    """``data__filter`` with generated keys and values, alone and beside a plain filter."""
    keys = st.sampled_from(["color", "secret", "n", "missing", "0"]) | _hostile_text()
    values = st.sampled_from(["c1", "s3", "4", "c9"]) | _hostile_text(20)
    with runner(backend, db_url) as r:

        @scaled(1)
        @given(key=keys, value=values, with_qty=st.booleans())
        @example(key="color'='x' OR 1=1 OR 'a", value="nope", with_qty=True)  # #18 item 1
        def case(key: str, value: str, with_qty: bool) -> None:
            expected = json_reference(key, value, backend)
            if expected is not None and "\x00" in value:
                expected = _UNKNOWN  # type: ignore[assignment]
            filters: dict[str, Any] = {"data__filter": {key: value}}
            if with_qty:
                filters["qty__gte"] = 2
                if isinstance(expected, list):
                    expected = [i for i in expected if i >= 2]

            async def body(db: DatabaseManager) -> None:
                async with db.session() as session:
                    repo = BaseRepository(session, Item)
                    got = await _outcome(repo.list(filters=filters, order_by="id"))
                    ids = got if isinstance(got, ValidationError) else [i.id for i in got]
                    _check(ids, expected, f"list {filters!r}")
                    count = await _outcome(repo.count(filters))
                    _check(count, expected if not isinstance(expected, list)
                           else len(expected), f"count {filters!r}")
                    deleted = await _outcome(repo.delete_where(filters))
                    _check(deleted, expected if not isinstance(expected, list)
                           else len(expected), f"delete_where {filters!r}")
                    await session.rollback()

            r.run(body)

        case()


def test_hostile_orderings_and_field_names(backend: str, db_url: str) -> None:
    """``order_by`` entries, prefetch names and the field names of writes."""
    orderings = st.lists(st.sampled_from(["id", "-id", "name", "-qty", "price"])
                         | _hostile_text(20), min_size=1, max_size=3)
    with runner(backend, db_url) as r:

        @scaled(1)
        @given(order=orderings, field=_hostile_text(20), value=filter_values)
        def case(order: list[str], field: str, value: Any) -> None:
            valid = {"id", "-id", "name", "-qty", "price"}

            def key(row: dict[str, Any]) -> tuple[Any, ...]:
                parts: list[Any] = []
                for name in order:
                    sign = -1 if name.startswith("-") else 1
                    column = _column(row, name.lstrip("-"))
                    parts.append(column * sign if sign < 0 else column)
                return (*parts, row["id"])

            expected = ([row["id"] for row in sorted(ITEMS, key=key)]
                        if all(o in valid for o in order) else None)

            async def body(db: DatabaseManager) -> None:
                async with db.session() as session:
                    repo = BaseRepository(session, Item)
                    got = await _outcome(repo.list(order_by=order))
                    ids = got if isinstance(got, ValidationError) else [i.id for i in got]
                    _check(ids, expected, f"order_by {order!r}")
                    prefetch = await _outcome(repo.list(prefetch=[field]))
                    assert isinstance(prefetch, InvalidFilterError), prefetch
                    for write in (repo.update_where({"id": 1}, **{field: value}),
                                  repo.update(1, **{field: value}),
                                  repo.update_many([{"id": 1, field: value}]),
                                  repo.upsert({"id": 1, "name": "x"}, conflict=[field]),
                                  repo.create({"id": 9, "name": "x", field: value})):
                        refused = await _outcome(write)
                        assert isinstance(refused, ValidationError), (field, refused)
                    await session.rollback()

            r.run(body)

        case()


@pytest.mark.parametrize("lookup", ["__icontains", "__startswith", "", "__in"])
def test_hostile_values_match_literally(backend: str, db_url: str, lookup: str) -> None:
    """A stored name full of SQL syntax is found by exactly its own text, nothing else."""
    with runner(backend, db_url) as r:

        @scaled(0.2)
        @given(name=_hostile_text(60).filter(lambda s: "\x00" not in s and 0 < len(s) <= 200))
        def case(name: str) -> None:
            async def body(db: DatabaseManager) -> None:
                async with db.session() as session:
                    repo = BaseRepository(session, Item)
                    await repo.update_where({"id": 2}, name=name)
                    value: Any = [name] if lookup == "__in" else name
                    found = await repo.list(filters={f"name{lookup}": value}, order_by="id")
                    assert 2 in [i.id for i in found]
                    if lookup in ("", "__in"):
                        assert [i.id for i in found] == [2]
                    await session.rollback()

            r.run(body)

        case()


_MARK = "zq'x\x01"
_SHAPES: list[Any] = [_MARK, [_MARK], (_MARK, _MARK), {_MARK: _MARK}, {"color": _MARK},
                      {f"color__{_MARK}": 1}, {f"{_MARK}__in": [1]}]


@pytest.mark.parametrize("model", [Item, Owner, Part], ids=lambda m: m.__name__)
async def test_no_filter_renders_caller_text_into_the_sql(items: DatabaseManager,
                                                          model: type[Any]) -> None:
    """Every Tortoise filter of the model with values of every shape: whatever our check
    lets through, Tortoise's statement holds none of the caller's text (only bind
    parameters). Before #18 the JSON ``__filter`` key was pasted into it."""
    async with items.session() as session:
        repo = BaseRepository(session, model)
        checked = 0
        for key in sorted(model._meta.filters):
            for value in _SHAPES:
                try:
                    queryset = repo._where({key: value}, include_deleted=False)
                    sql = queryset.sql()
                except ValidationError:
                    continue  # refused before any SQL: fine
                except Exception:  # noqa: S112 - Tortoise cannot build it: no text sent
                    continue
                checked += 1
                assert "zq" not in sql, (key, value, sql)
        assert checked > 20


# -- relation paths ------------------------------------------------------------------------------

_HOPS = {"Item": ("owner", "Owner"), "Owner": ("items", "Item")}


def _follow(root: str, hops: int) -> tuple[str, bool]:
    """The key of ``hops`` relation steps from ``root`` (ending in ``__name``), and whether
    our check must refuse it: a to-many step back to the root's table after the first."""
    parts, model, refused = [], root, False
    for hop in range(hops):
        name, model = _HOPS[model]
        parts.append(name)
        refused = refused or (name == "items" and hop > 0 and root == "Item")
    return "__".join([*parts, "name"]), refused


def _path_reference(root: str, hops: int, value: str) -> list[int]:
    """The ids of ``root`` rows that reach a row named ``value`` in ``hops`` steps."""
    owners = {1: "ann", 2: "bob"}
    items = {row["id"]: (row["name"], row["owner_id"]) for row in ITEMS}

    def reach(kind: str, ids: set[int], left: int) -> set[str]:
        if left == 0:
            return {items[i][0] for i in ids} if kind == "Item" else {owners[i] for i in ids}
        if kind == "Item":
            return reach("Owner", {items[i][1] for i in ids}, left - 1)
        return reach("Item", {i for i, (_, o) in items.items() if o in ids}, left - 1)

    rows = items if root == "Item" else owners
    return sorted(i for i in rows if value in reach(root, {i}, hops))


def test_relation_paths_work_or_are_refused(backend: str, db_url: str) -> None:
    """Paths back and forth over a relation: the right rows, or InvalidFilterError up front
    (Tortoise 1.1.9 fails on a to-many step back to the root's table), and the session
    usable afterwards."""
    with runner(backend, db_url) as r:

        @scaled(0.5)
        @given(root=st.sampled_from(["Item", "Owner"]), hops=st.integers(1, 5),
               value=st.sampled_from(["ann", "bob", "item1", "item3", "nobody"]))
        def case(root: str, hops: int, value: str) -> None:
            key, refused = _follow(root, hops)
            expected = None if refused else _path_reference(root, hops, value)
            model = Item if root == "Item" else Owner

            async def body(db: DatabaseManager) -> None:
                async with db.session() as session:
                    repo = BaseRepository(session, model)
                    got = await _outcome(repo.list(filters={key: value}, order_by="id"))
                    ids = got if isinstance(got, ValidationError) else [i.id for i in got]
                    _check(ids, expected, f"{root} {key}={value!r}")
                    count = await _outcome(repo.count({key: value}))
                    _check(count, expected if expected is None else len(expected), key)
                    assert await repo.count() > 0  # no rollback needed

            r.run(body)

        case()

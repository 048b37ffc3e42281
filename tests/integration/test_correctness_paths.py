"""Issue 11, items 3-6 and 8-14: the repository's fast paths give Tortoise's answers, and no
raw exception leaves its public methods (one translation point, aegis_tortoise._translate)."""

from __future__ import annotations

import datetime as dt
import inspect
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

import pytest
from tortoise.expressions import F, Subquery

from aegis_tortoise import (
    BaseRepository,
    DatabaseManager,
    DuplicateEntityError,
    ServiceException,
    TransactionError,
    ValidationError,
)
from tests.conftest import fresh_manager
from tests.integration.correctness_models import (
    CORRECTNESS_MODELS,
    Clock,
    Defaulted,
    Keyed,
    Member,
    Ranked,
    Short,
    Typed,
)
from tests.integration.test_repository_support import PolicyRepository, UserRepository


@pytest.fixture(name="corr")
async def corr_fixture(db_url: str, backend: str) -> AsyncIterator[DatabaseManager]:
    async for manager in fresh_manager(db_url, backend, CORRECTNESS_MODELS):
        yield manager


async def _ours(call: Awaitable[Any], field: str | None = None) -> ValidationError:
    """``call`` raises this library's ValidationError (naming ``field``, if given)."""
    with pytest.raises(ValidationError) as info:
        await call
    if field is not None:
        assert info.value.details.get("field") == field, info.value.details
    return info.value


# -- item 3 ------------------------------------------------------------------------------------


async def test_update_never_stores_a_timestamp_in_an_auto_now_time_field(
        corr: DatabaseManager, backend: str) -> None:
    # Tortoise 1.1.9 cannot save such a model itself (Clock.create fails binding the naive
    # time it makes); update() may fail the same way, with our error, but never store a
    # value nobody can read back.
    async with corr.session() as session:
        at = "'01:02:03'" if backend == "sqlite" else "'01:02:03+00'"
        await session.execute(f"INSERT INTO corr_clock (name, at) VALUES ('a', {at})")
        repo = BaseRepository(session, Clock)
        (clock,) = await repo.list()
        try:
            updated = await repo.update(clock.id, name="b")
        except ValidationError:
            updated = None
        again = await Clock.get(id=clock.id).using_db(session.connection)  # readable
        assert type(again.at) is dt.time
        assert again.name == ("a" if updated is None else "b")
        assert updated is None or updated.at == again.at


# -- item 4 ------------------------------------------------------------------------------------


async def test_update_refuses_values_the_field_cannot_hold(corr: DatabaseManager) -> None:
    async with corr.session() as session:
        repo = BaseRepository(session, Typed)
        row = await repo.create({"label": "x"})
        await _ours(repo.update(row.id, token="nope"), "token")
        await _ours(repo.update(row.id, day="garbage"), "day")
        await _ours(repo.create({"token": "nope"}))
        stored = await repo.get(row.id)  # nothing stored, and the session is still usable
        assert (stored.token, stored.day) == (None, None)
        done = await repo.update(row.id, token=str(uuid.UUID(int=7)), day="2024-02-03")
        assert done is not None
        assert (done.token, done.day) == (uuid.UUID(int=7), dt.date(2024, 2, 3))


# -- item 5 ------------------------------------------------------------------------------------


async def test_one_shot_iterables_are_read_once(corr: DatabaseManager) -> None:
    async with corr.session() as session:
        repo = BaseRepository(session, Ranked)
        made = await repo.create_many([{"code": c, "rank": i} for i, c in enumerate("abc")])
        ids = [made[0].id, made[2].id]
        page = await repo.paginate(filters={"id__in": map(int, ids)})
        assert (page.total, sorted(r.id for r in page.items)) == (2, sorted(ids))
        page = await repo.paginate(filters={"id__in": (i for i in ids), "code__icontains": ""})
        assert (page.total, len(page.items)) == (2, 2)
        got = await repo.list(filters={"code__icontains": ""}, order_by=iter(["code"]))
        assert [r.code for r in got] == ["a", "b", "c"]
        got = await repo.list(order_by=iter(["-code"]))
        assert [r.code for r in got] == ["c", "b", "a"]


async def test_a_one_shot_prefetch_is_done(db: DatabaseManager) -> None:
    async with db.session() as session:
        user = await UserRepository(session).create({"email": "p@x.io", "name": "P"})
        await PolicyRepository(session).create({"user_id": user.id, "title": "t"})
        for call in (UserRepository(session).list(prefetch=iter(["policies"])),
                     UserRepository(session).list(prefetch=iter(["policies"]),
                                                  filters={"name__icontains": "p"})):
            (found,) = await call
            assert [p.title for p in found.policies] == ["t"]
        page = await UserRepository(session).paginate(prefetch=iter(["policies"]))
        assert [p.title for p in page.items[0].policies] == ["t"]


# -- item 6 ------------------------------------------------------------------------------------


async def test_list_and_paginate_honour_meta_ordering(corr: DatabaseManager) -> None:
    async with corr.session() as session:
        repo = BaseRepository(session, Ranked)
        await repo.create_many([{"code": c, "rank": r} for c, r in (("a", 2), ("b", 9),
                                                                     ("c", 5))])
        want = [r.code for r in await Ranked.all().using_db(session.connection)]
        assert want == ["b", "c", "a"]
        assert [r.code for r in await repo.list()] == want
        assert [r.code for r in (await repo.paginate()).items] == want
        assert [r.code for r in await repo.list(filters={"code__in": ["a", "c"]})] == ["c", "a"]
        assert [r.code for r in await repo.list(order_by="code")] == ["a", "b", "c"]


# -- item 8 ------------------------------------------------------------------------------------


async def test_expression_filter_values_give_tortoises_answer(corr: DatabaseManager) -> None:
    async with corr.session() as session:
        repo = BaseRepository(session, Ranked)
        await repo.create_many([{"code": c, "rank": r, "low": lo}
                                for c, r, lo in (("a", 1, 5), ("b", 7, 2), ("c", 4, 4))])
        cases: list[dict[str, Any]] = [
            {"rank__gt": F("low")}, {"rank": F("low")},
            {"rank": Subquery(Ranked.filter(code="b").values("rank"))},
            {"id__in": Subquery(Ranked.filter(rank__gte=4).values("id"))},
        ]
        for filters in cases:
            want = [r.code for r in await Ranked.filter(**filters).order_by("code")
                    .using_db(session.connection)]
            got = [r.code for r in await repo.list(filters=filters, order_by="code")]
            assert got == want, filters
            assert await repo.count(filters) == len(want), filters
            page = await repo.paginate(filters=filters, order_by="code")
            assert (page.total, [r.code for r in page.items]) == (len(want), want), filters


# -- item 9 ------------------------------------------------------------------------------------


async def test_create_many_returns_the_stored_database_defaults(corr: DatabaseManager) -> None:
    async with corr.session() as session:
        repo = BaseRepository(session, Defaulted)
        one = await repo.create({"title": "one"})
        many = await repo.create_many([{"title": "a"}, {"title": "b", "level": 8}])
        assert [(d.status, d.level) for d in [one, *many]] == [("open", 3), ("open", 3),
                                                              ("open", 8)]
        stored = await repo.get_by_ids([d.id for d in many])
        assert [(d.status, d.level) for d in stored] == [("open", 3), ("open", 8)]


# -- items 10 and 12 ----------------------------------------------------------------------------


async def test_tortoise_validation_and_conversion_errors_are_ours(corr: DatabaseManager) -> None:
    async with corr.session() as session:
        repo = BaseRepository(session, Typed)
        row = await repo.create({"label": "x", "ip": "10.0.0.1"})
        bad_instance = Typed(label="y")
        bad_instance.price = object()  # type: ignore[assignment]
        calls: list[Awaitable[Any]] = [
            # item 10: a field validator, bad JSON
            repo.create({"ip": "nope"}), repo.create_many([{"ip": "nope"}]),
            repo.update(row.id, ip="nope"), repo.get_or_create(label="z", defaults={"ip": "x"}),
            repo.list(filters={"ip": "nope"}), repo.count({"ip": "nope"}),
            repo.create({"data": "{bad"}), repo.update(row.id, data="{bad"),
            repo.create_many([{"data": "{bad"}]),
            # item 12: values a field cannot convert
            repo.update(row.id, price="abc"), repo.update(row.id, price=object()),
            repo.update(row.id, token=12), repo.list(filters={"price": "abc"}),
            repo.list(filters={"qty": "many"}),
            repo.count({"price__gt": object()}),
            repo.paginate(filters={"qty": "many"}), repo.create(bad_instance),
            repo.create({"price": object()}), repo.create_many([{"price": object()}]),
        ]
        for call in calls:
            error = await _ours(call)
            assert not isinstance(error.__cause__, ServiceException) or error.__cause__
        assert (await repo.get(row.id)).ip == "10.0.0.1"
        assert await repo.count() == 1


async def test_every_public_method_goes_through_the_translation_point() -> None:
    for name, method in vars(BaseRepository).items():
        if not name.startswith("_") and inspect.iscoroutinefunction(method):
            assert getattr(method, "__aegis_translated__", False), name


async def test_plain_tortoise_calls_keep_tortoises_exceptions(corr: DatabaseManager) -> None:
    from tortoise.exceptions import ValidationError as TortoiseValidationError

    async with corr.session():
        with pytest.raises(TortoiseValidationError):
            await Typed.create(ip="nope")


# -- item 11 -----------------------------------------------------------------------------------


async def test_bad_primary_keys_give_one_error_everywhere(corr: DatabaseManager) -> None:
    async with corr.session() as session:
        short = BaseRepository(session, Short)
        await short.create({"code": "abc", "label": "l"})
        keyed = BaseRepository(session, Keyed)
        calls: list[Callable[[BaseRepository[Any], Any], Awaitable[Any]]] = [
            lambda r, k: r.get_by_id(k), lambda r, k: r.get(k),
            lambda r, k: r.update(k, label="x"), lambda r, k: r.delete(k),
            lambda r, k: r.exists(k), lambda r, k: r.get_by_ids([k]),
        ]
        for call in calls:
            await _ours(call(short, "toolong"), "code")
            await _ours(call(keyed, 5), "id")
            await _ours(call(keyed, "not-a-uuid"), "id")
        assert (await short.get("abc")).label == "l"


# -- item 13 -----------------------------------------------------------------------------------


async def test_out_of_range_integers_and_lone_surrogates(corr: DatabaseManager) -> None:
    huge = 2**63
    async with corr.session() as session:
        repo = BaseRepository(session, Typed)
        await repo.create({"label": "x"})
        for call in (repo.get_by_id(huge), repo.delete(huge), repo.list(skip=huge),
                     repo.list(filters={"qty": huge}), repo.count({"qty__gt": huge}),
                     repo.create({"qty": huge}), repo.list(filters={"label": "\ud800"}),
                     repo.count({"label": "\ud800"}), repo.create({"label": "\ud800"})):
            await _ours(call)
        assert await repo.count() == 1


# -- item 14 -----------------------------------------------------------------------------------


async def test_duplicates_name_the_model_field_not_the_column(corr: DatabaseManager) -> None:
    async with corr.session() as session:
        repo = BaseRepository(session, Member)
        await repo.create({"email": "a@x.io"})
        with pytest.raises(DuplicateEntityError) as info:
            await repo.create_many([{"email": "a@x.io"}])
        assert info.value.field == "email"
        assert info.value.details["field"] == "email"
        assert "'email'" in str(info.value)
        with pytest.raises(DuplicateEntityError) as info:
            await repo.update((await repo.create({"email": "b@x.io"})).id, email="a@x.io")
        assert info.value.field == "email"
        await session.rollback()


async def test_a_decimal_filter_still_uses_the_fast_path(corr: DatabaseManager) -> None:
    async with corr.session() as session:
        repo = BaseRepository(session, Typed)
        await repo.create_many([{"price": Decimal("1.50")}, {"price": Decimal("3")}])
        assert await repo.count({"price__gt": Decimal("2")}) == 1
        assert [t.price for t in await repo.list(order_by="price")] == [Decimal("1.50"),
                                                                         Decimal("3.00")]
        assert isinstance((await repo.list(filters={"price": 3}))[0], Typed)


async def test_conversion_errors_name_the_field_where_the_fast_path_converts(
        corr: DatabaseManager) -> None:
    async with corr.session() as session:
        repo = BaseRepository(session, Typed)
        row = await repo.create({"label": "x"})
        await _ours(repo.list(filters={"qty": "many"}), "qty")
        await _ours(repo.count({"qty__gte": object()}), "qty")
        await _ours(repo.update(row.id, price="abc"), "price")
        await _ours(BaseRepository(session, Clock).update(1, name=None), "name")
        await _ours(repo.update(row.id, ip="nope"), "ip")
        assert (await repo.get(row.id)).label == "x"


async def test_a_command_timeout_passes_unchanged(pg_database: str) -> None:
    # README, Failure behaviour: asyncio's TimeoutError, unchanged (neither a connection
    # error, which with_db_retry would retry, nor a bad value).
    async for manager in fresh_manager(pg_database, "postgres", CORRECTNESS_MODELS,
                                       command_timeout=0.3):
        async with manager.session() as first:
            row = await BaseRepository(first, Typed).create({"label": "x"})

        async def blocked(manager: DatabaseManager, row_id: int) -> None:
            async with manager.session() as second:
                with pytest.raises(TimeoutError):
                    await BaseRepository(second, Typed).update(row_id, label="b")

        async with manager.session() as first:
            await BaseRepository(first, Typed).update(row.id, label="a")  # holds the row lock
            # The server cancelled the statement, which aborted the second session's
            # transaction: its end says so rather than pretend to commit.
            with pytest.raises(TransactionError, match="answered COMMIT with ROLLBACK"):
                await blocked(manager, row.id)

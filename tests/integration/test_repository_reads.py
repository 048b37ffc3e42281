"""Reads through cached SQL (``aegis_tortoise._select``) against Tortoise's own QuerySet.

``list``/``count``/``paginate``/``get_by_ids`` send SQL built once per query shape for plain
filters, and build instances without ``_init_from_db``. Every case here is also run through
Tortoise's QuerySet on the same session; rows, their order, every attribute (time zone
included), the prefetched relations and the counts must be the same. Each case also names
which path it must take, checked against the statements sent.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tortoise.models import Model
from tortoise.query_utils import Prefetch
from tortoise.queryset import QuerySet

from aegis_tortoise import DatabaseManager, Session, ValidationError
from aegis_tortoise import _select as plain_sql
from aegis_tortoise._filters import filter_kwargs
from aegis_tortoise.examples.models import Policy, User
from tests.integration.test_repository_support import (
    HiddenUserRepository,
    PolicyRepository,
    UserRepository,
    recorded_sql,
)

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def _state(obj: Model) -> dict[str, Any]:
    """Everything an instance holds but its relation caches; tzinfo by type, not only value."""
    state = {k: v for k, v in vars(obj).items()
             if not k.startswith("_") or k in ("_partial", "_saved_in_db",
                                               "_custom_generated_pk", "_await_when_save")}
    state["tz"] = {k: repr(v.tzinfo) for k, v in state.items() if isinstance(v, datetime)}
    return state


@pytest.fixture
async def seeded(db: DatabaseManager) -> DatabaseManager:
    """30 users (every fifth soft-deleted, names repeating), policies for the first ten."""
    async with db.session() as session:
        users = await UserRepository(session).create_many(
            [{"email": f"u{i:02d}@x.io", "name": f"N{i % 4}",
              "deleted_at": T0 + timedelta(days=i) if i % 5 == 0 else None}
             for i in range(30)])
        await PolicyRepository(session).create_many(
            [{"user_id": u.id, "title": f"P{u.id}-{j}"} for u in users[:10] for j in range(3)])
    return db


PREFETCH_OBJECT = "<a Prefetch object>"  # built in the test: it needs an initialised model


def _prefetch(prefetch: Any) -> Any:
    if prefetch == PREFETCH_OBJECT:
        return [Prefetch("policies", queryset=Policy.filter(title__endswith="-1"))]
    return prefetch


# (filters, order_by, skip, limit, prefetch, path on postgres, path on sqlite)
CASES: dict[str, tuple[Any, Any, int, int | None, Any, str, str]] = {
    "no filter": (None, None, 0, 100, None, "plain", "plain"),
    "IS NULL": ({"deleted_at": None}, "email", 0, 50, None, "plain", "plain"),
    "isnull False": ({"deleted_at__isnull": False}, "-email", 0, None, None, "plain", "plain"),
    "not_isnull": ({"deleted_at__not_isnull": True}, "name", 2, 5, None, "plain", "plain"),
    "equal + order desc": ({"name": "N1"}, ["-name", "-id"], 1, 3, None, "plain", "plain"),
    "range": ({"id__gte": 5, "id__lt": 20, "name__not": "x"}, "id", 0, 100, None,
              "queryset", "queryset"),
    "gt/lte": ({"id__gt": 3, "id__lte": 9}, "-id", 0, 100, None, "plain", "plain"),
    "datetime range": ({"deleted_at__gte": T0 + timedelta(days=10)}, "email", 0, 100, None,
                       "plain", "plain"),
    "IN": ({"id__in": [3, 1, 2, 29]}, "id", 0, 100, None, "plain", "queryset"),
    "IN empty": ({"id__in": []}, "id", 0, 100, None, "queryset", "queryset"),
    "offset only": ({"deleted_at": None}, "email", 7, None, None, "plain", "plain"),
    "limit 0": (None, "id", 0, 0, None, "plain", "plain"),
    "text lookup": ({"email__icontains": "U1"}, "email", 0, 100, None, "queryset", "queryset"),
    "across a relation": ({"policies__title": "P1-0"}, None, 0, 100, None,
                          "queryset", "queryset"),
    "prefetch": ({"id__lte": 12}, "id", 0, 100, "policies", "plain", "queryset"),
    "prefetch none found": ({"id__gte": 20}, "id", 0, 100, ["policies"], "plain", "queryset"),
    "prefetch object": ({"id__lte": 3}, "id", 0, 100, PREFETCH_OBJECT, "queryset", "queryset"),
}


def _reference(session: Session, filters: Any, order_by: Any, skip: int, limit: int | None,
               *, prefetch: Any = None) -> QuerySet[User]:
    """The same query as Tortoise's QuerySet, written out by hand."""
    ordering = [order_by] if isinstance(order_by, str) else list(order_by or [])
    if not any(o.lstrip("-") in ("email", "id") for o in ordering):
        ordering.append("id")
    queryset = User.filter(**filter_kwargs(User, filters)).using_db(session.connection)
    if "policies__title" in (filters or {}):
        queryset = queryset.distinct()
    queryset = queryset.order_by(*ordering).offset(skip)
    if limit is not None:
        queryset = queryset.limit(limit)
    if prefetch:
        queryset = queryset.prefetch_related(*([prefetch] if isinstance(prefetch, str)
                                               else prefetch))
    return queryset


def _used_plain_sql(session: Session, sql: list[str]) -> bool:
    columns = plain_sql.row_plan(User, frozenset(session.connection.executor_class.DB_NATIVE))
    return any(s.startswith(f"SELECT {columns.columns_sql} FROM") for s in sql)


@pytest.mark.parametrize("case", list(CASES))
async def test_list_matches_the_queryset(seeded: DatabaseManager, backend: str,
                                         case: str) -> None:
    filters, order_by, skip, limit, prefetch, on_pg, on_sqlite = CASES[case]
    async with seeded.session() as session:
        prefetch = _prefetch(prefetch)
        repo = UserRepository(session)
        async with recorded_sql(session) as sql:
            got = await repo.list(skip, limit, filters, order_by, prefetch=prefetch)
        want = await _reference(session, filters, order_by, skip, limit, prefetch=prefetch)
        expected_path = on_pg if backend == "postgres" else on_sqlite
        assert _used_plain_sql(session, sql) == (expected_path == "plain"), sql
        assert [u.id for u in got] == [u.id for u in want]
        assert [_state(u) for u in got] == [_state(u) for u in want]
        if prefetch:
            for mine, theirs in zip(got, want, strict=True):
                assert sorted(map(_state, mine.policies), key=lambda s: s["id"]) == sorted(
                    map(_state, theirs.policies), key=lambda s: s["id"])
        if case not in ("across a relation", "limit 0"):
            assert await repo.count(filters) == await _reference(
                session, filters, None, 0, None).count()
    if case == "prefetch":
        assert sum(len(u.policies) for u in got) == 30


async def test_loaded_instances_behave_like_fetched_ones(seeded: DatabaseManager) -> None:
    async with seeded.session() as session:
        repo = UserRepository(session)
        [user] = await repo.list(limit=1, filters={"email": "u01@x.io"}, prefetch="policies")
        assert repr(user) == repr(await User.get(id=user.id).using_db(session.connection))
        assert [p.title for p in user.policies] == ["P2-0", "P2-1", "P2-2"]
        user.name = "Changed"
        await user.save(using_db=session.connection)
        assert (await repo.get(user.id)).name == "Changed"
        policy = user.policies[0]
        assert (await policy.user.using_db(session.connection)).id == user.id  # type: ignore[attr-defined]
        page = await repo.paginate(page=2, page_size=4, filters={"deleted_at": None},
                                   order_by="email", prefetch="policies")
        assert (page.total, [u.email for u in page.items]) == (
            24, ["u06@x.io", "u07@x.io", "u08@x.io", "u09@x.io"])
        assert [len(u.policies) for u in page.items] == [3, 3, 3, 3]
        assert [u.email for u in await repo.get_by_ids([5, 3, 99, 1])] == [
            "u04@x.io", "u02@x.io", "u00@x.io"]


async def test_hidden_soft_deleted_rows(seeded: DatabaseManager) -> None:
    async with seeded.session() as session:
        repo = HiddenUserRepository(session)
        assert await repo.count() == 24
        assert await repo.count(include_deleted=True) == 30
        # query() ANDs its own IS NULL with the caller's IS NOT NULL: nothing matches.
        assert await repo.list(filters={"deleted_at__isnull": False}) == []
        assert await repo.count({"deleted_at__not_isnull": True}) == 0
        assert len(await repo.list(filters={"deleted_at__isnull": False},
                                   include_deleted=True)) == 6
        assert [u.id for u in await repo.get_by_ids([1, 2, 6])] == [2]  # 1 and 6 are deleted


async def test_an_overridden_query_is_honoured(seeded: DatabaseManager) -> None:
    class OnlyN1(UserRepository):
        def query(self, *, include_deleted: bool = False) -> QuerySet[User]:
            return super().query(include_deleted=include_deleted).filter(name="N1")

    async with seeded.session() as session:
        repo = OnlyN1(session)
        assert {u.name for u in await repo.list()} == {"N1"}
        assert await repo.count() == 8
        assert [u.id for u in await repo.get_by_ids([1, 2, 6])] == [2, 6]


async def test_bad_filter_values_are_validation_errors(seeded: DatabaseManager,
                                                       backend: str) -> None:
    async with seeded.session() as session:
        repo = UserRepository(session)
        for filters in ({"id": "abc"}, {"id__in": [1, "abc"]}, {"id__gt": "x"}):
            with pytest.raises(ValidationError, match=r"abc|'x'"):
                await repo.list(filters=filters)
            with pytest.raises(ValidationError, match=r"abc|'x'"):
                await repo.count(filters)
        assert await repo.count() == 30  # the session is still usable
        if backend == "postgres":
            with pytest.raises(ValidationError, match="int32"):
                await repo.list(filters={"id__gt": 2**40})


async def test_policies_by_owner(seeded: DatabaseManager, backend: str) -> None:
    async with seeded.session() as session:
        repo = PolicyRepository(session)
        owner = await User.get(email="u01@x.io").using_db(session.connection)
        mine = await repo.list(filters={"user_id": owner.id}, order_by="-title")
        assert [p.title for p in mine] == ["P2-2", "P2-1", "P2-0"]
        assert [p.id for p in await repo.list(filters={"user": owner}, order_by="-title")] == [
            p.id for p in mine]  # a relation given as an object: the QuerySet path
        by_owner = await repo.list(limit=4, order_by=["user__email", "-title"])  # QuerySet
        assert [p.title for p in by_owner] == ["P1-2", "P1-1", "P1-0", "P2-2"]
        assert await repo.count({"user_id__in": [owner.id, 3]}) == 6

"""Repository filters: validation before any SQL, IS NULL, lookups, literal search terms."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from tortoise.expressions import Q

from aegis_tortoise import (
    DatabaseConnectionError,
    DatabaseManager,
    InvalidFilterError,
    ValidationError,
)
from tests.integration.test_repository_support import (
    HiddenUserRepository,
    PolicyRepository,
    UserRepository,
    recorded_sql,
)

BAD_CALLS: dict[str, Callable[[UserRepository], Awaitable[Any]]] = {
    "unknown field": lambda r: r.list(filters={"nmae": "x"}),
    "unknown lookup": lambda r: r.list(filters={"name__like": "x"}),
    "unknown related field": lambda r: r.list(filters={"policies__titel": "x"}),
    "lookup on relation": lambda r: r.count(filters={"policies__nope__icontains": "x"}),
    "None with a lookup": lambda r: r.count(filters={"name__icontains": None}),
    "count": lambda r: r.count({"emial": "x"}),
    "paginate": lambda r: r.paginate(filters={"bogus": 1}),
    "order_by": lambda r: r.list(order_by="-nmae"),
    "order_by list": lambda r: r.list(order_by=["name", "created"]),
    "order_by reverse relation": lambda r: r.list(order_by="policies"),
    "paginate order_by": lambda r: r.paginate(order_by="bogus"),
    "prefetch": lambda r: r.list(prefetch=["polices"]),
    "get_or_create": lambda r: r.get_or_create(emial="x"),
    "get prefetch": lambda r: r.get_by_id(1, prefetch=["nope"]),
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
async def test_invalid_filter_raises_before_any_sql(db: DatabaseManager, case: str) -> None:
    async with db.session() as session:
        repo = UserRepository(session)
        async with recorded_sql(session) as sql:
            with pytest.raises(InvalidFilterError) as info:
                await BAD_CALLS[case](repo)
        assert sql == []  # not even BEGIN: the session's transaction never started
        assert not session.in_transaction
        assert isinstance(info.value, ValidationError)
        assert info.value.status_code == 400


async def test_error_names_the_key_and_lists_the_valid_fields(db: DatabaseManager) -> None:
    async with db.session() as session:
        repo = UserRepository(session)
        with pytest.raises(InvalidFilterError) as info:
            await repo.list(filters={"nmae": "x"})
        message = str(info.value)
        assert "'nmae'" in message
        for field in ("email", "name", "created_at", "deleted_at", "id"):
            assert field in message
        assert info.value.details["key"] == "nmae"
        assert "email" in info.value.details["valid_fields"]
        with pytest.raises(InvalidFilterError) as info:
            await repo.list(filters={"name__like": "x"})
        assert "'like'" in str(info.value)
        assert "icontains" in info.value.details["valid_lookups"]
        with pytest.raises(InvalidFilterError, match=r"'-nmae'.*email"):
            await repo.list(order_by="-nmae")


async def test_invalid_filter_needs_no_connection(db: DatabaseManager, backend: str,
                                                  request: pytest.FixtureRequest) -> None:
    """On PostgreSQL, kill the session's connection first: any SQL would fail."""
    if backend != "postgres":
        pytest.skip("needs a server connection to kill")
    pg_server = request.getfixturevalue("pg_server")
    async with db.session() as session:
        repo = UserRepository(session)
        pid = session.connection._connection.get_server_pid()
        admin = await asyncpg.connect(pg_server.admin_url)
        try:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        finally:
            await admin.close()
        with pytest.raises(InvalidFilterError):
            await repo.list(filters={"nope": 1})
        with pytest.raises(InvalidFilterError):
            await repo.count({"name__nope": 1})
        with pytest.raises(InvalidFilterError):
            await repo.paginate(order_by="nope")
        with pytest.raises(DatabaseConnectionError):  # the control: SQL does fail now
            await repo.count({"name": "x"})


async def test_valid_filters(db: DatabaseManager) -> None:
    async with db.session() as session:
        repo = UserRepository(session)
        ann, bob, cid = await repo.create_many([
            {"email": "ann@x.io", "name": "Ann"},
            {"email": "bob@y.io", "name": "Bob"},
            {"email": "cid@y.io", "name": "Cid"},
        ])
        await repo.soft_delete(cid.id)
        await PolicyRepository(session).create_many([
            {"user": ann, "title": "Home"}, {"user": bob, "title": "Car"}])

        async def emails(**kwargs: Any) -> list[str]:
            return [u.email for u in await repo.list(**kwargs)]

        assert await emails(filters={"deleted_at": None}) == ["ann@x.io", "bob@y.io"]
        assert await emails(filters={"deleted_at__not": None}) == ["cid@y.io"]
        assert await emails(filters={"deleted_at__isnull": False}) == ["cid@y.io"]
        assert await emails(filters={"email__endswith": "@y.io"}) == ["bob@y.io", "cid@y.io"]
        assert await emails(filters={"name__in": ["Ann", "Cid"]}) == ["ann@x.io", "cid@y.io"]
        assert await emails(filters={"id__in": [bob.id]}) == ["bob@y.io"]
        assert await emails(filters={"name__not": "Ann"}) == ["bob@y.io", "cid@y.io"]
        assert await emails(filters={"created_at__gte": ann.created_at}) == [
            "ann@x.io", "bob@y.io", "cid@y.io"]
        assert await emails(filters={"policies__title": "Car"}) == ["bob@y.io"]
        assert await emails(filters={"policies__title__icontains": "HOM"}) == ["ann@x.io"]
        assert await emails(filters={"policies": None}) == ["cid@y.io"]
        assert await emails(filters={"pk": ann.id}) == ["ann@x.io"]
        policies = PolicyRepository(session)
        assert [p.title for p in await policies.list(filters={"user": bob})] == ["Car"]
        assert [p.title for p in await policies.list(filters={"user_id": ann.id})] == ["Home"]
        assert [p.title for p in await policies.list(filters={"user__email": "ann@x.io"})] == [
            "Home"]
        assert [p.title for p in await policies.list(order_by="-user__name")] == ["Car", "Home"]
        assert await policies.count({"user__deleted_at": None}) == 2
        assert await policies.count({"user": None}) == 0
        assert await policies.count({"user__deleted_at__not": None}) == 0


# -- search terms with LIKE wildcards and quotes match literally ----------------------------

NAMES = [
    "100% pure", "1000 pure", "a_b", "axb", "back\\slash", "backslash", "it's", "its",
    'say "hi"', "say hi", "50%_off\\now", "50x off now", "'; drop table users; --",
]
TERMS = ["%", "_", "\\", "'", '"', "0%", "a_b", "k\\s", "%_", "%_off\\", "'; drop table users; --",
         "' OR '1'='1", "\\%", "\\_", "%%"]
LOOKUPS: dict[str, Callable[[str, str], bool]] = {
    "contains": lambda name, term: term in name,
    "icontains": lambda name, term: term.lower() in name.lower(),
    "startswith": lambda name, term: name.startswith(term),
    "istartswith": lambda name, term: name.lower().startswith(term.lower()),
    "endswith": lambda name, term: name.endswith(term),
    "iendswith": lambda name, term: name.lower().endswith(term.lower()),
    "iexact": lambda name, term: name.lower() == term.lower(),
}


async def test_search_terms_match_literally(db: DatabaseManager) -> None:
    async with db.session() as session:
        repo = UserRepository(session)
        await repo.create_many([{"email": f"s{i}@x.io", "name": n} for i, n in enumerate(NAMES)])
        for lookup, matches in LOOKUPS.items():
            for term in TERMS:
                expected = sorted(n for n in NAMES if matches(n, term))
                found = await repo.list(filters={f"name__{lookup}": term}, limit=None)
                assert sorted(u.name for u in found) == expected, (lookup, term)
                assert await repo.count({f"name__{lookup}": term}) == len(expected)
        # Q objects through query() escape the same way.
        both = await repo.query().filter(Q(name__icontains="0%") | Q(email__icontains="_")).all()
        assert sorted(u.name for u in both) == ["100% pure", "50%_off\\now"]
    async with db.session() as session:
        result = await session.execute("SELECT count(*) FROM users")
        assert result.scalar_one() == len(NAMES)  # nothing was dropped or added


async def test_hidden_repository_combines_filters_with_soft_delete(db: DatabaseManager) -> None:
    async with db.session() as session:
        users = await UserRepository(session).create_many(
            [{"email": f"h{i}@x.io", "name": "H"} for i in range(3)])
        hidden = HiddenUserRepository(session)
        await hidden.soft_delete(users[0].id)
        assert await hidden.count({"name": "H"}) == 2
        assert await hidden.count({"name": "H"}, include_deleted=True) == 3
        assert await hidden.count({"deleted_at__isnull": False}) == 0
        assert await hidden.count({"deleted_at__isnull": False}, include_deleted=True) == 1


async def test_filter_across_a_to_many_relation_returns_each_row_once(db: DatabaseManager) -> None:
    async with db.session() as session:
        ann, bob = await UserRepository(session).create_many(
            [{"email": "ann@x.io", "name": "Ann"}, {"email": "bob@x.io", "name": "Bob"}])
        await PolicyRepository(session).create_many(
            [{"user": ann, "title": f"Auto {i}"} for i in range(3)]
            + [{"user": bob, "title": "Home"}])
        repo = UserRepository(session)
        filters = {"policies__title__startswith": "Auto"}
        assert [u.id for u in await repo.list(filters=filters)] == [ann.id]
        assert await repo.count(filters) == 1
        page = await repo.paginate(filters={"policies__title__icontains": "o"}, order_by="-name")
        assert (page.total, [u.id for u in page.items]) == (2, [bob.id, ann.id])
        assert await repo.count({"policies__title__startswith": "Auto", "name": "Bob"}) == 0

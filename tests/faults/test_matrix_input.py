"""Reliability matrix (issue 6), rows 1-6 and 17: bad input and bad configuration.

One test per row; rows marked * run on sqlite and PostgreSQL. Every test that writes ends
with the same nothing-lost check (tests/faults/ledger.py).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import tortoise.exceptions

from aegis_tortoise import (
    ConfigurationError,
    DatabaseManager,
    DuplicateEntityError,
    InvalidFilterError,
    Session,
    ValidationError,
    with_db_retry,
)
from aegis_tortoise.examples.models import Policy, User
from tests.conftest import PgServer, count_rows
from tests.faults.conftest import FAULT_MODELS, MakeDb, Target
from tests.faults.ledger import Ledger, Outcome, check_nothing_lost
from tests.faults.proxy import FaultProxy
from tests.integration.test_repository_support import (
    PolicyRepository,
    UserRepository,
    recorded_sql,
)


async def _baseline(db: DatabaseManager, ledger: Ledger, units: int = 2) -> None:
    """Committed units, which the failures that follow must leave as they are."""
    for _ in range(units):
        await ledger.attempt(db, ledger.new(3))


async def test_row01_unique_violation(target: Target, make_db: MakeDb) -> None:
    """Row 1*: a unique violation is DuplicateEntityError, after one attempt; nothing of
    the unit is written and the committed rows are unchanged."""
    db = await make_db(target.url)
    ledger = Ledger()
    await _baseline(db, ledger)
    async with db.session() as session:
        await UserRepository(session).create({"email": "taken@x.io", "name": "First"})

    async def duplicate(session: Session, part: int) -> None:
        if part == 1:
            await UserRepository(session).create({"email": "taken@x.io", "name": "Again"})

    unit = ledger.new(3)
    with pytest.raises(DuplicateEntityError) as info:
        await ledger.attempt(db, unit, duplicate)
    assert unit.attempts == 1
    assert (info.value.entity_type, info.value.field, info.value.status_code) == (
        "User", "email", 409)
    assert info.value.__cause__ is not None
    assert await count_rows(db) == 1
    found = await check_nothing_lost(db, ledger, pg_dsn=target.dsn)
    assert (found.acked, found.rolled_back, found.rows) == (2, 1, 6)


async def test_row02_retry_never_repeats_a_duplicate(target: Target, make_db: MakeDb) -> None:
    """Row 2*: with_db_retry around a duplicate insert calls the function once."""
    db = await make_db(target.url)
    ledger = Ledger()
    await _baseline(db, ledger)
    async with db.session():
        await User.create(email="dup@x.io", name="First")
    calls = 0

    async def duplicate(session: Session, part: int) -> None:
        await User.create(email="dup@x.io", name="Again")  # plain Tortoise, no repository

    @with_db_retry(max_attempts=5, backoff_factor=0)
    async def create() -> None:
        nonlocal calls
        calls += 1
        await ledger.attempt(db, unit, duplicate)

    unit = ledger.new(2)
    # A plain Tortoise call raises Tortoise's own error, inside a session too (API.md).
    with pytest.raises(tortoise.exceptions.IntegrityError):
        await create()
    assert calls == 1
    assert unit.attempts == 1
    assert await count_rows(db) == 1
    await check_nothing_lost(db, ledger, pg_dsn=target.dsn)


BAD_FILTERS: dict[str, Callable[[UserRepository], Awaitable[Any]]] = {
    "unknown filter field": lambda r: r.list(filters={"nmae": "x"}),
    "unknown lookup": lambda r: r.count({"name__like": "x"}),
    "unknown order_by field": lambda r: r.list(order_by="-nmae"),
    "unknown order_by in a list": lambda r: r.paginate(order_by=["name", "bogus"]),
}


async def test_row03_invalid_filter_runs_no_sql(target: Target, backend_proxy: FaultProxy | None,
                                                make_db: MakeDb) -> None:
    """Row 3*: an unknown filter or order_by field raises InvalidFilterError before any SQL
    (not even the session's BEGIN) and without another connection: on PostgreSQL the proxy
    sees no new connection and not one byte, and the pool holds just the session's."""
    url = backend_proxy.url_for(str(target.database)) if backend_proxy else target.url
    db = await make_db(url)
    ledger = Ledger()
    await _baseline(db, ledger)
    async with db.session() as session:
        repo = UserRepository(session)
        before = _wire(db, backend_proxy)
        async with recorded_sql(session) as sql:
            for name, call in BAD_FILTERS.items():
                with pytest.raises(InvalidFilterError):
                    await call(repo)
                assert not session.in_transaction, name
        assert sql == []
        assert _wire(db, backend_proxy) == before
    print(f"row 3 ({target.backend}): {len(BAD_FILTERS)} invalid filters, 0 statements, "
          f"wire before/after {before}")
    await check_nothing_lost(db, ledger, pg_dsn=target.dsn)


def _wire(db: DatabaseManager, proxy: FaultProxy | None) -> tuple[int, ...]:
    """Connections and bytes that reached the server (PostgreSQL); () on sqlite."""
    if proxy is None:
        return ()
    pool = db._client()._pool
    return (proxy.stats.accepted, proxy.stats.bytes_up, pool.get_size())


BAD_VALUES: dict[str, Callable[[Session], Awaitable[Any]]] = {
    '"abc" for an int (repository)':
        lambda s: PolicyRepository(s).create({"user_id": "abc", "title": "t"}),
    '"abc" for an int (raw SQL)':
        lambda s: s.execute("SELECT id FROM users WHERE id = :id", {"id": "abc"}),
    '"1 OR 1=1" as an id (repository delete)': lambda s: UserRepository(s).delete("1 OR 1=1"),
    '"1 OR 1=1" as an id (repository update)':
        lambda s: UserRepository(s).update("1 OR 1=1", name="pwned"),
    '"1 OR 1=1" as an id (raw SQL)':
        lambda s: s.execute("DELETE FROM users WHERE id = :id", {"id": "1 OR 1=1"}),
    "2**40 into an int column (repository)":
        lambda s: PolicyRepository(s).create({"user_id": 2**40, "title": "t"}),
    "2**40 into an int column (raw SQL)":
        lambda s: s.execute("UPDATE policies SET user_id = :v", {"v": 2**40}),
    "NUL byte (repository)":
        lambda s: UserRepository(s).create({"email": "nul\x00@x.io", "name": "N"}),
    "NUL byte (raw SQL)": lambda s: s.execute("UPDATE users SET name = :v", {"v": "a\x00b"}),
    "over-long string (repository)":
        lambda s: UserRepository(s).create({"email": "long@x.io", "name": "x" * 101}),
    "over-long string (raw SQL)":
        lambda s: s.execute("UPDATE users SET name = :v", {"v": "x" * 101}),
    "None into non-null (repository)":
        lambda s: UserRepository(s).create({"email": None, "name": "N"}),
    "None into non-null (repository update)":
        lambda s: UserRepository(s).update(1, name=None),
    "None into non-null (raw SQL)":
        lambda s: s.execute("UPDATE users SET name = :v", {"v": None}),
}


async def test_row04_bad_values_are_validation_errors(pg_target: Any, make_db: MakeDb) -> None:
    """Row 4: bad values ("abc" for an int, "1 OR 1=1" as an id, 2**40 into an int column,
    a NUL byte, an over-long string, None into a non-null column), through the repository and
    raw SQL, each raise ValidationError (400, documented); nothing is written or changed."""
    db = await make_db(pg_target.url())
    ledger = Ledger()
    await _baseline(db, ledger)
    async with db.session():
        user = await User.create(email="keep@x.io", name="Keep")
        await Policy.create(user=user, title="Keep")
    raised: dict[str, str] = {}
    for name, bad in BAD_VALUES.items():

        async def write_bad(session: Session, part: int, bad: Any = bad) -> None:
            if part == 0:
                await bad(session)

        with pytest.raises(ValidationError) as info:
            await ledger.attempt(db, ledger.new(2), write_bad)
        assert info.value.status_code == 400, name
        assert not isinstance(info.value, InvalidFilterError), name
        raised[name] = type(info.value.__cause__).__name__
    print("row 4: ValidationError for", len(raised), "bad values; causes:", raised)
    async with db.session() as session:
        rows = (await session.execute(
            "SELECT u.id, u.name, p.user_id, p.title FROM users u JOIN policies p "
            "ON p.user_id = u.id")).fetchall()
    assert rows == [(user.id, "Keep", user.id, "Keep")]
    found = await check_nothing_lost(db, ledger, pg_dsn=pg_target.dsn)
    assert found.rolled_back == len(BAD_VALUES)


NAMES = ["100% pure", "1000 pure", "a_b", "axb", "it's", "its", "back\\slash", "backslash",
         "'; DROP TABLE users; --", "Robert'); DELETE FROM users; --"]
SEARCHES = ["%", "_", "\\", "'", "0%", "a_b", "k\\s", "' OR '1'='1", "'; DROP TABLE users; --",
            "%' OR name LIKE '%", "); DELETE FROM users; --"]


async def test_row05_injection_and_wildcards_match_literally(target: Target,
                                                             make_db: MakeDb) -> None:
    """Row 5*: injection and LIKE-wildcard strings in searches match literally (repository
    lookups and :name parameters); the row count is unchanged."""
    db = await make_db(target.url)
    ledger = Ledger()
    await _baseline(db, ledger)
    async with db.session() as session:
        await UserRepository(session).create_many(
            [{"email": f"n{i}@x.io", "name": n} for i, n in enumerate(NAMES)])
    async with db.session() as session:
        repo = UserRepository(session)
        for term in SEARCHES:
            expected = sorted(n for n in NAMES if term.lower() in n.lower())
            found = await repo.list(filters={"name__icontains": term}, limit=None)
            assert sorted(u.name for u in found) == expected, term
            assert await repo.count({"name__startswith": term}) == sum(
                n.startswith(term) for n in NAMES), term
            assert await repo.count({"name": term}) == NAMES.count(term), term
            result = await session.execute("SELECT count(*) FROM users WHERE name = :n",
                                           {"n": term})
            assert result.scalar_one() == NAMES.count(term), term
    assert await count_rows(db) == len(NAMES)
    await check_nothing_lost(db, ledger, pg_dsn=target.dsn)


PASSWORD = "pw-s3cr3t-do-not-show"


def _bad_configs(server: PgServer) -> dict[str, tuple[str, str]]:
    """name: (URL, where it fails: "construct" or "first session")."""
    host_port = server.admin_url.split("@", 1)[1].split("/", 1)[0]
    return {
        "bad URL (no scheme separator)": (f"postgresql//postgres:{PASSWORD}@{host_port}/x",
                                          "construct"),
        "unknown scheme": (f"mysql://postgres:{PASSWORD}@{host_port}/x", "construct"),
        "non-numeric port": (f"postgresql://postgres:{PASSWORD}@127.0.0.1:54x2/postgres",
                             "construct"),
        "missing database": (f"postgresql://postgres:{PASSWORD}@{host_port}/aegis_no_such_db",
                             "first session"),
        "unknown role": (f"postgresql://aegis_no_such_role:{PASSWORD}@{host_port}/postgres",
                         "first session"),
    }


async def _first_use_with_retry(url: str) -> tuple[int, str, ConfigurationError]:
    """Make a manager and open its first session under with_db_retry.

    Returns the number of calls, the stage reached ("construct" or "first session") and the
    error raised.
    """
    calls = 0
    stage = ""
    managers: list[DatabaseManager] = []

    @with_db_retry(max_attempts=3, backoff_factor=0)
    async def first_use() -> None:
        nonlocal calls, stage
        calls += 1
        stage = "construct"
        db = DatabaseManager(url, models=FAULT_MODELS, pool_timeout=2)
        managers.append(db)
        stage = "first session"
        async with db.session() as session:
            await session.execute("SELECT 1")

    try:
        with pytest.raises(ConfigurationError) as info:
            await first_use()
    finally:
        for db in managers:
            await db.close()
    return calls, stage, info.value


async def test_row06_bad_configuration_fails_fast_and_hides_the_password(
    pg_server: PgServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Row 6: a bad URL, a non-numeric port, a missing database, an unknown role raise
    ConfigurationError at the latest at first use (URL errors already when the manager is
    made), are not retried, and no message, detail, chained error or log shows the password."""
    for name, (url, expected_stage) in _bad_configs(pg_server).items():
        caplog.clear()
        with caplog.at_level(logging.DEBUG):
            calls, stage, exc = await _first_use_with_retry(url)
        assert calls == 1, name
        assert stage == expected_stage, name
        texts = [caplog.text]
        error: BaseException | None = exc
        while error is not None:
            texts += [str(error), repr(error), json.dumps(getattr(error, "details", {}))]
            error = error.__cause__ or error.__context__
        assert not any(PASSWORD in text for text in texts), name
        print(f"row 6: {name}: ConfigurationError at {stage}: {exc.message[:70]}")


async def test_row17_create_many_with_a_duplicate_writes_none_of_the_batch(
    target: Target, make_db: MakeDb
) -> None:
    """Row 17*: create_many with a duplicate in the middle raises DuplicateEntityError and
    writes none of the batch; the session stays usable and its other work commits."""
    db = await make_db(target.url)
    ledger = Ledger()
    await _baseline(db, ledger)
    async with db.session():
        await User.create(email="existing@x.io", name="Existing")
    batch = [{"email": f"b{i}@x.io", "name": f"B{i}"} for i in range(100)]
    batch[50]["email"] = batch[10]["email"]
    errors: list[DuplicateEntityError] = []

    async def batch_in_the_middle(session: Session, part: int) -> None:
        if part == 1:
            with pytest.raises(DuplicateEntityError) as info:
                await UserRepository(session).create_many(batch)
            errors.append(info.value)

    unit = ledger.new(3)
    await ledger.attempt(db, unit, batch_in_the_middle)
    assert unit.outcome is Outcome.ACKED  # the rest of the session committed
    assert errors[0].field == "email"
    assert await count_rows(db) == 1  # none of the 100
    found = await check_nothing_lost(db, ledger, pg_dsn=target.dsn)
    assert found.acked == 3

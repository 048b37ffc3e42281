"""Review of #19: holes found by attacking the concurrency controls. Most tests failed before
their fix; the isolation-level, server-default-cache, first-statement-lock and advisory-key
tests pin behaviour the review checked and found right."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aegis_tortoise import (
    BaseRepository,
    ConcurrentUpdateError,
    DatabaseManager,
    EntityNotFoundError,
    InvalidFilterError,
    LockNotAvailableError,
    TransactionConflictError,
    TransactionError,
    ValidationError,
)
from aegis_tortoise._locks import advisory_key
from aegis_tortoise.examples.models import Policy, User
from tests.concurrency.models import Counter, Tally
from tests.conftest import fresh_manager

MODELS = ["tests.concurrency.models"]
BOTH = ["aegis_tortoise.examples.models", "tests.concurrency.models"]


@pytest.fixture
async def mdb(db_url: str, backend: str) -> AsyncIterator[DatabaseManager]:
    """The example models and the suite's on ``backend``."""
    async for manager in fresh_manager(db_url, backend, BOTH):
        yield manager


@pytest.fixture
async def pg_mdb(pg_database: str) -> AsyncIterator[DatabaseManager]:
    """The example models and the suite's on PostgreSQL."""
    async for manager in fresh_manager(pg_database, "postgres", BOTH):
        yield manager


async def _tally(mdb: DatabaseManager) -> int:
    async with mdb.session() as session:
        return (await BaseRepository(session, Tally).create({"value": 0})).id


# -- optimistic versions: every write of a versioned row raises its version -------------


async def test_update_where_raises_the_version(cdb: DatabaseManager) -> None:
    pk = await _tally(cdb)
    async with cdb.session() as session:
        repo = BaseRepository(session, Tally)
        read = await repo.get(pk)
        assert await repo.update_where({"id": pk}, value=5) == 1
        with pytest.raises(ConcurrentUpdateError):
            await repo.update(pk, value=read.value + 1, expected_version=read.version)
        assert (await repo.get(pk)).value == 5


async def test_update_where_refuses_to_set_the_version(cdb: DatabaseManager) -> None:
    pk = await _tally(cdb)
    async with cdb.session() as session:
        repo = BaseRepository(session, Tally)
        await repo.update(pk, value=1)
        with pytest.raises(ValidationError, match="version"):
            await repo.update_where({"id": pk}, version=1)
        assert (await repo.get(pk)).version == 2


@pytest.mark.parametrize("action", ["soft_delete", "restore"])
async def test_soft_delete_and_restore_raise_the_version(cdb: DatabaseManager,
                                                         action: str) -> None:
    pk = await _tally(cdb)
    async with cdb.session() as session:
        repo = BaseRepository(session, Tally)
        if action == "restore":
            await repo.soft_delete(pk)
        read = await repo.get(pk, include_deleted=True)
        changed = await getattr(repo, action)(pk)
        assert changed is not None
        assert changed.version == read.version + 1
        with pytest.raises(ConcurrentUpdateError):
            await repo.update(read, value=9)


async def test_soft_delete_where_raises_the_version(cdb: DatabaseManager) -> None:
    pk = await _tally(cdb)
    async with cdb.session() as session:
        repo = BaseRepository(session, Tally)
        read = await repo.get(pk)
        assert await repo.soft_delete_where({"id": pk}) == 1
        with pytest.raises(ConcurrentUpdateError):
            await repo.update(read, value=9)


class _HiddenTallies(BaseRepository[Tally]):
    hide_soft_deleted = True


async def test_versioned_update_many_behaves_as_update_many(cdb: DatabaseManager) -> None:
    """update_many of a versioned model keeps update_many's rules: an id named twice is a
    ValidationError (nothing written), a hidden (soft-deleted) row is skipped, untouched."""
    async with cdb.session() as session:
        repo = _HiddenTallies(session)
        one, two = await repo.create_many([{"value": 0}, {"value": 0}])
        with pytest.raises(ValidationError, match="twice"):
            await repo.update_many([{"id": one.id, "value": 1}, {"id": one.id, "value": 2}])
        assert (await repo.get(one.id)).version == 1
        await repo.soft_delete(two.id)
        hidden = await repo.get(two.id, include_deleted=True)
        updated = await repo.update_many([{"id": one.id, "value": 5}, {"id": two.id, "value": 5},
                                          {"id": two.id + 1, "value": 5}])
        assert [(row.id, row.value, row.version) for row in updated] == [(one.id, 5, 2)]
        assert await repo.update_many([{"id": two.id}]) == []
        assert await repo.update_many([{"id": two.id, "value": 6,
                                        "version": hidden.version}]) == []
        stored = await repo.get(two.id, include_deleted=True)
        assert (stored.value, stored.version) == (0, hidden.version)


async def test_versioned_upsert_checks_as_upsert(cdb: DatabaseManager) -> None:
    """A versioned upsert keeps upsert's checks, before any SQL: a conflict target that is
    no unique constraint, the same key twice in upsert_many, the version as an update field."""
    pk = await _tally(cdb)
    async with cdb.session() as session:
        repo = BaseRepository(session, Tally)
        with pytest.raises(ValidationError, match="unique"):
            await repo.upsert({"value": 0}, conflict=["value"], update=["value"])
        with pytest.raises(ValidationError, match="same id"):
            await repo.upsert_many([{"id": pk, "value": 1}, {"id": pk, "value": 2}],
                                   conflict=["id"], update=["value"])
        with pytest.raises(ValidationError, match="version"):
            await repo.upsert({"id": pk, "version": 1}, conflict=["id"], update=["version"])
        stored = await repo.get(pk)
        assert (stored.value, stored.version) == (0, 1)
        rows = await repo.upsert_many([{"id": pk, "value": 3}, {"id": pk + 1, "value": 4}],
                                      conflict=["id"], update=["value"])
        assert [(row.value, row.version, created) for row, created in rows] == [
            (3, 2, False), (4, 1, True)]


async def test_upsert_of_a_stale_loaded_instance_is_refused(cdb: DatabaseManager) -> None:
    """upsert(entity) with an instance that was read checks the version it was read at, as
    update(entity, ...) does: a stale one is refused, not written over the newer row."""
    pk = await _tally(cdb)
    async with cdb.session() as session:
        repo = BaseRepository(session, Tally)
        seen = await repo.get(pk)
        await repo.update(pk, value=10)  # someone else: version 2
        seen.value -= 3
        with pytest.raises(ConcurrentUpdateError):
            await repo.upsert(seen, conflict=["id"], update=["value"])
        with pytest.raises(ConcurrentUpdateError):
            await repo.upsert_many([seen], conflict=["id"], update=["value"])
        assert (await repo.get(pk)).value == 10
        fresh = await repo.get(pk)
        fresh.value = 11
        row, created = await repo.upsert(fresh, conflict=["id"], update=["value"])
        assert (row.value, row.version, created) == (11, 3, False)
        new = Tally(id=pk, value=12)  # not loaded: no version to check
        row, created = await repo.upsert(new, conflict=["id"], update=["value"])
        assert (row.value, row.version, created) == (12, 4, False)


async def test_upsert_of_a_row_inserted_meanwhile_raises_its_version(
        pg_mdb: DatabaseManager) -> None:
    """The second upsert found no row (the first one's insert was not committed yet), then
    its INSERT waited for it: the row it then updates must get version 2, not keep 1."""
    async def second() -> tuple[Tally, bool]:
        async with pg_mdb.session() as session:
            return await BaseRepository(session, Tally).upsert(
                {"id": 7, "value": 2}, conflict=["id"], update=["value"])

    async with pg_mdb.session() as session:
        row, created = await BaseRepository(session, Tally).upsert(
            {"id": 7, "value": 1}, conflict=["id"], update=["value"])
        assert created
        assert row.version == 1
        task = asyncio.create_task(second())
        await asyncio.sleep(0.3)  # its INSERT now waits for this transaction
        assert not task.done()
    row, created = await task
    assert not created
    assert (row.value, row.version) == (2, 2)
    async with pg_mdb.session() as session:
        stored = await BaseRepository(session, Tally).get(7)
        assert (stored.value, stored.version) == (2, 2)


# -- row locks ---------------------------------------------------------------------------


@pytest.mark.parametrize("of", [["nonexistent"], ['users" ; DROP TABLE users; --'],
                                ["policies", "nope"]])
async def test_of_names_unknown_to_the_read_are_invalid_filters(mdb: DatabaseManager,
                                                                of: list[str]) -> None:
    async with mdb.session() as session:
        repo = BaseRepository(session, Policy)
        with pytest.raises(InvalidFilterError, match="of"):
            await repo.list(for_update=True, of=of)
        with pytest.raises(InvalidFilterError, match="of"):
            await repo.get_by_id(1, for_update=True, of=of)
        assert await BaseRepository(session, User).count() == 0


async def test_for_update_through_a_join_locks_the_models_rows(mdb: DatabaseManager) -> None:
    """A filter on a relation is a LEFT OUTER JOIN: a plain FOR UPDATE is refused by
    PostgreSQL there; the repository locks its own table's rows (named or not by of=)."""
    async with mdb.session() as session:
        user = await BaseRepository(session, User).create({"name": "a", "email": "a@x.org"})
        await BaseRepository(session, Policy).create({"user": user, "title": "p"})
    async with mdb.session() as session:
        repo = BaseRepository(session, Policy)
        for of in (None, [Policy], ["policies"], Policy):
            rows = await repo.list(filters={"user__name": "a"}, for_update=True, of=of)
            assert [row.title for row in rows] == ["p"]
        rows = await repo.list(filters={"title": "p"}, for_update=True, of=[Policy])
        assert len(rows) == 1
        assert await repo.get_by_id(rows[0].id, for_update="nowait", of=["policies"])
        with pytest.raises(InvalidFilterError, match="of"):
            await repo.list(filters={"user__name": "a"}, for_update=True, of=[User])
        users = BaseRepository(session, User)  # a to-many filter: a subquery
        assert len(await users.list(filters={"policies__title": "p"}, for_update=True)) == 1


async def test_for_update_with_prefetch(mdb: DatabaseManager) -> None:
    async with mdb.session() as session:
        user = await BaseRepository(session, User).create(
            {"name": "a", "email": "a@x.org"})
    async with mdb.session() as session:
        repo = BaseRepository(session, User)
        found = await repo.get_by_id(user.id, for_update=True, prefetch=["policies"])
        assert found is not None
        assert found.name == "a"
        assert len(await repo.get_by_ids([user.id], for_update=True, prefetch=["policies"])) == 1


async def test_get_by_ids_locks_many_chunks_in_key_order(pg_mdb: DatabaseManager) -> None:
    """Over 10,000 ids run as several statements: the chunks too go in key order, so two
    sessions locking the same ids given in opposite orders do not deadlock."""
    n = 20_001
    async with pg_mdb.session() as session:
        await BaseRepository(session, Counter).create_many({"id": i} for i in range(1, n + 1))

    async def lock(ids: list[int]) -> int:
        async with pg_mdb.session() as session:
            rows = await BaseRepository(session, Counter).get_by_ids(ids, for_update=True)
            await asyncio.sleep(0.05)
            return len(rows)

    ids = list(range(1, n + 1))
    await asyncio.gather(lock([1]), lock([2]))  # two connections open: both start at once
    for _ in range(3):
        assert await asyncio.gather(lock(ids), lock(ids[::-1])) == [n, n]


async def test_readonly_session_refuses_for_update(mdb: DatabaseManager) -> None:
    async with mdb.session() as session:
        await BaseRepository(session, Counter).create({"id": 1})
    with pytest.raises(TransactionError, match="readonly"):
        async with mdb.session(readonly=True) as session:
            await BaseRepository(session, Counter).get_by_id(1, for_update=True)
    with pytest.raises(TransactionError, match="readonly"):
        async with mdb.session(readonly=True) as session:
            await session.advisory_lock("k")
    async with mdb.session() as session:
        assert (await BaseRepository(session, Counter).get(1)).value == 0


async def test_for_update_read_first_holds_its_lock(pg_mdb: DatabaseManager) -> None:
    async with pg_mdb.session() as session:
        await BaseRepository(session, Counter).create({"id": 1})
    async with pg_mdb.session() as holder:  # the lock is the session's first statement
        assert await BaseRepository(holder, Counter).get_by_id(1, for_update=True)
        assert await holder.advisory_lock("k", wait=False)
        with pytest.raises(LockNotAvailableError):
            async with pg_mdb.session() as other:
                await BaseRepository(other, Counter).get_by_id(1, for_update="nowait")
    async with pg_mdb.session() as holder:
        assert await holder.advisory_lock("k", wait=False)  # first statement: held till the end
        async with pg_mdb.session() as other:
            assert not await other.advisory_lock("k", wait=False)


async def test_for_update_through_the_queryset_first_holds_its_lock(
        pg_mdb: DatabaseManager) -> None:
    """The QuerySet path (a prefetch) as a session's first statement: it begins the
    transaction, so the lock is held until the session ends (not released by autocommit)."""
    async with pg_mdb.session() as session:
        user = await BaseRepository(session, User).create({"name": "a", "email": "a@x.org"})
    async with pg_mdb.session() as holder:
        found = await BaseRepository(holder, User).get_by_id(user.id, for_update=True,
                                                             prefetch=["policies"])
        assert found is not None
        assert holder.in_transaction
        with pytest.raises(LockNotAvailableError):
            async with pg_mdb.session() as other:
                await BaseRepository(other, User).list(filters={"name": "a"},
                                                       for_update="nowait")


async def test_advisory_key_is_pinned_and_computable_in_sql(pg_mdb: DatabaseManager) -> None:
    """The documented hash, pinned (another process, version or service computes the same
    key; Python's hash() would not), and the same in SQL as the docs say."""
    assert advisory_key("nightly-report") == 7440995589958059143
    assert advisory_key("é") == 5375421630974772051
    assert advisory_key(-(2**63)) == -(2**63)
    with pytest.raises(ValidationError, match="64 bits"):
        advisory_key(2**63)
    with pytest.raises(ValidationError):
        advisory_key(True)
    async with pg_mdb.session() as session:
        held = await session.advisory_lock("nightly-report")
        assert held
        in_sql = await session.execute(
            "SELECT ('x' || substr(encode(sha256(convert_to(:k, 'UTF8')), 'hex'), 1, 16))"
            "::bit(64)::bigint", {"k": "nightly-report"})
        key = in_sql.scalar()
        assert key == advisory_key("nightly-report")
        locks = await session.execute(
            "SELECT (classid::bigint << 32) | objid::bigint FROM pg_locks "
            "WHERE locktype = 'advisory' AND pid = pg_backend_pid()")
        assert locks.scalar() == key


async def test_get_skip_locked_of_a_locked_row_is_no_404(pg_mdb: DatabaseManager) -> None:
    """get(id, for_update="skip_locked") of a row another transaction holds: the row exists,
    so LockNotAvailableError (409), not EntityNotFoundError (404); a missing row is a 404."""
    async with pg_mdb.session() as session:
        await BaseRepository(session, Counter).create({"id": 1})
    async with pg_mdb.session() as holder:
        await BaseRepository(holder, Counter).get(1, for_update=True)
        async with pg_mdb.session() as other:
            repo = BaseRepository(other, Counter)
            assert await repo.get_by_id(1, for_update="skip_locked") is None
            with pytest.raises(LockNotAvailableError, match="locked"):
                await repo.get(1, for_update="skip_locked")
            with pytest.raises(EntityNotFoundError):
                await repo.get(2, for_update="skip_locked")
            assert (await repo.get(1)).value == 0  # the session goes on


async def test_lock_not_available_says_the_transaction_is_aborted(pg_mdb: DatabaseManager) -> None:
    async with pg_mdb.session() as session:
        await BaseRepository(session, Counter).create({"id": 1})
    async with pg_mdb.session() as holder:
        await BaseRepository(holder, Counter).get_by_id(1, for_update=True)
        async with pg_mdb.session() as other:
            with pytest.raises(LockNotAvailableError, match="aborted the transaction") as caught:
                await BaseRepository(other, Counter).get_by_id(1, for_update="nowait")
            assert caught.value.status_code == 409
            with pytest.raises(TransactionError, match="LockNotAvailableError"):
                await BaseRepository(other, Counter).count()
            await other.rollback()
            assert await BaseRepository(other, Counter).count() == 1


async def test_nowait_and_try_advisory_lock_do_not_wait(cdbs: list[DatabaseManager]) -> None:
    """for_update="nowait" and advisory_lock(wait=False) answer at once on both backends:
    LockNotAvailableError, and False; the other session goes on (sqlite: the write lock is
    held by another connection, whose busy wait would have taken 5 s)."""
    first, second = cdbs[0], cdbs[-1]
    async with first.session() as session:
        await BaseRepository(session, Counter).create({"id": 1})
    async with first.session() as holder:
        await BaseRepository(holder, Counter).get(1, for_update=True)
        assert await holder.advisory_lock("k")
        started = time.monotonic()
        async with second.session() as other:
            assert await other.advisory_lock("k", wait=False) is False
            if other.dialect == "sqlite":  # no transaction began: the session goes on
                assert (await BaseRepository(other, Counter).get(1)).value == 0
        with pytest.raises(LockNotAvailableError):
            async with second.session() as other:
                await BaseRepository(other, Counter).get(1, for_update="nowait")
        assert time.monotonic() - started < 1
    async with second.session() as other:  # the busy timeout is back: a plain write waits
        assert await other.advisory_lock("k", wait=False) is True
        await BaseRepository(other, Counter).update(1, value=1)


async def test_sqlite_write_lock_wait_ends_in_a_clear_retryable_error(tmp_path: Path) -> None:
    """sqlite, for_update=True while another connection holds the write lock: after the busy
    timeout, a TransactionConflictError (retryable) that says what was waited for and how
    long, not sqlite's bare "database is locked"."""
    url = f"sqlite:///{tmp_path / 'c.db'}"
    async for first in fresh_manager(url, "sqlite", MODELS):
        second = DatabaseManager(url, models=MODELS, busy_timeout=200)
        try:
            async with first.session() as session:
                await BaseRepository(session, Counter).create({"id": 1})
            async with first.session() as holder:
                await BaseRepository(holder, Counter).get(1, for_update=True)
                with pytest.raises(TransactionConflictError, match=r"write lock .*0\.2 s"):
                    async with second.session() as other:
                        await BaseRepository(other, Counter).get(1, for_update=True)
            async with second.session() as other:  # free again: it takes the lock
                assert (await BaseRepository(other, Counter).get(1, for_update=True)).id == 1
        finally:
            await second.close()


# -- isolation levels --------------------------------------------------------------------


async def _level(session: object) -> str:
    result = await session.execute("SHOW transaction_isolation")  # type: ignore[attr-defined]
    return str(result.scalar())


def test_isolation_from_the_environment_with_every_other_option_given(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """DATABASE_ISOLATION_LEVEL is the default whatever other options are passed (it was
    ignored when all of them were)."""
    monkeypatch.setenv("DATABASE_ISOLATION_LEVEL", "Serializable")
    manager = DatabaseManager("sqlite:///:memory:", models=[], pool_size=1, max_overflow=0,
                              pool_timeout=5, pool_recycle=0, echo=False)
    assert manager.isolation_level == "serializable"
    assert manager.session().isolation == "serializable"
    given = DatabaseManager("sqlite:///:memory:", models=[], isolation_level="read committed")
    assert given.isolation_level == "read committed"


async def test_isolation_applies_after_commit_and_does_not_leak(pg_database: str) -> None:
    async for db in fresh_manager(pg_database, "postgres", MODELS, pool_size=1,
                                  max_overflow=0):
        async with db.session(isolation="serializable") as session:
            assert await _level(session) == "serializable"
            await session.commit()
            assert await _level(session) == "serializable"
            await session.execute("SET default_transaction_isolation = 'repeatable read'")
            await session.commit()
        async with db.session() as session:  # the same (only) connection
            assert await _level(session) == "read committed"
            await session.commit()
            session.set_isolation("repeatable read")
            assert await _level(session) == "repeatable read"
        async with db.session() as session:
            assert await _level(session) == "read committed"


async def test_server_default_after_set_on_a_pooled_connection(pg_database: str) -> None:
    """A session that changed default_transaction_isolation with SET reads in its transaction
    (the cached default is stale for it); the connection is reset before the next session,
    for which the cached READ COMMITTED is true again."""
    async for db in fresh_manager(pg_database, "postgres", MODELS, pool_size=1,
                                  max_overflow=0):
        async with db.session() as session:
            await BaseRepository(session, Counter).create({"id": 1})
        async with db.session() as session:  # fills the cache: read committed, lazy
            await BaseRepository(session, Counter).get(1)
            assert not session.in_transaction
        for statement in ("SET default_transaction_isolation = 'serializable'",
                          "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL "
                          "SERIALIZABLE"):
            async with db.session() as session:
                await session.execute(statement)
                await session.commit()
                await BaseRepository(session, Counter).get(1)
                assert session.in_transaction
                assert await _level(session) == "serializable"
            async with db.session() as session:  # the same connection, reset
                await BaseRepository(session, Counter).get(1)
                assert not session.in_transaction
                assert await _level(session) == "read committed"

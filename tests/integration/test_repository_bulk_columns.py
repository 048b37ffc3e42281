"""create_many's column-at-a-time path (``_bulk.prepare_batch``) against the row path.

The column path runs for plain rows; relations given as objects, explicit primary keys and
database defaults take the row path. Either way the rows stored, the instances returned and
the errors raised must be the ones ``create()`` gives row by row.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import uuid
from decimal import Decimal

import pytest

from aegis_tortoise import BaseRepository, DatabaseManager, ValidationError
from aegis_tortoise.examples.models import User
from tests.integration.test_repository_models import Gadget, Ticket
from tests.integration.test_repository_support import (
    UserRepository,
    gadgets_fixture,  # noqa: F401 - the gadgets fixture
    inserts,
    recorded_sql,
)

FIELDS = ("id", "email", "name", "created_at", "updated_at", "deleted_at")


def _state(user: User) -> tuple[object, ...]:
    return tuple(getattr(user, name) for name in FIELDS)


async def test_returned_instances_equal_the_stored_rows(db: DatabaseManager) -> None:
    rows = [{"email": f"c{i}@x.io", "name": f"C {i}"} for i in range(500)]
    async with db.session() as session:
        repo = UserRepository(session)
        users = await repo.create_many(rows)
        stored = await repo.get_by_ids([u.id for u in users])
        assert [_state(u) for u in users] == [_state(s) for s in stored]
        # Built like a fetched row: saved, complete, no pending async defaults.
        assert all(u._saved_in_db and not u._partial and u._await_when_save == {}
                   for u in users)
        assert len({id(u._await_when_save) for u in users}) == len(users)  # not shared
        # One timestamp for the whole batch, as one statement's now() would be.
        assert len({u.created_at for u in users}) == 1
        assert users[0].created_at == users[0].updated_at
        assert users[0].created_at.tzinfo is not None
        # The instances behave like any other: save and update work on them.
        users[3].name = "Renamed"
        await users[3].save(using_db=session.connection)
        assert (await repo.get_by_id(users[3].id)).name == "Renamed"  # type: ignore[union-attr]
        assert (await repo.update(users[4].id, name="Updated")).name == "Updated"
        assert await repo.count() == 500


async def test_callers_instances_are_filled_in_place(db: DatabaseManager) -> None:
    mine = [User(email="i1@x.io", name="One"), User(email="i2@x.io", name="Two")]
    async with db.session() as session:
        repo = UserRepository(session)
        users = await repo.create_many([mine[0], {"email": "d1@x.io", "name": "Dict"}, mine[1]])
        assert users[0] is mine[0]
        assert users[2] is mine[1]
        assert [u.id for u in users] == sorted(u.id for u in users)
        stored = {u.id: u for u in await repo.get_by_ids([u.id for u in users])}
        for user in users:
            assert _state(user) == _state(stored[user.id])


async def test_values_are_converted_and_checked_like_create(db: DatabaseManager) -> None:
    async with db.session() as session:
        repo = UserRepository(session)
        # A non-string value in a CharField is converted, as Model(name=12345) does.
        [user] = await repo.create_many([{"email": "n@x.io", "name": 12345}])
        assert user.name == "12345"
        assert (await repo.get_by_id(user.id)).name == "12345"  # type: ignore[union-attr]
        rows = [{"email": f"v{i}@x.io", "name": "ok"} for i in range(20)]
        rows[13]["name"] = "x" * 101  # max_length=100
        with pytest.raises(ValidationError, match=r"Invalid User\.name: Length of .* 101 > 100"
                           ) as info:
            await repo.create_many(rows)
        assert info.value.details["field"] == "name"
        with pytest.raises(ValidationError, match=r"Invalid User\.name") as one:
            await repo.create(rows[13])  # create() names it the same way
        assert one.value.details["field"] == "name"
        rows[13]["name"] = None
        with pytest.raises(ValidationError, match=r"missing required field\(s\): name"):
            await repo.create_many(rows)
        rows[13] = {"email": "v13@x.io"}  # the key left out altogether
        with pytest.raises(ValidationError, match=r"missing required field\(s\): name"):
            await repo.create_many(rows)
        rows[13] = {"email": "v13@x.io", "name": "ok", "nickname": "x"}
        with pytest.raises(ValidationError, match="unknown field 'nickname'"):
            await repo.create_many(rows)
        assert await repo.count() == 1  # nothing of the failed batches
        # A row whose deleted_at is set: the column is sent for every row then.
        async with recorded_sql(session) as sql:
            mixed = await repo.create_many([
                {"email": "a@x.io", "name": "A"},
                {"email": "b@x.io", "name": "B", "deleted_at": user.created_at}])
        assert [m.deleted_at for m in mixed] == [None, user.created_at]
        assert "deleted_at" in inserts(sql)[0]
        async with recorded_sql(session) as sql:
            await repo.create_many([{"email": "c@x.io", "name": "C", "deleted_at": None},
                                    {"email": "d@x.io", "name": "D"}])
        # NULL everywhere: sent (a server DEFAULT must not replace it), once, not as an array.
        assert '"deleted_at"' in inserts(sql)[0]
        if session.dialect == "postgres":
            assert inserts(sql)[0].count("[]") == 2  # email and name only
        stored = await repo.get_by_ids([m.id for m in mixed])
        assert [s.deleted_at for s in stored] == [None, user.created_at]


async def test_defaults_of_every_kind(gadgets: DatabaseManager) -> None:
    async with gadgets.session() as session:
        repo = BaseRepository(session, Gadget)
        single = await repo.create({"code": "single"})
        made = single.made_at
        many = await repo.create_many([
            {"code": "a"},
            {"code": "b", "qty": 7, "price": Decimal("2.50"), "data": {"k": [1]}},
            {"code": "c", "made_at": made},  # auto_now_add given: kept
        ])
        assert [g.qty for g in many] == [1, 7, 1]
        assert [g.price for g in many] == [Decimal("0"), Decimal("2.50"), Decimal("0")]
        assert all(isinstance(g.token, uuid.UUID) for g in many)
        assert len({g.token for g in [single, *many]}) == 4  # the factory ran per row
        assert many[2].made_at == made
        assert many[0].made_at == many[1].made_at != made
        assert len({g.changed_at for g in many}) == 1  # auto_now: the batch's timestamp
        stored = {g.code: g for g in await repo.list(limit=None)}
        for gadget in many:
            row = stored[gadget.code]
            assert (row.id, row.qty, row.price, row.token, row.data, row.made_at,
                    row.changed_at) == (gadget.id, gadget.qty, gadget.price, gadget.token,
                                        gadget.data, gadget.made_at, gadget.changed_at)


async def test_database_defaults_take_the_row_path(gadgets: DatabaseManager) -> None:
    async with gadgets.session() as session:
        repo = BaseRepository(session, Ticket)
        tickets = await repo.create_many([
            {"title": "a"},
            {"title": "b", "status": "closed", "note": None},
            Ticket(title="c", note="given"),
        ])
        assert all(t.id is not None for t in tickets)
        stored = {t.title: (t.status, t.note) for t in await repo.list(limit=None)}
        assert stored == {"a": ("open", "none"), "b": ("closed", None), "c": ("open", "given")}
        # The same rows without database defaults in play take the column path.
        again = await repo.create_many([{"title": "d", "status": "s", "note": None}])
        assert (await repo.get_by_id(again[0].id)).note is None  # type: ignore[union-attr]


async def test_batches_of_instances_only(db: DatabaseManager) -> None:
    async with db.session() as session:
        repo = UserRepository(session)
        first = await repo.create_many([User(email=f"o{i}@x.io", name="O") for i in range(5)])
        assert [u.id for u in first] == sorted({u.id for u in first})
        assert all(u._saved_in_db for u in first)
        with pytest.raises(ValidationError, match=r"already saved \(id="):
            await repo.create_many([User(email="p@x.io", name="P"), first[2]])
        keyed = [User(email="k1@x.io", name="K"), User(id=1000, email="k2@x.io", name="K")]
        assert [u.id for u in await repo.create_many(keyed)] == [first[-1].id + 1, 1000]
        assert await repo.count() == 7


async def test_cancelled_create_many_writes_nothing(db: DatabaseManager,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """Cancelled at any point (the INSERT runs in a task of its own while the instances are
    built): the batch is written whole or not at all, and no task is left behind."""
    outcomes = []
    for step, delay in enumerate((0, 0, 0.001, 0.003, 0.01, 0.03, 0.1, 2.0)):
        rows = [{"email": f"x{step}-{i}@x.io", "name": "X"} for i in range(10_000)]

        async def work(rows: list[dict[str, str]] = rows) -> None:
            async with db.session() as session:
                await UserRepository(session).create_many(rows)

        task = asyncio.create_task(work())
        for _ in range(step if delay == 0 else 0):
            await asyncio.sleep(0)
        await asyncio.sleep(delay)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        async with db.session() as session:
            written = await UserRepository(session).count({"email__startswith": f"x{step}-"})
        assert written in (0, 10_000)
        outcomes.append("cancelled" if task.cancelled() else "done")
        assert asyncio.all_tasks() == {asyncio.current_task()}
    gc.collect()
    assert "never retrieved" not in caplog.text
    assert "cancelled" in outcomes
    assert outcomes[-1] == "done"

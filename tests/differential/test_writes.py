"""Writes: create / create_many / update against ``Model.create`` / ``save`` on equal data.

Each example stores a generated data set, runs the write through the repository in a session,
takes a raw snapshot of every table, stores the same data set again and runs the write
through plain Tortoise. Where Tortoise succeeds, the repository must return the same instance
(every attribute, its type and time zone; keys, timestamps and callable defaults compared by
kind only) and store the same rows. Where Tortoise fails, the repository must raise our
``ValidationError`` / ``DuplicateEntityError`` and leave every table as it was.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tortoise.expressions import F
from tortoise.models import Model

from aegis_tortoise import BaseRepository
from tests.differential import strategies as s
from tests.differential.harness import (
    MODEL_OF_TABLE,
    Harness,
    Outcome,
    attempt,
    both_ways,
    check_ours,
    explain,
    harness,
    mask_rows,
    masked_fields,
    scaled,
    seed,
    values,
)
from tests.differential.models import Badge, Item, Owner, Tag

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def h(backend: str, db_url: str) -> Any:
    with harness(backend, db_url) as running:
        yield running


def same_tables(left: dict[str, Any], right: dict[str, Any], given: dict[str, Any],
                context: str, written: tuple[type[Model], frozenset[str]] | None = None) -> None:
    """Equal stored rows; ``written``: the written model and its masked fields."""
    for table, rows in left.items():
        model = MODEL_OF_TABLE[table]
        masked = masked_fields(model, given if model is Item else None)
        if written is not None and model is written[0]:
            masked = written[1]
        assert mask_rows(model, rows, masked) == mask_rows(model, right[table], masked), (
            f"{context}: stored {table} rows differ")


async def fresh(model: Any, pk: Any) -> Any:
    """The stored row of ``pk`` read through a new QuerySet."""
    return await model.filter(pk=pk).first()


async def read_back(h: Harness, obj: Model | None,
                    masked: frozenset[str]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """``obj``'s values and those of its row read again in a new session (None: no row)."""
    if obj is None:
        return None
    async with h.db.session():
        stored = await fresh(type(obj), obj.pk)
    return values(obj, masked), values(stored, masked)


def compare_write(context: str, repo: Outcome, ref: Outcome, *, before: dict[str, Any],
                  after_repo: dict[str, Any], after_ref: dict[str, Any],
                  given: dict[str, Any], invalid: bool = False,
                  written: tuple[type[Model], frozenset[str]] | None = None) -> None:
    if ref.ok and not repo.ok and invalid:
        # Tortoise stores some values it cannot hold (1.5 for a TimeDeltaField, "maybe" for a
        # BooleanField on save()); refusing them with our error is the repository's contract.
        check_ours(repo, f"{context} (Tortoise accepted invalid values)")
        assert after_repo == before, f"{context}: a failed call changed the database"
        return
    if ref.ok:
        assert repo.ok, (f"{context}: Tortoise stored {ref.value!r}, the repository raised "
                         f"{repo.error!r}")
        assert repo.value == ref.value, (
            f"{context}: returned instances differ {explain(repo.value, ref.value)}")
        same_tables(after_repo, after_ref, given, context, written)
    else:
        check_ours(repo, f"{context} (Tortoise raised {ref.error!r})")
        assert after_repo == before, f"{context}: a failed call changed the database"


def test_create(h: Harness) -> None:
    backend = h.backend

    @scaled(2)
    @given(data=s.datasets(backend, max_items=2),
           payload=s.item_payloads(backend, invalid=True, owners=3))
    def check(data: s.Dataset, payload: dict[str, Any]) -> None:
        masked = masked_fields(Item, payload)

        async def case() -> None:
            await seed(h, data)
            before = await h.snapshot()

            async def via_repo() -> Any:
                async with h.db.session() as session:
                    obj = await BaseRepository(session, Item).create(dict(payload))
                return await read_back(h, obj, masked)

            async def via_tortoise() -> Any:
                async with h.db.session():
                    obj = await Item.create(**payload)
                return await read_back(h, obj, masked)

            repo, after_repo, ref, after_ref = await both_ways(h, data, via_repo, via_tortoise)
            compare_write("create", repo, ref, before=before, after_repo=after_repo,
                          after_ref=after_ref, given=payload,
                          invalid=s.has_invalid(payload))

        h.run(case)

    check()


def test_create_many(h: Harness) -> None:
    backend = h.backend
    payloads = s.item_payloads(backend, invalid=True, owners=3)

    @scaled(2)
    @given(data=s.datasets(backend, max_items=2),
           rows=st.lists(payloads, min_size=1, max_size=4),
           as_instances=st.booleans())
    def check(data: s.Dataset, rows: list[dict[str, Any]], as_instances: bool) -> None:
        # A key given in only some rows is chosen at write time in the others.
        given = {k: 1 for row in rows for k in row if all(k in r for r in rows)}
        masked = masked_fields(Item, given)
        if len({frozenset(row) for row in rows}) > 1:
            # Rows with different key sets are inserted one statement per key set, so their
            # generated ids follow the groups, not the input order (a design choice of
            # create_many's row path): ids are compared through the stored rows only.
            masked |= {"id"}

        async def case() -> None:
            await seed(h, data)
            before = await h.snapshot()

            async def via_repo() -> Any:
                async with h.db.session() as session:
                    entities: list[Any] = [dict(row) for row in rows]
                    if as_instances:
                        try:
                            entities = [Item(**row) for row in rows]
                        except Exception:  # Model() itself refuses: the caller has no instances
                            entities = [dict(row) for row in rows]
                    made = await BaseRepository(session, Item).create_many(entities)
                async with h.db.session():
                    stored = [await fresh(Item, obj.pk) for obj in made]
                return ([values(obj, masked) for obj in made],
                        [values(obj, masked) for obj in stored])

            async def via_tortoise() -> Any:
                async with h.db.session():
                    made = [await Item.create(**row) for row in rows]
                async with h.db.session():
                    stored = [await fresh(Item, obj.pk) for obj in made]
                return ([values(obj, masked) for obj in made],
                        [values(obj, masked) for obj in stored])

            repo, after_repo, ref, after_ref = await both_ways(h, data, via_repo, via_tortoise)
            if ref.ok and len({"status" in row for row in rows}) == 1:
                # bulk_create stores the same rows as create() one by one (it refuses a batch
                # where only some rows give the db_default field).
                await seed(h, data)

                async def via_bulk() -> None:
                    async with h.db.session():
                        await Item.bulk_create([Item(**row) for row in rows])

                await via_bulk()
                same_tables(after_ref, await h.snapshot(), given, "bulk_create vs create")
            compare_write("create_many", repo, ref, before=before, after_repo=after_repo,
                          after_ref=after_ref, given=given,
                          invalid=any(map(s.has_invalid, rows)), written=(Item, masked))

        h.run(case)

    check()


def test_update(h: Harness) -> None:
    backend = h.backend

    @scaled(2)
    @given(data=s.datasets(backend, max_items=3), pick=st.integers(1, 5),
           payload=s.item_payloads(backend, invalid=True, owners=3, partial=True),
           as_kwargs=st.booleans())
    def check(data: s.Dataset, pick: int, payload: dict[str, Any], as_kwargs: bool) -> None:
        masked = masked_fields(Item, {"id": 1, "token": 1, "label": 1})

        async def case() -> None:
            await seed(h, data)
            before = await h.snapshot()

            async def via_repo() -> Any:
                async with h.db.session() as session:
                    repo = BaseRepository(session, Item)
                    # update(id, data=None, **fields): data=None or a dict given as data= is
                    # the payload by the documented signature, even though Item has a JSON
                    # field "data"; such payloads go as a dict (other values set the field).
                    keywords = as_kwargs and not (
                        "data" in payload and isinstance(payload["data"], dict | None))
                    obj = await (repo.update(pick, **payload) if keywords
                                 else repo.update(pick, dict(payload)))
                return await read_back(h, obj, masked)

            async def via_tortoise() -> Any:
                async with h.db.session():
                    obj = await Item.get_or_none(id=pick)
                    if obj is None:
                        return None
                    obj.update_from_dict(dict(payload))
                    await obj.save()
                async with h.db.session():
                    stored = await fresh(Item, obj.pk)
                # The repository returns the stored row (RETURNING); Tortoise's instance keeps
                # the values as given, so both sides are compared through a fresh read.
                return values(stored, masked), values(stored, masked)

            repo, after_repo, ref, after_ref = await both_ways(h, data, via_repo, via_tortoise)
            if ref.ok and ref.value is None and not repo.ok and s.has_invalid(payload):
                # No such row, and values Tortoise would refuse: the repository may check the
                # values first (before any SQL), then ours is the answer, or find no row.
                ref = Outcome(error=ValueError("invalid values"))
            compare_write("update", repo, ref, before=before, after_repo=after_repo,
                          after_ref=after_ref, given={},
                          invalid=s.has_invalid(payload))

        h.run(case)

    check()


def test_update_time_auto_now(h: Harness) -> None:
    """Badge.stamp is ``TimeField(auto_now=True)``: update() must store a time that reads back.

    Tortoise 1.1.9's own ``save()`` cannot write such a field (a naive time for TIMETZ, no time
    adapter on sqlite), so the reference is the stored row read through a fresh QuerySet.
    """
    backend = h.backend

    @scaled(0.5)
    @given(data=s.datasets(backend, max_items=3), title=st.none() | s.texts(20))
    def check(data: s.Dataset, title: str | None) -> None:
        async def case() -> None:
            await seed(h, data)
            for badge in data.badges:
                if backend == "sqlite":
                    # No time adapter: Tortoise 1.1.9 cannot write a TimeField on sqlite (its
                    # own save() fails alike); ours, and nothing written.
                    before = await h.snapshot()

                    async def via_repo(code: str = badge["code"]) -> Any:
                        async with h.db.session() as session:
                            return await BaseRepository(session, Badge).update(code, title=title)

                    check_ours(await attempt(via_repo), "update of a TimeField(auto_now) row")
                    assert await h.snapshot() == before
                    continue
                async with h.db.session() as session:
                    obj = await BaseRepository(session, Badge).update(badge["code"], title=title)
                assert obj is not None
                assert isinstance(obj.stamp, dt.time), f"stamp is {obj.stamp!r}"
                async with h.db.session():
                    stored = await fresh(Badge, badge["code"])
                masked = frozenset({"stamp"})
                assert values(obj, masked) == values(stored, masked)

        h.run(case)

    check()


def test_duplicate(h: Harness) -> None:
    """A unique violation: DuplicateEntityError naming the field (not its column), nothing
    written, as Tortoise raises IntegrityError."""
    backend = h.backend

    @scaled(0.5)
    @given(data=s.datasets(backend, max_items=0), rank=st.integers(-1, 2),
           many=st.booleans())
    def check(data: s.Dataset, rank: int, many: bool) -> None:
        if not data.owners:
            data.owners.append({"id": 1, "name": "only", "rank": 0})
        name = data.owners[-1]["name"]
        names = {owner["name"] for owner in data.owners}
        new = next(f"new{i}" for i in range(9) if f"new{i}" not in names)

        async def case() -> None:
            await seed(h, data)
            before = await h.snapshot()

            async def via_repo() -> Any:
                async with h.db.session() as session:
                    repo = BaseRepository(session, Owner)
                    if many:
                        return await repo.create_many([{"name": new, "rank": rank},
                                                       {"name": name, "rank": rank}])
                    return await repo.create({"name": name, "rank": rank})

            repo = await attempt(via_repo)
            assert await h.snapshot() == before, "a failed create changed the database"
            check_ours(repo, "duplicate")
            assert getattr(repo.error, "details", {}).get("field") == "name", repr(
                getattr(repo.error, "details", None))

        h.run(case)

    check()


@pytest.mark.parametrize("model", [Tag, Owner], ids=["uuid-key", "int-key"])
def test_create_other_keys(h: Harness, model: type[Model]) -> None:
    """create / create_many of models with a UUID key (given or generated, NOT NULL FK) and
    an int key given explicitly, against Model.create one by one."""
    backend = h.backend

    @scaled(1)
    @given(st.data())
    def check(draw: st.DataObject) -> None:
        data = draw.draw(s.datasets(backend, max_items=3))
        payloads = (s.tag_payloads(items=len(data.items), invalid=True) if model is Tag
                    else s.owner_payloads(invalid=True))
        rows = draw.draw(st.lists(payloads, min_size=1, max_size=3))
        many = draw.draw(st.booleans()) or len(rows) > 1
        given_keys = {k: 1 for row in rows for k in row if all(k in r for r in rows)}
        masked = masked_fields(model, given_keys)
        if len({frozenset(row) for row in rows}) > 1:
            masked |= {"id"}  # groups by key set: see test_create_many

        async def case() -> None:
            await seed(h, data)
            before = await h.snapshot()

            async def via_repo() -> Any:
                async with h.db.session() as session:
                    repo = BaseRepository(session, model)
                    made = (await repo.create_many([dict(r) for r in rows]) if many
                            else [await repo.create(dict(rows[0]))])
                async with h.db.session():
                    stored = [await fresh(model, obj.pk) for obj in made]
                return [values(o, masked) for o in made], [values(o, masked) for o in stored]

            async def via_tortoise() -> Any:
                async with h.db.session():
                    made = [await model.create(**r) for r in rows]
                async with h.db.session():
                    stored = [await fresh(model, obj.pk) for obj in made]
                return [values(o, masked) for o in made], [values(o, masked) for o in stored]

            repo, after_repo, ref, after_ref = await both_ways(h, data, via_repo, via_tortoise)
            invalid = any(v is None or any(v is b for bs in s.INVALID.values() for b in bs)
                          for r in rows for v in r.values())
            compare_write("create_many" if many else "create", repo, ref, before=before,
                          after_repo=after_repo, after_ref=after_ref,
                          given=given_keys, invalid=invalid, written=(model, masked))

        h.run(case)

    check()


def test_update_expressions_and_relations(h: Harness) -> None:
    """update() with F() expressions and related objects (its QuerySet-built statement)
    against ``QuerySet.update`` on the same row."""
    backend = h.backend
    parts = st.fixed_dictionaries({}, optional={
        "num": st.integers(-3, 3), "small": st.integers(-3, 3),
        "owner": st.none() | st.integers(1, 3), "note": st.none() | s.texts(5)})

    @scaled(1)
    @given(data=s.datasets(backend, max_items=3), pick=st.integers(1, 4), spec=parts)
    def check(data: s.Dataset, pick: int, spec: dict[str, Any]) -> None:
        masked = masked_fields(Item, {"id": 1, "token": 1, "label": 1})

        async def payload(*, reference: bool = False) -> dict[str, Any]:
            # Built in each session: expressions and instances are not shared between sides.
            out: dict[str, Any] = {}
            for key, value in spec.items():
                if key in ("num", "small"):
                    out[key] = F(key) + value
                elif key == "owner":
                    owner = None if value is None else await Owner.get_or_none(id=value)
                    if owner is None and reference:
                        out["owner_id"] = None  # QuerySet.update(owner=None) fails in Tortoise
                    else:
                        out[key] = owner
                else:
                    out[key] = value
            return out

        async def case() -> None:
            await seed(h, data)
            before = await h.snapshot()

            async def via_repo() -> Any:
                async with h.db.session() as session:
                    obj = await BaseRepository(session, Item).update(pick, **await payload())
                return await read_back(h, obj, masked)

            async def via_tortoise() -> Any:
                async with h.db.session():
                    values_now = await payload(reference=True)
                    if not await Item.filter(id=pick).exists():
                        return None
                    if values_now:
                        await Item.filter(id=pick).update(**values_now)
                async with h.db.session():
                    stored = await fresh(Item, pick)
                return values(stored, masked), values(stored, masked)

            repo, after_repo, ref, after_ref = await both_ways(h, data, via_repo, via_tortoise)
            compare_write("update with expressions", repo, ref, before=before,
                          after_repo=after_repo, after_ref=after_ref, given={})

        h.run(case)

    check()

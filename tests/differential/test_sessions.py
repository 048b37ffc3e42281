"""Sessions: commit never lies, calls at once on one session, ``:name`` parsing.

Generated sequences of good and failing writes in one session (errors caught by the caller),
then the end of the block: either it raises and nothing of the session is stored, or it
commits and exactly the writes that returned are stored. The same for several create_many
calls running at once (``asyncio.gather``). And ``session.execute`` reads text inside quotes
as text, never as a ``:name`` parameter.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aegis_tortoise import BaseRepository, ServiceException
from tests.differential import strategies as s
from tests.differential.harness import Harness, harness, scaled, seed
from tests.differential.models import Item, Owner

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def h(backend: str, db_url: str) -> Any:
    with harness(backend, db_url) as running:
        yield running


async def owner_names(h: Harness) -> list[str]:
    async with h.db.session():
        return sorted(await Owner.all().values_list("name", flat=True))


# One step: ("create", name) a new Owner, ("duplicate", _) an Owner whose name exists,
# ("invalid", _) an Item the database refuses (None for NOT NULL passes the check on
# purpose: out-of-range int on PostgreSQL), ("many", names) create_many.
STEPS = st.one_of(
    st.tuples(st.just("create"), s.texts(12, min_size=1)),
    st.tuples(st.just("duplicate"), st.just("")),
    st.tuples(st.just("invalid"), st.just("")),
    st.tuples(st.just("many"), st.lists(s.texts(12, min_size=1), min_size=1, max_size=3)),
)


def test_commit_never_lies(h: Harness) -> None:
    backend = h.backend

    @scaled(1)
    @given(data=s.datasets(backend, max_items=0), steps=st.lists(STEPS, min_size=1, max_size=4))
    def check(data: s.Dataset, steps: list[tuple[str, Any]]) -> None:
        if not data.owners:
            data.owners.append({"id": 1, "name": "first", "rank": 0})
        existing = data.owners[0]["name"]

        async def case() -> None:
            await seed(h, data)
            before = await owner_names(h)
            stored: list[str] = []
            failed_at_end: BaseException | None = None
            try:
                async with h.db.session() as session:
                    owners = BaseRepository(session, Owner)
                    items = BaseRepository(session, Item)
                    for kind, arg in steps:
                        try:
                            if kind == "create":
                                await owners.create({"name": arg})
                                stored.append(arg)
                            elif kind == "duplicate":
                                await owners.create({"name": existing})
                            elif kind == "invalid":
                                await items.create({"num": 2**40, "name": "x"})
                            else:
                                await owners.create_many([{"name": n} for n in arg])
                                stored.extend(arg)
                        except ServiceException:
                            if kind in ("create", "many"):
                                continue  # a name generated twice: a duplicate as well
            except ServiceException as exc:
                failed_at_end = exc
            after = await owner_names(h)
            if failed_at_end is not None:
                assert after == before, f"the block raised {failed_at_end!r} but rows were stored"
            else:
                assert after == sorted(before + stored), (
                    "the block committed, but the stored rows are not the writes that returned")

        h.run(case)

    check()


def test_calls_at_once(h: Harness) -> None:
    @scaled(0.5)
    @given(batches=st.lists(st.lists(s.texts(12, min_size=1), min_size=1, max_size=3),
                            min_size=2, max_size=3))
    def check(batches: list[list[str]]) -> None:
        async def case() -> None:
            await seed(h, s.Dataset([], [], [], []))
            done: list[Any] = []
            failed_at_end: BaseException | None = None
            try:
                async with h.db.session() as session:
                    repo = BaseRepository(session, Owner)
                    done = await asyncio.gather(
                        *(repo.create_many([{"name": n} for n in batch]) for batch in batches),
                        return_exceptions=True)
            except ServiceException as exc:
                failed_at_end = exc
            for outcome in done:
                if isinstance(outcome, BaseException):
                    assert isinstance(outcome, ServiceException), repr(outcome)
            after = await owner_names(h)
            if failed_at_end is not None:
                assert after == [], f"the block raised {failed_at_end!r} but rows were stored"
            else:
                wanted = sorted(n for batch, outcome in zip(batches, done, strict=True)
                                if not isinstance(outcome, BaseException) for n in batch)
                assert after == wanted, "stored rows are not those of the calls that returned"

        h.run(case)

    check()


def quoted_forms(backend: str) -> list[str]:
    extra = ["e_literal"] if backend == "postgres" else ["brackets", "backticks"]
    return ["literal", "identifier", *extra]


def test_execute_quoted_text(h: Harness) -> None:
    backend = h.backend
    text = st.text(alphabet=st.sampled_from(list("a:b_ '\"\\x")), min_size=1, max_size=12)

    @scaled(1)
    @given(value=text, form=st.sampled_from(quoted_forms(backend)))
    def check(value: str, form: str) -> None:
        if form == "literal":
            quoted = "'" + value.replace("'", "''") + "'"
            sql, column = f"SELECT {quoted} AS v, CAST(:p AS INTEGER) AS w", "v"
        elif form == "e_literal":
            escaped = value.replace("\\", "\\\\").replace("'", "\\'")
            sql, column = "SELECT E'" + escaped + "' AS v, CAST(:p AS INTEGER) AS w", "v"
        else:
            name = value.replace("'", "").replace("\\", "") or "c"
            if form == "brackets":
                name = name.replace("]", "")
                sql = f"SELECT 'x' AS [{name}], CAST(:p AS INTEGER) AS w"
            elif form == "backticks":
                name = name.replace("`", "")
                sql = f"SELECT 'x' AS `{name}`, CAST(:p AS INTEGER) AS w"
            else:
                sql = 'SELECT \'x\' AS "' + name.replace('"', '""') + '", CAST(:p AS INTEGER) AS w'
            column = name
            value = "x"
            if not name.strip() or (form != "identifier" and '"' in name):
                return  # not a name sqlite reports back unchanged

        async def case() -> None:
            async with h.db.session() as session:
                result = await session.execute(sql, {"p": 7})
                row = result.fetchone()
            assert row is not None
            assert row[0] == value, sql
            assert row[1] == 7, sql
            assert result.keys()[0] == column, sql

        h.run(case)

    check()

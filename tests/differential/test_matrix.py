"""The configuration matrix: reads and writes under every time setting a service may run with.

The other differential tests run one configuration (``use_tz=True``, UTC, the process's own
time zone). Bugs in time handling live in the others (issue 18 items 4 and 7), so here each
test runs once per manager configuration:

- ``use_tz`` on and off;
- ``timezone`` UTC, Asia/Seoul (+09:00) and America/St_Johns (-03:30 / -02:30, a
  half-hour offset with daylight saving time);

and each generated case draws the process time zone (``TZ``: UTC or Asia/Seoul, set with
``time.tzset`` and put back after the case; asyncpg reads naive datetimes as local time).
Stored datetimes are aware or naive (what a ``use_tz=False`` service writes). Each case runs
the repository's call and the same call through plain Tortoise in the same manager and
compares values, types and time zones exactly (``harness.canon``). The ``nested`` runs make
the repository's call while a session of a second manager (the opposite ``use_tz``, another
zone) is open inside this manager's (issue 18 item 4); plain Tortoise runs without it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aegis_tortoise import BaseRepository, DatabaseManager, Session
from tests.conftest import fresh_manager
from tests.differential import strategies as s
from tests.differential.harness import (
    Harness,
    attempt,
    both_ways,
    masked_fields,
    scaled,
    seed,
    values,
)
from tests.differential.models import MODELS, Item
from tests.differential.test_reads import compare, reference_list, reference_set, rows_of
from tests.differential.test_writes import compare_write, fresh, read_back

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

#: (use_tz, timezone) of the manager: every pair is one run of each test.
CONFIGS = [(use_tz, zone) for use_tz in (True, False)
           for zone in ("UTC", "Asia/Seoul", "America/St_Johns")]
PROCESS_ZONES = ["UTC", "Asia/Seoul"]
#: Cases per configuration (a share of the profile's max_examples): the matrix multiplies
#: them by 6 configurations and 2 backends.
WEIGHTS = {"reads": 0.1, "writes": 0.15, "reads, nested": 0.03, "writes, nested": 0.04}


@contextmanager
def process_tz(name: str) -> Iterator[None]:
    """The process time zone set to ``name`` (``TZ`` + ``time.tzset``), restored after.

    Also lets through Tortoise's RuntimeWarning about a naive datetime under ``use_tz=True``
    (pytest makes warnings errors here; a service gets the warning and the value is read in
    the manager's time zone, which is what both paths are compared on).
    """
    old = os.environ.get("TZ")
    os.environ["TZ"] = name
    time.tzset()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", r".*received a naive datetime", RuntimeWarning)
            yield
    finally:
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
        time.tzset()


class MatrixHarness(Harness):
    """A harness whose manager has one configuration of the matrix, and a second manager
    with another (``other``) whose session a case may open inside the first one's."""

    other: DatabaseManager

    @asynccontextmanager
    async def session(self, nested: bool) -> AsyncIterator[Session]:
        """A session of the manager under test; with ``nested``, inside it a session of
        ``other`` is open (issue 18 item 4: the innermost manager's time settings must not
        apply to this manager's reads and writes)."""
        async with self.db.session() as session:
            if not nested:
                yield session
                return
            async with self.other.session():
                yield session


@pytest.fixture(params=CONFIGS, ids=[f"use_tz={u}-{z}" for u, z in CONFIGS])
def h(request: pytest.FixtureRequest, backend: str, db_url: str) -> Iterator[MatrixHarness]:
    use_tz, zone = request.param
    other_zone = "America/St_Johns" if zone == "Asia/Seoul" else "Asia/Seoul"
    with asyncio.Runner() as runner:
        managers = fresh_manager(db_url, backend, models=MODELS, use_tz=use_tz, timezone=zone,
                                 pool_size=2, max_overflow=0)
        manager: DatabaseManager = runner.run(anext(managers))  # type: ignore[arg-type]
        # Same dialect, same models, the opposite use_tz and another zone; never queried.
        other = DatabaseManager(db_url, models=MODELS, use_tz=not use_tz, timezone=other_zone,
                                pool_size=1, max_overflow=0)
        try:
            running = MatrixHarness(runner, manager, backend)
            running.other = other
            yield running
        finally:
            runner.run(other.close())
            runner.run(managers.aclose())


def naive_or_aware(value: Any, naive: bool) -> Any:
    if naive and isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.replace(tzinfo=None)
    return value


@st.composite
def datasets(draw: st.DrawFn, backend: str, use_tz: bool) -> s.Dataset:
    """A data set whose stored ``moment`` values are aware or naive (either is written)."""
    data = draw(s.datasets(backend, max_items=5))
    for row in data.items:
        row["moment"] = naive_or_aware(row["moment"], draw(st.booleans()))
        if not use_tz:
            # Tortoise 1.1.9 makes a time naive under use_tz=False, which asyncpg cannot
            # send to a TIMETZ column: plain Tortoise cannot store one (nor seed it).
            row["clock"] = None
    return data


def moment_terms(backend: str) -> st.SearchStrategy[s.Term]:
    """Filters on the datetime field, with naive and aware values."""
    value = st.builds(naive_or_aware, s.value_of("datetime", backend), st.booleans())
    return st.one_of(
        st.builds(s.Term, st.sampled_from(["moment__gte", "moment__lt", "moment"]), value),
        st.builds(lambda a, b: s.Term("moment__range", (a, b)), value, value),
        st.builds(lambda v: s.Term("moment__in", [v], container="list"), value))


@st.composite
def filters(draw: st.DrawFn, backend: str) -> s.Filters:
    terms = draw(st.lists(s.item_term(backend, invalid=False), max_size=1))
    if draw(st.booleans()):
        terms.append(draw(moment_terms(backend)))
    return s.Filters(list({t.key: t for t in terms}.values()))


def reads(h: MatrixHarness, weight: float, nested: bool) -> None:
    """list (ordered by the datetime field or not), count and get_by_ids against the
    QuerySet."""
    backend = h.backend
    orders = st.one_of(s.orderings(s.ITEM_ORDER_FIELDS, backend),
                       st.sampled_from([s.Ordering(["moment"], "list"),
                                        s.Ordering(["-moment", "changed"], "tuple")]))

    @scaled(weight)
    @given(data=datasets(backend, h.db.use_tz), where=filters(backend), ordering=orders,
           zone=st.sampled_from(PROCESS_ZONES), ids=st.lists(st.integers(0, 6), max_size=4))
    def check(*, data: s.Dataset, where: s.Filters, ordering: s.Ordering, zone: str,
              ids: list[int]) -> None:
        async def case() -> None:
            await seed(h, data)

            async def via_repo() -> Any:
                async with h.session(nested) as session:
                    repo = BaseRepository(session, Item)
                    found = await repo.list(filters=where.for_repo(),
                                            order_by=ordering.for_repo())
                    count = await repo.count(where.for_repo())
                    by_ids = await repo.get_by_ids(ids)
                    return rows_of(found, []), count, rows_of(by_ids, [])

            async def via_tortoise() -> Any:
                async with h.db.session():
                    found = await reference_list(Item, where, ordering, [], skip=0, limit=100)
                    count = await reference_set(Item, where).count()
                    by_pk = {row.pk: row for row in await Item.filter(pk__in=ids)}
                    wanted = [by_pk[i] for i in dict.fromkeys(ids) if i in by_pk]
                    return rows_of(found, []), count, rows_of(wanted, [])

            compare(await attempt(via_repo), await attempt(via_tortoise),
                    f"reads (TZ={zone}{', nested' if nested else ''})")

        with process_tz(zone):
            h.run(case)

    check()


@st.composite
def payloads(draw: st.DrawFn, backend: str, use_tz: bool, partial: bool) -> dict[str, Any]:
    payload = draw(s.item_payloads(backend, invalid=False, owners=3, partial=partial))
    if not use_tz:
        payload.pop("clock", None)  # plain Tortoise cannot store it: see datasets()
    naive = draw(st.booleans())
    if partial and draw(st.booleans()):
        payload["moment"] = draw(s.value_of("datetime", backend))
    if partial and not payload:
        payload["note"] = draw(s.texts(5))  # update_many needs a field to change
    return {k: naive_or_aware(v, naive) for k, v in payload.items()}


WRITES = ["create", "create_many", "update", "update_many", "upsert"]


def writes(h: MatrixHarness, weight: float, nested: bool) -> None:
    """create / create_many / update / update_many / upsert against create / save."""
    backend = h.backend

    @scaled(weight)
    @given(data=datasets(backend, h.db.use_tz), op=st.sampled_from(WRITES),
           rows=st.lists(payloads(backend, h.db.use_tz, partial=False), min_size=1, max_size=3),
           changes=payloads(backend, h.db.use_tz, partial=True), pick=st.integers(1, 6),
           zone=st.sampled_from(PROCESS_ZONES))
    def check(*, data: s.Dataset, op: str, rows: list[dict[str, Any]],
              changes: dict[str, Any], pick: int, zone: str) -> None:
        exists = any(row["id"] == pick for row in data.items)
        given_keys = {k: 1 for row in rows for k in row if all(k in r for r in rows)}
        if op in ("create", "create_many"):
            masked = masked_fields(Item, given_keys)
            if op == "create_many" and len({frozenset(row) for row in rows}) > 1:
                masked |= {"id"}  # groups by key set: see test_writes.test_create_many
        else:
            given_keys = {"id": 1, "token": 1, "label": 1}  # stored by the seed
            if op == "upsert" and not exists:
                given_keys = {**rows[0], **changes, "id": pick}  # an insert
            masked = masked_fields(Item, given_keys)

        async def via_repo() -> Any:
            async with h.session(nested) as session:
                repo = BaseRepository(session, Item)
                if op == "create":
                    made = [await repo.create(dict(rows[0]))]
                elif op == "create_many":
                    made = await repo.create_many([dict(r) for r in rows])
                elif op == "update":
                    made = [await repo.update(pick, dict(changes))]
                elif op == "update_many":
                    made = await repo.update_many([{"id": pick, **changes}])
                else:
                    obj, created = await repo.upsert({**rows[0], **changes, "id": pick},
                                                     conflict=["id"],
                                                     update=list(changes) or None)
                    made = [obj, created]
            return [await read_back(h, obj, masked) if not isinstance(obj, bool) else obj
                    for obj in made]

        async def via_tortoise() -> Any:
            made: list[Any] = []
            async with h.db.session():
                if op in ("create", "create_many"):
                    made = [await Item.create(**r) for r in (rows[:1] if op == "create" else rows)]
                    pks: list[Any] = [obj.pk for obj in made]
                else:
                    obj = await Item.get_or_none(id=pick)
                    created = obj is None
                    if obj is not None:
                        obj.update_from_dict(dict(changes))
                        # Only the changed fields, as the repository writes: a full save()
                        # writes every column back, and under use_tz=False with TZ=Asia/Seoul
                        # a datetime read naive goes back shifted by the process offset
                        # (Tortoise 1.1.9 + asyncpg read and send naive values as local
                        # time), so plain Tortoise's save() moves untouched datetimes.
                        await obj.save(update_fields=[*changes, "changed"])
                    elif op == "upsert":
                        await Item.create(**{**rows[0], **changes, "id": pick})
                    pks = [] if obj is None and op != "upsert" else [pick]
            async with h.db.session():
                stored = [await fresh(Item, pk) for pk in pks]
            if made:
                # create(): the instances as returned (values as given: under use_tz=False
                # and TZ=Asia/Seoul a naive datetime does not read back the same on
                # PostgreSQL, in plain Tortoise too). update(): the stored row (RETURNING).
                return [(values(o, masked), values(f, masked))
                        for o, f in zip(made, stored, strict=True)]
            out: list[Any] = [(values(o, masked), values(o, masked)) for o in stored]
            if op == "update" and not pks:
                out = [None]
            if op == "upsert":
                out.append(created)
            return out

        async def case() -> None:
            await seed(h, data)
            before = await h.snapshot()
            repo, after_repo, ref, after_ref = await both_ways(h, data, via_repo, via_tortoise)
            state = "exists" if exists else "missing"
            compare_write(f"{op} (TZ={zone}{', nested' if nested else ''}, row {pick} {state})",
                          repo, ref, before=before, after_repo=after_repo,
                          after_ref=after_ref, given=given_keys, written=(Item, masked))

        with process_tz(zone):
            h.run(case)

    check()


def test_matrix(h: MatrixHarness) -> None:
    """Reads and writes under this configuration, alone and with a session of a manager
    with other time settings open inside this one's. Each runs on its own, and the failures
    of all are reported together (one does not hide another)."""
    runs = {"reads": lambda w: reads(h, w, nested=False),
            "writes": lambda w: writes(h, w, nested=False),
            "reads, nested": lambda w: reads(h, w, nested=True),
            "writes, nested": lambda w: writes(h, w, nested=True)}
    failures = []
    for name, run in runs.items():
        try:
            run(WEIGHTS[name])
        except Exception as exc:  # collected, raised below with the others' failures
            failures.append(f"[{name}] {type(exc).__name__}: {exc}\n"
                            + "\n".join(getattr(exc, "__notes__", ())))
    assert not failures, f"{len(failures)} of 4 failed:\n" + "\n\n".join(failures)

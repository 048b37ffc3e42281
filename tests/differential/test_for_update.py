"""Locking reads: list / get_by_ids / get_by_id / get with ``for_update`` return the same rows
as Tortoise's ``select_for_update()`` of the same query (with nothing held elsewhere, every
mode returns every row)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aegis_tortoise import BaseRepository
from tests.differential import strategies as s
from tests.differential.harness import Harness, attempt, harness, scaled, seed
from tests.differential.models import Item
from tests.differential.test_reads import compare, reference_list, rows_of

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

MODES = st.sampled_from([True, "nowait", "skip_locked"])


def _tortoise_lock(mode: Any) -> dict[str, Any]:
    return {"nowait": mode == "nowait", "skip_locked": mode == "skip_locked"}


@pytest.fixture
def h(backend: str, db_url: str) -> Any:
    with harness(backend, db_url) as running:
        yield running


def test_item_list_for_update(h: Harness) -> None:
    backend = h.backend

    @scaled(1)
    @given(data=s.datasets(backend), filters=s.item_filters(backend),
           ordering=s.orderings(s.ITEM_ORDER_FIELDS, backend), window=s.windows(), mode=MODES,
           prefetch=s.prefetches(s.ITEM_PREFETCH))
    def check(*, data: s.Dataset, filters: s.Filters, ordering: s.Ordering,
              window: tuple[int, int | None], mode: Any, prefetch: tuple[list[str], str]) -> None:
        skip, limit = window
        names, _ = prefetch

        async def case() -> None:
            await seed(h, data)

            async def via_repo() -> Any:
                async with h.db.session() as session:
                    found = await BaseRepository(session, Item).list(
                        skip=skip, limit=limit, filters=filters.for_repo(),
                        order_by=ordering.for_repo(), prefetch=names or None, for_update=mode,
                        of=[Item])
                    return rows_of(found, names)

            async def via_tortoise() -> Any:
                async with h.db.session():
                    query = reference_list(Item, filters, ordering, names, skip=skip, limit=limit)
                    query = query.select_for_update(of=(Item._meta.db_table,),
                                                    **_tortoise_lock(mode))
                    return rows_of(await query, names)

            compare(await attempt(via_repo), await attempt(via_tortoise), "list for_update")

        h.run(case)

    check()


def test_item_get_for_update(h: Harness) -> None:
    backend = h.backend

    @scaled(1)
    @given(data=s.datasets(backend), ids=st.lists(st.integers(0, 9), max_size=6), mode=MODES)
    def check(data: s.Dataset, ids: list[int], mode: Any) -> None:
        async def case() -> None:
            await seed(h, data)

            async def via_repo() -> Any:
                async with h.db.session() as session:
                    repo = BaseRepository(session, Item)
                    found = await repo.get_by_ids(ids, for_update=mode)
                    singles = [await repo.get_by_id(i, for_update=mode) for i in ids]
                    gets = []
                    for i in ids:
                        got = await attempt(lambda i=i: repo.get(i, for_update=mode))
                        gets.append(rows_of([got.value], []) if got.ok else None)
                    return (rows_of(found, []),
                            [None if x is None else rows_of([x], []) for x in singles], gets)

            async def via_tortoise() -> Any:
                async with h.db.session():
                    lock = _tortoise_lock(mode)
                    wanted = list(dict.fromkeys(ids))
                    by_pk = {row.pk: row for row in
                             await Item.filter(pk__in=wanted).select_for_update(**lock)}
                    singles = []
                    for i in ids:
                        got = await Item.filter(pk=i).select_for_update(**lock).first()
                        singles.append(None if got is None else rows_of([got], []))
                    return rows_of([by_pk[k] for k in wanted if k in by_pk], []), singles, singles

            compare(await attempt(via_repo), await attempt(via_tortoise), "get* for_update")

        h.run(case)

    check()

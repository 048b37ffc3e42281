"""Reads: list / count / paginate / get_by_ids / get_by_id against Tortoise's QuerySet.

Each example stores a generated data set, then runs one call through the repository (its
cached SQL, its row building and prefetch) and the same query through plain Tortoise, each
in a session of its own, and compares rows, order, every attribute (type and time zone
included) and the prefetched relations. An error from Tortoise must be our error from the
repository; a result from Tortoise must be the same result from the repository.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tortoise.expressions import Subquery
from tortoise.models import Model
from tortoise.queryset import QuerySet

from aegis_tortoise import BaseRepository
from tests.differential import strategies as s
from tests.differential.harness import (
    Harness,
    Outcome,
    attempt,
    canon,
    check_ours,
    explain,
    harness,
    scaled,
    seed,
    values,
)
from tests.differential.models import Item, Owner

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def related_values(obj: Model, name: str) -> Any:
    """The prefetched relation ``name`` (``a__b`` nested) of ``obj``, comparable."""
    head, _, rest = name.partition("__")
    target = getattr(obj, head)
    if target is None or isinstance(target, Model):
        if target is None:
            return None
        return (values(target), related_values(target, rest) if rest else None)
    members = list(target)  # raises if the relation was not fetched
    out = [(values(m), related_values(m, rest) if rest else None) for m in members]
    return sorted(out, key=repr)  # no ordering of prefetched rows on either side


def rows_of(items: list[Model], prefetch: list[str]) -> list[Any]:
    return [(values(item), [related_values(item, p) for p in prefetch]) for item in items]


def compare(repo: Outcome, ref: Outcome, context: str) -> None:
    if ref.ok:
        assert repo.ok, (
            f"{context}: Tortoise answered {ref.value!r}, the repository raised {repo.error!r}")
        assert repo.value == ref.value, (
            f"{context}: results differ {explain(repo.value, ref.value)}")
    else:
        check_ours(repo, f"{context} (Tortoise raised {ref.error!r})")


def reference_set(model: type[Model], filters: s.Filters) -> QuerySet[Any]:
    kwargs = filters.for_tortoise()
    if filters.fans_out() or any(k.startswith(("items__", "badge__")) for k in kwargs):
        # A filter across a to-many relation: the repository's documented form (each row once).
        inner = model.filter(**kwargs).values("id")
        return model.filter(pk__in=Subquery(inner))
    return model.filter(**kwargs)


def reference_order(model: type[Model], ordering: s.Ordering) -> list[str]:
    if ordering.names is None:
        default = [("-" if str(order.value) == "DESC" else "") + name
                   for name, order in model._meta._default_ordering]
        return [*default, "id"]
    # "pk" is the repository's alias of the key field; Tortoise's order_by wants the name.
    return [name.replace("pk", "id") if name.lstrip("-") == "pk" else name
            for name in ordering.names] + ["id"]


def reference_list(model: type[Model], filters: s.Filters, ordering: s.Ordering,
                   names: list[str], *, skip: int, limit: int | None) -> QuerySet[Any]:
    """What ``repo.list(skip, limit, filters, order_by, prefetch=names)`` stands for."""
    query = reference_set(model, filters).order_by(*reference_order(model, ordering))
    if names:
        query = query.prefetch_related(*names)
    if skip:
        query = query.offset(skip)
    return query if limit is None else query.limit(limit)


def reference_page(model: type[Model], filters: s.Filters, ordering: s.Ordering,
                   number: int, size: int) -> QuerySet[Any]:
    """The items of ``repo.paginate(number, size, filters, order_by)``."""
    return reference_set(model, filters).order_by(*reference_order(model, ordering)).offset(
        (number - 1) * size).limit(size)


@pytest.fixture
def h(backend: str, db_url: str) -> Any:
    with harness(backend, db_url) as running:
        yield running


def test_item_list(h: Harness) -> None:
    backend = h.backend

    @scaled(3)
    @given(data=s.datasets(backend), filters=s.item_filters(backend, invalid=True),
           ordering=s.orderings(s.ITEM_ORDER_FIELDS, backend), window=s.windows(),
           prefetch=s.prefetches(s.ITEM_PREFETCH))
    def check(data: s.Dataset, filters: s.Filters, ordering: s.Ordering,
              window: tuple[int, int | None], prefetch: tuple[list[str], str]) -> None:
        skip, limit = window
        names, form = prefetch

        async def case() -> None:
            await seed(h, data)

            async def via_repo() -> Any:
                async with h.db.session() as session:
                    found = await BaseRepository(session, Item).list(
                        skip=skip, limit=limit, filters=filters.for_repo(),
                        order_by=ordering.for_repo(),
                        prefetch=s.wrap(names, form) if names else None)
                    return rows_of(found, names)

            async def via_tortoise() -> Any:
                async with h.db.session():
                    query = reference_list(Item, filters, ordering, names, skip=skip, limit=limit)
                    return rows_of(await query, names)

            compare(await attempt(via_repo), await attempt(via_tortoise), "list")

        h.run(case)

    check()


def test_item_count_and_paginate(h: Harness) -> None:
    backend = h.backend

    @scaled(2)
    @given(data=s.datasets(backend), filters=s.item_filters(backend, invalid=True),
           ordering=s.orderings(s.ITEM_ORDER_FIELDS, backend), page=s.pages())
    def check(data: s.Dataset, filters: s.Filters, ordering: s.Ordering,
              page: tuple[int, int]) -> None:
        number, size = page

        async def case() -> None:
            await seed(h, data)

            async def count_repo() -> Any:
                async with h.db.session() as session:
                    return await BaseRepository(session, Item).count(filters.for_repo())

            async def count_ref() -> Any:
                async with h.db.session():
                    return await reference_set(Item, filters).count()

            compare(await attempt(count_repo), await attempt(count_ref), "count")

            async def page_repo() -> Any:
                async with h.db.session() as session:
                    got = await BaseRepository(session, Item).paginate(
                        number, size, filters=filters.for_repo(), order_by=ordering.for_repo())
                    return got.total, got.total_pages, rows_of(got.items, [])

            async def page_ref() -> Any:
                async with h.db.session():
                    total = await reference_set(Item, filters).count()
                    items = await reference_page(Item, filters, ordering, number, size)
                    return total, (total + size - 1) // size, rows_of(items, [])

            compare(await attempt(page_repo), await attempt(page_ref), "paginate")

        h.run(case)

    check()


def test_owner_meta_ordering(h: Harness) -> None:
    """Owner has ``Meta.ordering``: list/paginate without order_by must follow it."""
    backend = h.backend

    @scaled(1)
    @given(data=s.datasets(backend, max_items=4), filters=s.owner_filters(backend),
           ordering=s.orderings(s.OWNER_ORDER_FIELDS, backend), window=s.windows(),
           prefetch=s.prefetches(s.OWNER_PREFETCH), page=s.pages())
    def check(*, data: s.Dataset, filters: s.Filters, ordering: s.Ordering,
              window: tuple[int, int | None], prefetch: tuple[list[str], str],
              page: tuple[int, int]) -> None:
        skip, limit = window
        names, form = prefetch

        async def case() -> None:
            await seed(h, data)

            async def via_repo() -> Any:
                async with h.db.session() as session:
                    repo = BaseRepository(session, Owner)
                    found = await repo.list(skip=skip, limit=limit, filters=filters.for_repo(),
                                            order_by=ordering.for_repo(),
                                            prefetch=s.wrap(names, form) if names else None)
                    pg = await repo.paginate(*page, filters=filters.for_repo(),
                                             order_by=ordering.for_repo())
                    return rows_of(found, names), pg.total, rows_of(pg.items, [])

            async def via_tortoise() -> Any:
                async with h.db.session():
                    query = reference_list(Owner, filters, ordering, names, skip=skip,
                                           limit=limit)
                    paged = reference_page(Owner, filters, ordering, *page)
                    total = await reference_set(Owner, filters).count()
                    return rows_of(await query, names), total, rows_of(await paged, [])

            compare(await attempt(via_repo), await attempt(via_tortoise), "Owner list/paginate")

        h.run(case)

    check()


def test_item_get_by_ids(h: Harness) -> None:
    backend = h.backend
    keys = st.one_of(st.integers(0, 9), st.sampled_from(["3", 2.0, True]))

    @scaled(1)
    @given(data=s.datasets(backend), ids=st.lists(keys, max_size=6),
           container=st.sampled_from(s.CONTAINERS), prefetch=s.prefetches(s.ITEM_PREFETCH))
    def check(data: s.Dataset, ids: list[Any], container: str,
              prefetch: tuple[list[str], str]) -> None:
        names, form = prefetch

        async def case() -> None:
            await seed(h, data)

            async def via_repo() -> Any:
                async with h.db.session() as session:
                    repo = BaseRepository(session, Item)
                    found = await repo.get_by_ids(s.wrap(ids, container),
                                                  prefetch=s.wrap(names, form) if names else None)
                    singles = [await repo.get_by_id(i, prefetch=names or None) for i in ids]
                    return (rows_of(found, names),
                            [None if x is None else rows_of([x], names) for x in singles])

            async def via_tortoise() -> Any:
                async with h.db.session():
                    wanted = list(dict.fromkeys(Item._meta.pk.to_python_value(i) for i in ids))
                    query = Item.filter(pk__in=wanted)
                    if names:
                        query = query.prefetch_related(*names)
                    by_pk = {row.pk: row for row in await query}
                    singles = []
                    for i in ids:
                        single = Item.filter(pk=i)
                        if names:
                            single = single.prefetch_related(*names)
                        got = await single.first()
                        singles.append(None if got is None else rows_of([got], names))
                    return rows_of([by_pk[k] for k in wanted if k in by_pk], names), singles

            compare(await attempt(via_repo), await attempt(via_tortoise), "get_by_ids/get_by_id")

        h.run(case)

    check()


def test_canon_is_strict() -> None:
    """The comparison sees types and time zones, not only equality."""
    import datetime as dt
    import decimal

    assert canon(1) != canon(True)
    assert canon(decimal.Decimal("1.0")) != canon(decimal.Decimal("1.00"))
    naive = dt.datetime(2024, 1, 1)
    assert canon(naive) != canon(naive.replace(tzinfo=dt.UTC))

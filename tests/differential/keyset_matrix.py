"""The keyset/iterate leg of the configuration matrix, run in a process of its own.

``python -m tests.differential.keyset_matrix --backend sqlite|postgres [--url URL]`` runs,
for every ``use_tz`` (on, off) and ``timezone`` (UTC, Asia/Seoul, America/St_Johns), full
``paginate_keyset`` walks and ``iterate`` walks over generated rows of the differential
``Item`` (timestamps written with several UTC offsets, NULLs, repeated values, intervals,
bytes, decimals), for many orderings and for filters of both paths (cached SQL and
QuerySet), and compares each walk with Tortoise's ``QuerySet.order_by``: every row exactly
once, in the same order, and the walk ends. It prints ``{"cases": n, "failures": [...]}``.

The process time zone is the caller's (``TZ=Asia/Seoul``): it must be set before the
interpreter starts for asyncpg and the ``datetime`` module to see it, hence the process.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import decimal
import json
import os
import random
from contextlib import aclosing
from typing import Any

from aegis_tortoise import BaseRepository, DatabaseManager
from tests.conftest import reset_pg_schema
from tests.differential.models import MODELS, Color, Item

USE_TZ = (False, True)
TIMEZONES = ("UTC", "Asia/Seoul", "America/St_Johns")
ORDERINGS: list[Any] = [
    "moment", "-moment", ["-changed", "num"], "span", "-blob", "price", "note", "token",
    "-ratio", ["color", "-moment"],
]
#: Filters of both paths: the cached SQL (None; num__in on PostgreSQL) and the QuerySet's
#: (icontains; num__in on sqlite).
FILTERS: list[dict[str, Any] | None] = [None, {"name__icontains": "a"}, {"num__in": [0, 2, 3]}]
OFFSETS = (dt.UTC, dt.timezone(dt.timedelta(hours=9)),
           dt.timezone(-dt.timedelta(hours=3, minutes=30)))


def _rows(rng: random.Random, n: int) -> list[dict[str, Any]]:
    base = dt.datetime(2024, 3, 9, 12, 0)
    rows = []
    for i in range(n):
        def maybe(value: Any) -> Any:
            return None if rng.random() < 0.2 else value
        moment = base + dt.timedelta(hours=rng.choice(range(0, 40, 5)))
        rows.append({
            "num": i % 5,
            "name": rng.choice(["alpha", "beta", "Gamma", "delta", "echo"]),
            "flag": rng.random() < 0.5,
            "moment": maybe(moment.replace(tzinfo=rng.choice(OFFSETS))),
            "span": maybe(dt.timedelta(seconds=rng.randrange(4), microseconds=rng.randrange(3))),
            "blob": maybe(bytes([rng.randrange(3), 0, rng.randrange(2)])),
            "price": maybe(decimal.Decimal(rng.choice(["9.00", "10.00", "-1.50", "100.25"]))),
            "note": maybe(rng.choice(["x", "y", "Y"])),
            "day": maybe(dt.date(2024, 1, 1) + dt.timedelta(days=rng.randrange(3))),
            "ratio": maybe(rng.choice([0.5, -2.0, 1e-9, 3.25])),
            "color": maybe(rng.choice(list(Color))),
        })
    return rows


async def _page_walk(repo: BaseRepository[Item], order_by: Any, filters: Any, limit: int,
                     bound: int) -> list[int] | str:
    ids: list[int] = []
    after = None
    for _ in range(bound):
        page = await repo.paginate_keyset(limit=limit, order_by=order_by, filters=filters,
                                          after=after)
        ids += [item.id for item in page.items]
        if not page.has_next:
            return ids
        after = page.next_cursor
    return f"no end after {bound} pages ({len(ids)} ids, {len(set(ids))} distinct)"


async def _iterate_walk(repo: BaseRepository[Item], order_by: Any, filters: Any,
                        bound: int) -> list[int] | str:
    ids: list[int] = []
    async with aclosing(repo.iterate(filters=filters, order_by=order_by, batch_size=4)) as it:
        async for item in it:
            ids.append(item.id)
            if len(ids) > bound:
                return f"more than {bound} rows"
    return ids


async def check(url: str, backend: str, *, use_tz: bool, timezone: str, seed: int, n: int
                ) -> tuple[int, list[str]]:
    """Cases run and failures for one configuration."""
    if backend == "postgres":
        await reset_pg_schema(url)
    db = DatabaseManager(url, models=MODELS, use_tz=use_tz, timezone=timezone, pool_size=2,
                         max_overflow=0)
    failures: list[str] = []
    cases = 0
    try:
        await db.generate_schemas()
        async with db.session() as session:
            # Written by Tortoise itself: the stored text (sqlite) is what Tortoise writes.
            for row in _rows(random.Random(seed), n):  # noqa: S311 - reproducible data
                await Item.create(using_db=session.connection, **row)
        async with db.session() as session:
            repo = BaseRepository(session, Item)
            for order_by in ORDERINGS:
                fields = [order_by] if isinstance(order_by, str) else list(order_by)
                for filters in FILTERS:
                    expected = await (Item.filter(**(filters or {}))
                                      .using_db(session.connection)
                                      .order_by(*fields, "id").values_list("id", flat=True))
                    where = (f"{backend} use_tz={use_tz} timezone={timezone} "
                             f"TZ={os.environ.get('TZ')} order_by={order_by} filters={filters}")
                    for what, got in (
                            ("paginate_keyset", await _page_walk(repo, order_by, filters, 5,
                                                                 n // 5 + 3)),
                            ("iterate", await _iterate_walk(repo, order_by, filters, n + 3))):
                        cases += 1
                        if got != expected:
                            failures.append(f"{what} {where}: got {got}, expected {expected}")
    finally:
        await db.close()
    return cases, failures


async def main(url: str, backend: str, seed: int, n: int) -> dict[str, Any]:
    """Every configuration of the matrix, on one backend."""
    total = 0
    failures: list[str] = []
    for use_tz in USE_TZ:
        for timezone in TIMEZONES:
            cases, found = await check(url, backend, use_tz=use_tz, timezone=timezone, seed=seed,
                                       n=n)
            total += cases
            failures += found
            seed += 1
    return {"cases": total, "failures": failures}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["sqlite", "postgres"], required=True)
    parser.add_argument("--url", default="sqlite://:memory:")
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--rows", type=int, default=24)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.url, args.backend, args.seed, args.rows))))

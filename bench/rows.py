"""Rows to objects: what turning one fetched row into a Tortoise instance costs, by part.

    .venv/bin/python bench/rows.py                 # 1,000 User rows, best of 7 x 200 builds
    .venv/bin/python bench/rows.py --rows 100 --repeat 2000

For the example ``User`` (three ``DatetimeField`` columns, an int key, two strings), on rows
fetched once from PostgreSQL by asyncpg, it times per row, best of ``--runs``:

- asyncpg's own fetch of the rows (the floor every contender pays: wire and decoding);
- Tortoise 1.1.9's ``User._init_from_db(**dict(record))``, what a QuerySet does per row;
- our compiled row builder (``aegis_tortoise._select.row_plan(...).build``);
- its parts: ``datetime.astimezone`` into the configured zone for the two non-null
  datetimes (Tortoise's ``DatetimeField.to_python_value`` with ``use_tz``), and an empty
  instance with its attributes set from one dict (``__new__`` + ``__dict__.update``).

The builder's output is checked equal to Tortoise's before anything is timed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg
from tortoise import Tortoise, timezone
from tortoise.backends.asyncpg.executor import AsyncpgExecutor

from aegis_tortoise._select import row_plan

# The columns in the order of User's select list (fields_db_projection), as the table holds
# them: created_at, updated_at, deleted_at (NULL), id, email, name.
_ROWS = ("SELECT now() - g * interval '1 second', now(), NULL::timestamptz, g, "
         "'user' || g || '@example.com', 'name ' || g FROM generate_series(1, $1) AS g")


def _best(fn: Callable[[], Any], rows: int, repeat: int, runs: int) -> float:
    """Microseconds per row of ``fn`` (which handles ``rows`` rows), best of ``runs``."""
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(repeat):
            fn()
        best = min(best, (time.perf_counter() - start) / repeat / rows * 1e6)
    return best


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=200, help="builds per timed run")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--pg-url", default=os.environ.get(
        "AEGIS_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    args = parser.parse_args(argv)
    await Tortoise.init(db_url="sqlite://:memory:",
                        modules={"models": ["aegis_tortoise.examples.models"]})
    try:
        from aegis_tortoise.examples.models import User

        plan = row_plan(User, frozenset(AsyncpgExecutor.DB_NATIVE))
        conn = await asyncpg.connect(args.pg_url)
        try:
            records = await conn.fetch(_ROWS, args.rows)
            fetch_runs = []
            for _ in range(args.runs):
                start = time.perf_counter()
                for _ in range(max(1, args.repeat // 10)):
                    await conn.fetch(_ROWS, args.rows)
                fetch_runs.append((time.perf_counter() - start)
                                  / max(1, args.repeat // 10) / args.rows * 1e6)
        finally:
            await conn.close()
        names = list(plan.attrs)
        ours = plan.build(records)
        theirs = [User._init_from_db(**dict(zip(names, r, strict=True))) for r in records]
        assert [vars(o) for o in ours] == [vars(t) for t in theirs], "builder != Tortoise"
        zone = timezone.get_default_timezone()
        new = User.__new__

        def parts_tz() -> None:
            for r in records:
                r[0].astimezone(zone)
                r[1].astimezone(zone)

        def parts_instance() -> None:
            for r in records:
                new(User).__dict__.update({"created_at": r[0], "updated_at": r[1],
                                           "deleted_at": r[2], "id": r[3], "email": r[4],
                                           "name": r[5], "_partial": False,
                                           "_saved_in_db": True, "_custom_generated_pk": False,
                                           "_await_when_save": {}})

        timed = {
            "asyncpg fetch (wire + decoding)": min(fetch_runs),
            "Tortoise _init_from_db(**row)": _best(
                lambda: [User._init_from_db(**dict(zip(names, r, strict=True)))
                         for r in records], args.rows, args.repeat, args.runs),
            "our row builder": _best(lambda: plan.build(records), args.rows, args.repeat,
                                     args.runs),
            "  of which: 2 x astimezone(zone)": _best(parts_tz, args.rows, args.repeat,
                                                      args.runs),
            "  of which: __new__ + __dict__.update": _best(parts_instance, args.rows,
                                                           args.repeat, args.runs),
        }
    finally:
        await Tortoise.close_connections()
    print(f"{args.rows:,} User rows, best of {args.runs}; zone {zone!r}\n")
    print("| per row | µs |\n|---|--:|")
    for label, value in timed.items():
        print(f"| {label} | {value:.2f} |")


if __name__ == "__main__":
    asyncio.run(main())

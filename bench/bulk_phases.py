"""Where create_many's time goes, phase by phase, against raw asyncpg's unnest insert.

    python bench/bulk_phases.py                    # 15 paired runs of 10,000 dicts
    python bench/bulk_phases.py --heap 400000      # the same in a process holding 400,000
                                                   # extra objects (the collector walks them)

Times, per 10,000-row call of ``UserRepository.create_many`` (dicts), the batch check
(``_create_many.batch_rows``), the column conversion (``_bulk.prepare_batch``), the instance build
(``_bulk.new_instances``, overlapped with the INSERT), the INSERT task
(``_bulk.insert_batch``) and the whole session, next to A's ``INSERT ... SELECT FROM unnest``
on a pooled connection, interleaved and alternating the order. Runs on its own throw-away
database.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg

from aegis_tortoise import DatabaseManager, _bulk, _create_many
from aegis_tortoise.examples.repositories import UserRepository
from bench.c_asyncpg import _UNNEST, now

PHASES: dict[str, list[float]] = {}


def _timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    if asyncio.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                PHASES.setdefault(name, []).append(time.perf_counter() - start)
        return run_async

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            PHASES.setdefault(name, []).append(time.perf_counter() - start)
    return run


def _instrument() -> None:
    _bulk.prepare_batch = _timed("convert (prepare_batch)", _bulk.prepare_batch)
    _bulk.new_instances = _timed("build instances (overlapped)", _bulk.new_instances)
    _bulk.insert_batch = _timed("INSERT task", _bulk.insert_batch)
    _create_many.batch_rows = _timed("check batch (batch_rows)", _create_many.batch_rows)


async def main_async(args: argparse.Namespace) -> int:
    heap = [{"n": [i]} for i in range(args.heap)]  # kept alive: the collector walks it
    admin_url = args.pg_url
    admin = await asyncpg.connect(admin_url)
    name = "aegis_bulk_phases"
    await admin.execute(f"DROP DATABASE IF EXISTS {name}")
    await admin.execute(f"CREATE DATABASE {name}")
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    db = DatabaseManager(url, models=["aegis_tortoise.examples.models"])
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    try:
        await db.generate_schemas()
        _instrument()
        totals: dict[str, list[float]] = {"A": [], "E": []}
        ratios: list[float] = []
        for i in range(args.runs):
            timing: dict[str, float] = {}
            order = ("A", "E") if i % 2 else ("E", "A")
            for who in order:
                rows = [{"email": f"{who}{i}-{j}@x.io", "name": f"N {j}"}
                        for j in range(args.rows)]
                gc.collect()
                start = time.perf_counter()
                if who == "E":
                    async with db.session() as session:
                        await UserRepository(session).create_many(rows)
                else:
                    async with pool.acquire() as conn:
                        await conn.fetch(_UNNEST, [r["email"] for r in rows],
                                         [r["name"] for r in rows], now())
                timing[who] = time.perf_counter() - start
                totals[who].append(timing[who])
                async with pool.acquire() as conn:
                    await conn.execute("TRUNCATE users CASCADE")
            ratios.append(timing["A"] / timing["E"])
        print(f"{args.runs} paired runs of {args.rows:,} dicts; extra heap objects: {len(heap):,}")
        for phase, values in PHASES.items():
            print(f"  {'E ' + phase:<34} {statistics.median(values) * 1000:7.2f} ms")
        for who, values in totals.items():
            print(f"  {who + ' whole call':<34} {statistics.median(values) * 1000:7.2f} ms")
        print(f"  {'E/A (median of paired ratios)':<34} {statistics.median(ratios):7.2f}")
    finally:
        await pool.close()
        await db.close()
        await admin.execute(f"DROP DATABASE IF EXISTS {name}")
        await admin.close()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--heap", type=int, default=0, help="extra live objects in the process")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())

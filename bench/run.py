"""Benchmark aegis-tortoise against raw asyncpg, SQLAlchemy 2 and plain Tortoise (issue 5).

    python bench/run.py                      # full run: 5 rounds, scale 1 (a few minutes)
    python bench/run.py --rounds 1 --scale 0.01 --no-readme   # CI smoke run, < 30 s
    python bench/run.py --only get,update,create_many --rounds 9
    python bench/run.py --json out.json --pg-url postgresql://postgres@db:5432/postgres
    python bench/run.py --heap 1000000 --only list_first,relations,create_many_dicts

Contenders run interleaved in this one process, the order rotated every round, each on its
own database (created on the server of ``--pg-url``, dropped at the end). Each contender's
results are checked against its database once before timing; a failed check makes the
exit status 1 and nothing is timed. The table is printed and written into bench/README.md
(between its result markers) unless ``--no-readme``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import (
    PG_KEYS,
    SQLITE_KEYS,
    Bench,
    PgSetup,
    Results,
    assign_ops,
    sqlite_slots,
)
from bench.heap import allocate, tracked
from bench.report import dump_json, environment, header, log, table, write_readme
from bench.workload import OPS, OPS_BY_KEY, PgDatabases, Sizes

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
README = Path(__file__).resolve().parent / "README.md"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run.py", description=__doc__.split("\n\n", 1)[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="operations: " + ", ".join(op.key for op in OPS))
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiplies calls per sample, seed rows and create_many rows "
                             "(default 1.0; 0.01 for a smoke run)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="timed rounds after one warm-up round (default 5)")
    parser.add_argument("--only", default="",
                        help="comma-separated operations to run (default: all); "
                             "'postgres' or 'sqlite' select a backend's operations")
    parser.add_argument("--contenders", default="A,B,D,E",
                        help="comma-separated subset of A,B,D,E (default: all)")
    parser.add_argument("--pg-url", default=os.environ.get(
        "AEGIS_BENCH_PG_URL", os.environ.get("AEGIS_TEST_PG_URL", DEFAULT_PG_URL)),
        help="admin URL of the PostgreSQL server; the benchmark creates and drops its own "
             "databases there (default $AEGIS_BENCH_PG_URL, $AEGIS_TEST_PG_URL or "
             f"{DEFAULT_PG_URL})")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH",
                        help="also write every sample, median, ratio and check to PATH")
    parser.add_argument("--no-readme", action="store_true",
                        help="do not write the table into bench/README.md")
    parser.add_argument("--no-warmup", action="store_true", help="skip the warm-up round")
    parser.add_argument("--seed", type=int, default=5, help="seed of the random ids")
    parser.add_argument("--heap", type=int, default=0, metavar="N",
                        help="first allocate about N tracked objects that live for the whole "
                             "run, as a service's process holds (default 0); the table goes "
                             "between the README's heap markers")
    args = parser.parse_args(argv)
    if args.scale <= 0 or args.rounds < 1 or args.heap < 0:
        parser.error("--scale must be > 0, --rounds >= 1 and --heap >= 0")
    selected: list[str] = []
    for item in filter(None, (s.strip() for s in args.only.split(","))):
        if item in ("postgres", "sqlite"):
            selected += [op.key for op in OPS if op.backend == item]
        elif item in OPS_BY_KEY:
            selected.append(item)
        else:
            parser.error(f"unknown operation {item!r}; choose from "
                         + ", ".join(op.key for op in OPS))
    args.ops = [op for op in OPS if not selected or op.key in selected]
    args.keys = tuple(k for k in ("A", "B", "D", "E") if k in args.contenders.split(","))
    return args


async def main_async(args: argparse.Namespace) -> int:
    held = allocate(args.heap)  # alive until the run ends, as an app's objects are
    objects = tracked()
    log(f"heap: {args.heap:,} objects allocated; the collector tracks {objects:,}")
    sizes = Sizes.at(args.scale)
    results = Results()
    pg_ops = [op for op in args.ops if op.backend == "postgres"]
    sqlite_ops = [op for op in args.ops if op.backend == "sqlite"]
    pg_version = None
    warmup = not args.no_warmup
    if pg_ops:
        pg_version = await PgDatabases(args.pg_url).server_version()
    env = environment(pg_version)
    log(f"scale {sizes.scale}: seed {sizes.seed_users} users, create_many {sizes.batch_rows} "
        f"rows, units {sizes.units}")
    if pg_ops:
        keys = tuple(k for k in PG_KEYS if k in args.keys)
        async with PgSetup(args.pg_url, keys, sizes) as setup:
            assign_ops(setup.slots, pg_ops)
            bench = Bench("postgres", setup.slots, sizes, pg_ops, seeded=setup.seeded,
                          expected=setup.expected, rounds=args.rounds, results=results,
                          log=log, rng_seed=args.seed)
            if await bench.run_checks():
                log("[postgres] every check passed")
                await bench.run_rounds(warmup=warmup)
    if sqlite_ops and not results.failures:
        # After PostgreSQL: the shared model classes now switch to the sqlite dialect.
        keys = tuple(k for k in SQLITE_KEYS if k in args.keys)
        slots, seeded = await sqlite_slots(keys, sizes)
        try:
            assign_ops(slots, sqlite_ops)
            bench = Bench("sqlite", slots, sizes, sqlite_ops, seeded=seeded, expected={},
                          rounds=args.rounds, results=results, log=log, rng_seed=args.seed)
            if await bench.run_checks():
                log("[sqlite] every check passed")
                await bench.run_rounds(warmup=warmup)
        finally:
            for slot in slots:
                await slot.contender.close()
    only = [op.key for op in args.ops] if len(args.ops) != len(OPS) else None
    text = header(env, sizes, args.rounds, only) + "\n" + _heap_line(args.heap, objects)
    text += "\n\n" + table(results, sizes)
    if results.failures:
        text += "\n\nCHECKS FAILED:\n" + "\n".join(f"- {f}" for f in results.failures)
    print(text)
    if args.json is not None:
        dump_json(args.json, results, sizes, env, args.rounds)
    if not args.no_readme and not results.failures:
        write_readme(README, text, section="heap" if args.heap else "results")
        log(f"wrote {README}")
    del held
    return 1 if results.failures else 0


def _heap_line(heap: int, objects: int) -> str:
    return (f"Heap: {heap:,} objects allocated before the rounds (`--heap`); "
            f"`len(gc.get_objects())` = {objects:,}.")


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(main_async(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())

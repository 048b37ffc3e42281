"""Where E's time goes beyond D's: round trips, wall time and a cProfile per operation.

    python bench/profile_ops.py                          # get, create, update, list, count,
                                                         # create_many; D and E
    python bench/profile_ops.py --ops get --top 30 --contenders D,E,A

For each operation and contender: statements sent per unit of work (every asyncpg
round trip: queries, BEGIN/COMMIT, the pool's reset on release), wall time per unit
without the profiler, then one profiled run: CPU time per unit grouped by package and the
functions with the most own time. Runs on its own throw-away PostgreSQL database.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import io
import pstats
import statistics
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg

from bench.base import Contender
from bench.c_aegis import AegisContender
from bench.c_asyncpg import AsyncpgContender
from bench.c_sqlalchemy import SqlAlchemyContender
from bench.c_tortoise import TortoiseContender
from bench.harness import tortoise_ddl
from bench.workload import Names, PgDatabases, Sizes, seed_pg

DEFAULT_OPS = "get,create,update,list_first,count,relations,create_many"

# --- counting round trips --------------------------------------------------------------------

_counts: Counter[str] = Counter()


def _install_counter() -> None:
    """Count every message exchange of every asyncpg connection, by kind."""
    conn_cls = asyncpg.connection.Connection
    plain_execute = conn_cls.execute
    do_execute = conn_cls._do_execute

    async def execute(self: Any, query: str, *args: Any,
                      timeout: float | None = None) -> Any:  # noqa: ASYNC109 - asyncpg's
        if not args:
            word = query.split(None, 1)[0].upper() if query.strip() else "?"
            _counts["reset" if word == "SELECT" and "advisory_unlock_all" in query
                    else word.lower()] += 1
        return await plain_execute(self, query, *args, timeout=timeout)

    async def _do(self: Any, query: Any, executor: Any, timeout: Any,  # noqa: ASYNC109
                  retry: bool = True, **kwargs: Any) -> Any:
        text = query if isinstance(query, str) else str(query)
        _counts[text.lstrip().split(None, 1)[0].lower()] += 1
        return await do_execute(self, query, executor, timeout, retry, **kwargs)


    conn_cls.execute = execute  # type: ignore[method-assign]
    conn_cls._do_execute = _do  # type: ignore[method-assign]


# --- the operations ------------------------------------------------------------------------


def _op_calls(c: Contender, op: str, n: int, seeded: dict[str, Any], names: Names,  # noqa: PLR0917
              sizes: Sizes) -> tuple[Callable[[], Awaitable[Any]], int]:
    ids = seeded["ids"]
    if op == "create":
        rows = names.rows(n)

        async def calls() -> None:
            for row in rows:
                await c.create(row)
        return calls, n
    if op == "get":
        async def calls() -> None:
            for k in range(n):
                await c.get(ids[(k * 37) % len(ids)])
        return calls, n
    if op.startswith("list_"):
        offset = sizes.offsets()[op]

        async def calls() -> None:
            for _ in range(n):
                await c.list_page(offset)
        return calls, n
    if op == "count":
        async def calls() -> None:
            for _ in range(n):
                await c.count()
        return calls, n
    if op == "update":
        async def calls() -> None:
            for k in range(n):
                await c.update(ids[(k * 37) % len(ids)], f"p{k}")
        return calls, n
    if op == "relations":
        async def calls() -> None:
            for _ in range(n):
                await c.relations(seeded["rel_ids"])
        return calls, n
    if op == "create_many":
        rows = names.rows(sizes.batch_rows)

        async def calls() -> None:
            await c.create_many(rows)
        return calls, 1
    if op == "create_many_dicts":
        dicts = [{"email": e, "name": n} for e, n in names.rows(sizes.batch_rows)]

        async def calls() -> None:
            await c.create_many_dicts(dicts)  # type: ignore[attr-defined]
        return calls, 1
    if op == "concurrent":
        async def calls() -> None:
            env = await c.pool_env()
            try:
                with env.activate():
                    for b in range(max(1, n // 200)):
                        await asyncio.gather(*(env.get_update(ids[(k * 37 + b) % len(ids)],
                                                              f"c{k}") for k in range(200)))
            finally:
                await env.close()
        return calls, max(1, n // 200) * 200
    raise ValueError(op)


def _package(filename: str) -> str:
    if "aegis_tortoise" in filename:
        return "aegis_tortoise"
    for name in ("tortoise", "pypika", "asyncpg", "sqlalchemy", "asyncio", "pydantic",
                 "bench", "typing", "enum", "contextvars", "datetime", "abc"):
        if f"/{name}/" in filename or filename.endswith(f"/{name}.py"):
            return name
    if filename.startswith("~") or filename.startswith("<"):
        return "builtins"
    return "other"


def _by_package(stats: pstats.Stats, per: float) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for (filename, _, _), (_, _, tottime, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        totals[_package(filename)] += tottime / per * 1e6
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


@contextlib.contextmanager
def _profiling(profiler: cProfile.Profile) -> Iterator[None]:
    profiler.enable()
    try:
        yield
    finally:
        profiler.disable()


class _Target:
    """One contender on its database, with the sizes and cleanup the measurements need."""

    def __init__(self, c: Contender, admin: asyncpg.Connection, seeded: dict[str, Any],
                 sizes: Sizes) -> None:
        self.c = c
        self.admin = admin
        self.seeded = seeded
        self.sizes = sizes
        self.names = Names(c.key.replace("+", ""))

    def calls(self, op: str, n: int) -> tuple[Callable[[], Awaitable[Any]], int]:
        return _op_calls(self.c, op, n, self.seeded, self.names, self.sizes)

    async def cleanup(self) -> None:
        await self.admin.execute(f"DELETE FROM users WHERE id > {int(self.seeded['max_id'])}")

    async def statements(self, op: str, n: int) -> dict[str, int]:
        """Warm up, then count the statements of one unit of work."""
        with self.c.activate():
            calls, _ = self.calls(op, max(3, n // 10))
            await calls()
            await self.cleanup()
            calls, _ = self.calls(op, 1)
            _counts.clear()
            await calls()
            counted = dict(_counts)
            await self.cleanup()
        return counted

    async def timed(self, op: str, n: int) -> tuple[float, float]:
        """Wall and process CPU seconds per unit, without the profiler."""
        with self.c.activate():
            calls, units = self.calls(op, n)
            gc.collect()
            start, cpu = time.perf_counter(), time.process_time()
            await calls()
            result = ((time.perf_counter() - start) / units, (time.process_time() - cpu) / units)
            await self.cleanup()
        return result

    async def profiled(self, op: str, n: int, top: int) -> dict[str, Any]:
        with self.c.activate():
            calls, units = self.calls(op, n)
            profiler = cProfile.Profile()
            gc.collect()
            with _profiling(profiler):
                await calls()
            await self.cleanup()
        stats = pstats.Stats(profiler)
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
        return {"cpu_us": stats.total_tt / units * 1e6,  # type: ignore[attr-defined]
                "packages": _by_package(stats, units), "top": out.getvalue()}


async def measure(targets: list[_Target], op: str, n: int, repeat: int, top: int
                  ) -> list[dict[str, Any]]:
    """Statements, then ``repeat`` timed runs interleaved (order rotated), then a profile."""
    results: list[dict[str, Any]] = [
        {"statements": await t.statements(op, n), "walls": [], "cpus": []} for t in targets]
    for r in range(repeat):
        k = r % len(targets)
        for i in list(range(k, len(targets))) + list(range(k)):
            wall, cpu = await targets[i].timed(op, n)
            results[i]["walls"].append(wall)
            results[i]["cpus"].append(cpu)
    for t, result in zip(targets, results, strict=True):
        result.update(await t.profiled(op, n, top))
        result["wall_us"] = statistics.median(result["walls"]) * 1e6
        result["proc_us"] = statistics.median(result["cpus"]) * 1e6
    return results


async def main_async(args: argparse.Namespace) -> None:
    _install_counter()
    sizes = Sizes.at(args.scale)
    dbs = PgDatabases(args.pg_url)
    ddl = await tortoise_ddl("postgres")
    contenders: list[tuple[Contender, asyncpg.Connection]] = []
    seeded: dict[str, Any] = {}
    try:
        for key in args.contenders.split(","):
            url = await dbs.create(f"p{key.lower()}", ddl)
            admin = await asyncpg.connect(url)
            seeded = await seed_pg(admin, sizes, key)
            c: Contender = {"A": AsyncpgContender, "B": SqlAlchemyContender,
                            "D": TortoiseContender, "E": AegisContender}[key](url)
            await c.start()
            contenders.append((c, admin))
        for op in args.ops.split(","):
            n = 1 if op.startswith("create_many") else args.n
            print(f"\n## {op} ({'1 batch of ' + str(sizes.batch_rows) if n == 1 else n} "
                  "units)\n")
            targets = [_Target(c, admin, seeded, sizes) for c, admin in contenders]
            results = await measure(targets, op, n, args.repeat, args.top)
            rows = [(t.c, r) for t, r in zip(targets, results, strict=True)]
            print("| contender | statements per unit | wall µs/unit | CPU µs/unit "
                  "| profiled CPU µs/unit | by package, profiled (µs/unit) |")
            print("|---|---|--:|--:|--:|---|")
            for c, r in rows:
                stm = ", ".join(f"{k} {v}" for k, v in sorted(r["statements"].items()))
                pk = ", ".join(f"{k} {v:.0f}" for k, v in list(r["packages"].items())[:7])
                print(f"| {c.key} | {stm} | {r['wall_us']:.0f} | {r['proc_us']:.0f} "
                      f"| {r['cpu_us']:.0f} | {pk} |")
            if args.top:
                for c, r in rows:
                    print(f"\n### {c.key}: top {args.top} functions by own time ({op})\n")
                    print("```\n" + _trim(r["top"]) + "\n```")
    finally:
        for c, admin in contenders:
            await c.close()
            await admin.close()
        await dbs.drop_all()


def _trim(text: str) -> str:
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    return "\n".join(line.replace(str(Path(sys.prefix)), "$VENV") for line in lines[start:]
                     if line.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--ops", default=DEFAULT_OPS)
    parser.add_argument("--contenders", default="D,E", help="subset of A,B,D,E")
    parser.add_argument("--n", type=int, default=300, help="units per profiled run")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="sizes the seed and create_many (as in run.py)")
    parser.add_argument("--top", type=int, default=0, help="print the top N functions")
    parser.add_argument("--repeat", type=int, default=5,
                        help="unprofiled runs per operation; the median is reported")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()

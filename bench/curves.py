"""Cost curves of the large-data methods (issue 14), at growing table sizes.

    make bench-curves                                # 1k, 10k, 100k, 1M rows (~5 min)
    python bench/curves.py --sizes 1000,10000 --rounds 3 --no-readme

Per size N, on PostgreSQL, paired medians of ``--rounds`` runs (contenders interleaved):

- create_many of N dicts: ours (``create_many``; from 1M rows ``returning=False``, streamed
  from a generator), the floor (asyncpg binary ``copy_records_to_table``, no ids returned),
  plain Tortoise (``bulk_create`` in the session, up to 100k rows);
- iterate over N rows: ours (``repo.iterate(batch_size=1000)``) against an asyncpg cursor
  (``connection.cursor(prefetch=1000)``, Records only), with our peak RSS growth;
- a 50-row page N - 50 rows deep, ordered by email: ``paginate_keyset`` against an OFFSET
  page (``repo.list(skip=...)``);
- update of min(N, 10,000) rows: ``update_many`` against a loop of ``update()`` (up to 10k)
  and hand-written asyncpg (``UPDATE .. FROM unnest``).

Writes ``bench/curves.png`` (log-log) and the table between the ``curves`` markers of
``bench/README.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import re
import resource
import shutil
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg

from aegis_tortoise import DatabaseManager, _cursor, _keyset
from aegis_tortoise.examples.models import User
from aegis_tortoise.examples.repositories import UserRepository

HERE = Path(__file__).resolve().parent
PAGE = 50
UPDATE_CAP = 10_000
TORTOISE_CAP = 100_000
_COLS = "id, email, name, created_at, updated_at, deleted_at"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,100000,1000000",
                        help="comma-separated table sizes (rows)")
    parser.add_argument("--rounds", type=int, default=3, help="paired runs per measurement")
    parser.add_argument("--pg-url", default=os.environ.get(
        "AEGIS_BENCH_PG_URL", os.environ.get(
            "AEGIS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")),
        help="admin URL of the PostgreSQL server")
    parser.add_argument("--png", default=str(HERE / "curves.png"),
                        help="where to write the chart ('' for none)")
    parser.add_argument("--no-readme", action="store_true",
                        help="do not rewrite the curves section of bench/README.md")
    return parser.parse_args(argv)


def _rss_mb() -> float:
    """The process's current resident memory (Linux), else its peak so far."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _rows(n: int, tag: str) -> list[dict[str, str]]:
    return [{"email": f"{tag}-{i:07d}@x.io", "name": f"n{i % 100}"} for i in range(n)]


async def _timed(fn: Callable[[], Awaitable[Any]]) -> float:
    start = time.perf_counter()
    await fn()
    return time.perf_counter() - start


class Curves:
    """One database, its manager and a raw asyncpg connection; results per size."""

    def __init__(self, admin_url: str, rounds: int) -> None:
        self.admin_url = admin_url
        self.url = admin_url.rsplit("/", 1)[0] + "/aegis_bench_curves"
        self.rounds = rounds
        self.results: dict[str, dict[int, float]] = {}
        self.db: DatabaseManager | None = None
        self.conn: asyncpg.Connection | None = None
        self.tag = 0

    def note(self, key: str, n: int, seconds: float) -> None:
        self.results.setdefault(key, {})[n] = seconds

    async def __aenter__(self) -> Curves:
        admin = await asyncpg.connect(self.admin_url)
        try:
            await admin.execute("DROP DATABASE IF EXISTS aegis_bench_curves WITH (FORCE)")
            await admin.execute("CREATE DATABASE aegis_bench_curves")
        finally:
            await admin.close()
        self.db = DatabaseManager(self.url, models=["aegis_tortoise.examples.models"])
        await self.db.generate_schemas()
        self.conn = await asyncpg.connect(self.url)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.conn is not None:
            await self.conn.close()
        if self.db is not None:
            await self.db.close()
        admin = await asyncpg.connect(self.admin_url)
        try:
            await admin.execute("DROP DATABASE IF EXISTS aegis_bench_curves WITH (FORCE)")
        finally:
            await admin.close()

    async def truncate(self) -> None:
        assert self.conn is not None
        await self.conn.execute("TRUNCATE users, policies RESTART IDENTITY CASCADE")

    async def fill(self, n: int) -> None:
        """N rows by COPY (the floor), committed."""
        assert self.conn is not None
        await self.truncate()
        now = datetime.now(UTC)
        await self.conn.copy_records_to_table(
            "users", columns=["email", "name", "created_at", "updated_at"],
            records=((r["email"], r["name"], now, now) for r in _rows(n, "seed")))
        await self.conn.execute("ANALYZE users")

    # -- create_many ---------------------------------------------------------------------

    async def create_many(self, n: int) -> None:
        assert self.db is not None
        assert self.conn is not None
        db, conn = self.db, self.conn
        samples: dict[str, list[float]] = {}
        gc.collect()
        before = peak = _rss_mb()

        async def ours() -> None:
            self.tag += 1
            tag = f"o{self.tag}"
            async with db.session() as session:
                repo = UserRepository(session)
                if n >= 1_000_000:
                    nonlocal peak
                    rows = ({"email": f"{tag}-{i}@x.io", "name": "n"} for i in range(n))

                    def sampled() -> Any:
                        nonlocal peak
                        for i, row in enumerate(rows):
                            if i % 10_000 == 0:
                                peak = max(peak, _rss_mb())
                            yield row

                    await repo.create_many(sampled(), returning=False)
                else:
                    await repo.create_many(_rows(n, tag))

        async def floor() -> None:
            self.tag += 1
            now = datetime.now(UTC)
            rows = ((r["email"], r["name"], now, now) for r in _rows(n, f"f{self.tag}"))
            async with conn.transaction():
                await conn.copy_records_to_table(
                    "users", columns=["email", "name", "created_at", "updated_at"],
                    records=rows)

        async def tortoise() -> None:
            self.tag += 1
            async with db.session():
                await User.bulk_create([User(**r) for r in _rows(n, f"t{self.tag}")],
                                       batch_size=10_000)

        contenders = {"create_many ours": ours, "create_many COPY floor": floor}
        if n <= TORTOISE_CAP:
            contenders["create_many plain Tortoise"] = tortoise
        for _ in range(self.rounds):
            for key, fn in contenders.items():
                await self.truncate()
                gc.collect()
                samples.setdefault(key, []).append(await _timed(fn))
        for key, values in samples.items():
            self.note(key, n, statistics.median(values))
        if n >= 1_000_000:
            self.note("create_many (generator) peak RSS growth (MB)", n, max(0.0, peak - before))

    # -- reads on a table of n rows ------------------------------------------------------

    async def reads(self, n: int) -> None:
        assert self.db is not None
        assert self.conn is not None
        db, conn = self.db, self.conn
        await self.fill(n)
        gc.collect()
        before = _rss_mb()
        seen = 0
        peak = before

        async def ours() -> None:
            nonlocal seen, peak
            seen = 0
            async with db.session() as session:
                async for _user in UserRepository(session).iterate(batch_size=1000):
                    seen += 1
                    if seen % 1000 == 0:
                        peak = max(peak, _rss_mb())

        async def cursor() -> None:
            async with conn.transaction():
                async for _record in conn.cursor(f"SELECT {_COLS} FROM users ORDER BY id",
                                                 prefetch=1000):
                    pass

        samples: dict[str, list[float]] = {}
        for _ in range(self.rounds):
            samples.setdefault("iterate ours", []).append(await _timed(ours))
            samples.setdefault("iterate asyncpg cursor", []).append(await _timed(cursor))
        assert seen == n, (seen, n)
        self.note("iterate peak RSS growth (MB)", n, max(0.0, peak - before))
        depth = max(0, n - PAGE)
        async with db.session() as session:
            repo = UserRepository(session)
            anchor = (await repo.list(skip=max(0, depth - 1), limit=1, order_by="email"))[0]
            ordering = _keyset.keyset_ordering(User, "email")
            # The cursor a page ending at ``anchor`` hands out (no filters).
            cursor_at = _cursor.encode(repo, ordering, _cursor.filters_digest(None, False),
                                       [getattr(anchor, name) for name in ordering])
            keyset_items = (await repo.paginate_keyset(limit=PAGE, order_by="email",
                                                       after=cursor_at)).items
            offset_items = await repo.list(skip=depth, limit=PAGE, order_by="email")
            assert [u.id for u in keyset_items] == [u.id for u in offset_items]
            for _ in range(max(3, self.rounds)):
                samples.setdefault("keyset page", []).append(await _timed(
                    lambda: repo.paginate_keyset(limit=PAGE, order_by="email",
                                                 after=cursor_at)))
                samples.setdefault("OFFSET page", []).append(await _timed(
                    lambda: repo.list(skip=depth, limit=PAGE, order_by="email")))
        for key, values in samples.items():
            self.note(key, n, statistics.median(values))

    # -- updates ---------------------------------------------------------------------------

    async def updates(self, n: int) -> None:
        assert self.db is not None
        assert self.conn is not None
        db, conn = self.db, self.conn
        m = min(n, UPDATE_CAP)
        ids = [r[0] for r in await conn.fetch("SELECT id FROM users ORDER BY id LIMIT $1", m)]
        samples: dict[str, list[float]] = {}

        async def many() -> None:
            async with db.session() as session:
                await UserRepository(session).update_many(
                    [{"id": i, "name": f"m{i}"} for i in ids])

        async def loop() -> None:
            async with db.session() as session:
                repo = UserRepository(session)
                for i in ids:
                    await repo.update(i, name=f"l{i}")

        async def raw() -> None:
            async with conn.transaction():
                await conn.fetch(
                    "UPDATE users SET name = u.n, updated_at = $3 FROM unnest($1::int[], "
                    "$2::varchar[]) AS u(i, n) WHERE users.id = u.i RETURNING users.*",
                    ids, [f"a{i}" for i in ids], datetime.now(UTC))

        for _ in range(self.rounds):
            samples.setdefault("update_many", []).append(await _timed(many))
            samples.setdefault("update() loop", []).append(await _timed(loop))
            samples.setdefault("update asyncpg unnest", []).append(await _timed(raw))
        for key, values in samples.items():
            self.note(key, m, statistics.median(values))


def _table(results: dict[str, dict[int, float]], sizes: list[int]) -> str:
    columns = sorted({n for values in results.values() for n in values} | set(sizes))
    lines = ["| measurement | " + " | ".join(f"{n:,} rows" for n in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for key, values in results.items():
        unit = "" if "MB" in key else " ms"
        cells = []
        for n in columns:
            if n not in values:
                cells.append("")
            elif "MB" in key:
                cells.append(f"{values[n]:.0f}")
            else:
                cells.append(f"{values[n] * 1e3:,.1f}{unit}")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ratios(results: dict[str, dict[int, float]]) -> str:
    def ratio(a: str, b: str, n: int) -> str:
        if n in results.get(a, {}) and n in results.get(b, {}) and results[a][n]:
            return f"{results[b][n] / results[a][n]:.2f}x"
        return "-"

    sizes = sorted(results.get("keyset page", {}))
    lines = ["| rows | keyset vs OFFSET (speed-up) | iterate vs asyncpg cursor | "
             "create_many vs COPY floor | update_many vs update() loop | "
             "update_many vs asyncpg |", "|---|---|---|---|---|---|"]
    for n in sizes:
        m = n if n <= UPDATE_CAP else -1  # update is measured up to UPDATE_CAP rows
        lines.append(
            f"| {n:,} | {ratio('keyset page', 'OFFSET page', n)} | "
            f"{ratio('iterate ours', 'iterate asyncpg cursor', n)} | "
            f"{ratio('create_many ours', 'create_many COPY floor', n)} | "
            f"{ratio('update_many', 'update() loop', m)} | "
            f"{ratio('update_many', 'update asyncpg unnest', m)} |")
    return "\n".join(lines)


def _plot(results: dict[str, dict[int, float]], path: Path) -> None:
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt

    groups = [("create_many", ["create_many ours", "create_many COPY floor",
                               "create_many plain Tortoise"]),
              ("iterate", ["iterate ours", "iterate asyncpg cursor"]),
              ("page at depth N", ["keyset page", "OFFSET page"]),
              ("update (min(N, 10k) rows)", ["update_many", "update() loop",
                                             "update asyncpg unnest"])]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    for ax, (title, keys) in zip(axes.flat, groups, strict=True):
        for key in keys:
            values = results.get(key, {})
            if values:
                xs = sorted(values)
                ax.plot(xs, [values[x] * 1e3 for x in xs], marker="o", label=key)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("rows")
        ax.set_ylabel("ms (median)")
        ax.grid(visible=True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    if Path(path).resolve() == (HERE / "curves.png").resolve():
        # The docs site shows the same chart (docs/large-data.md); mkdocs reads docs/ only.
        shutil.copyfile(path, HERE.parent / "docs" / "assets" / "curves.png")


def _write_readme(table: str, ratios: str) -> None:
    readme = HERE / "README.md"
    text = readme.read_text()
    block = ("<!-- curves:start -->\n"
             f"Measured {datetime.now(UTC):%Y-%m-%d} by `make bench-curves` (median of paired "
             "runs, PostgreSQL, local socket).\n\n"
             f"![cost curves](curves.png)\n\n{ratios}\n\n{table}\n<!-- curves:end -->")
    pattern = re.compile(r"<!-- curves:start -->.*?<!-- curves:end -->", re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text += f"\n## Cost curves (issue 14)\n\n{block}\n"
    readme.write_text(text)


async def main_async(args: argparse.Namespace) -> int:
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    async with Curves(args.pg_url, args.rounds) as curves:
        for n in sizes:
            print(f"-- {n:,} rows", flush=True)
            await curves.create_many(n)
            await curves.reads(n)
            await curves.updates(n)
        results = curves.results
    table, ratios = _table(results, sizes), _ratios(results)
    print(ratios)
    print()
    print(table)
    if args.png:
        _plot(results, Path(args.png))
    if not args.no_readme:
        _write_readme(table, ratios)
    return 0


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(main_async(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())

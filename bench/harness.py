"""Checks, warm-up and timed rounds: contenders interleaved, order rotated every round.

For each round, each operation runs one sample per contender back to back, in an order that
rotates by one place every round; a sample is ``units`` calls timed together, so the
throughput ratio of two contenders in one round compares runs a few seconds apart under the
same machine load. The reported ratio is the median of those per-round ratios.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from aegis_tortoise.examples.models import User
from bench.base import Contender
from bench.c_aegis import AegisContender
from bench.c_asyncpg import AsyncpgContender
from bench.c_sqlalchemy import SqlAlchemyContender
from bench.c_tortoise import TortoiseContender
from bench.counter import STRATEGIES, TASKS
from bench.counter import run_sample as run_counter
from bench.workload import (
    CONCURRENT_TASKS,
    EXAMPLE_MODELS,
    OPS_BY_KEY,
    PAGE,
    REL_POLICIES,
    Names,
    Op,
    PgDatabases,
    Sizes,
    expected_pg,
    seed_email,
    seed_pg,
)

PG_KEYS = ("A", "B", "D", "E")
SQLITE_KEYS = ("B", "D", "E")
# The asyncpg executemany variant of create_many (no ids returned): a footnote to A.
A_EXECUTEMANY = "A:executemany"
# The asyncpg binary COPY variant of create_many_dicts (ids from the sequence, then
# copy_records_to_table): the COPY floor, a footnote to A.
A_COPY = "A:copy"
# The caller's own ``User(email=..., name=...)`` for the batch, no database: the part of the
# "model instances" create_many that no repository can speed up (a footnote to D and E).
CONSTRUCT = "User(...) only"
# create_many batches per sample: one 10,000-row call is ~0.1 s, short enough for one
# collector pass or scheduler hiccup to move a round's ratio by 30 %.
BULK_BATCHES = 3


_BUSY_ATTEMPTS = 10
_BUSY_WAIT = 3.0


def _server_full(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what it was raised from) is PostgreSQL's "too many clients"."""
    while exc is not None:
        if isinstance(exc, asyncpg.TooManyConnectionsError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


class CheckError(AssertionError):
    """A contender returned something other than what the database holds."""


@dataclass
class Results:
    """Throughput samples per operation and contender, one per round, plus check outcomes."""

    samples: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def add(self, op: str, who: str, value: float) -> None:
        self.samples.setdefault(op, {}).setdefault(who, []).append(value)

    def median(self, op: str, who: str) -> float | None:
        values = self.samples.get(op, {}).get(who)
        return statistics.median(values) if values else None

    def ratios(self, op: str, num: str, den: str) -> list[float]:
        a = self.samples.get(op, {}).get(num, [])
        b = self.samples.get(op, {}).get(den, [])
        return [x / y for x, y in zip(a, b, strict=False) if y]

    def ratio(self, op: str, num: str, den: str) -> float | None:
        values = self.ratios(op, num, den)
        return statistics.median(values) if values else None


@dataclass
class Slot:
    """A contender in the run, with how to inspect and clean its database."""

    contender: Contender
    label: str
    admin: asyncpg.Connection | None = None  # PostgreSQL: a side connection to its database
    ops: tuple[str, ...] = ()

    async def fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        if self.admin is not None:
            return [tuple(r) for r in await self.admin.fetch(sql, *args)]
        assert not args
        with self.contender.activate():
            return await self.contender.sql(sql)

    async def execute(self, sql: str) -> None:
        if self.admin is not None:
            await self.admin.execute(sql)
        else:
            await self.fetch(sql)


class Bench:
    """One backend's contenders, data and expectations."""

    def __init__(self, backend: str, slots: list[Slot], sizes: Sizes, ops: list[Op], *,
                 seeded: dict[str, Any], expected: dict[str, Any], rounds: int,
                 results: Results, log: Callable[[str], None], rng_seed: int) -> None:
        self.backend = backend
        self.slots = slots
        self.sizes = sizes
        self.ops = ops
        self.seeded = seeded
        self.expected = expected
        self.rounds = rounds
        self.results = results
        self.log = log
        self.rng_seed = rng_seed
        self.names = {s.label: Names(s.label.replace(":", "")) for s in slots}

    # -- inputs, identical for every contender in a round ---------------------------------

    def _rng(self, op: str, round_no: int) -> random.Random:
        return random.Random(f"{self.rng_seed}-{op}-{round_no}")

    def _ids(self, op: str, round_no: int, count: int, *, distinct: bool = False) -> list[int]:
        ids = self.seeded["ids"]
        rng = self._rng(op, round_no)
        if distinct:
            return rng.sample(ids, count)
        return [rng.choice(ids) for _ in range(count)]

    async def _cleanup(self, slot: Slot, *, vacuum: bool = False) -> None:
        await slot.execute(f"DELETE FROM users WHERE id > {int(self.seeded['max_id'])}")
        if vacuum and slot.admin is not None:
            # Rewritten and re-analysed: 30,000 rows in and out per sample otherwise bloat the
            # table and its indexes round after round, and the planner's choices for the list
            # pages (a prepared statement's generic plan at offset 4,500) drift with it.
            await slot.execute("VACUUM FULL ANALYZE users")

    # -- one timed sample -------------------------------------------------------------------

    async def sample(self, slot: Slot, op: str, round_no: int) -> float:
        """Run ``units`` of ``op`` on ``slot``; return the throughput (units per second)."""
        c = slot.contender
        units = self.sizes.units[op]
        base = op.removeprefix("sqlite_")
        calls: Callable[[], Awaitable[Any]]
        if base == "create":
            rows = self.names[slot.label].rows(units)

            async def calls() -> None:
                for row in rows:
                    await c.create(row)
        elif base == "get":
            ids = self._ids(op, round_no, units)

            async def calls() -> None:
                for i in ids:
                    await c.get(i)
        elif base.startswith("list_"):
            offset = self.sizes.offsets()[base]

            async def calls() -> None:
                for _ in range(units):
                    await c.list_page(offset)
        elif base == "count":
            async def calls() -> None:
                for _ in range(units):
                    await c.count()
        elif base in ("update", "dropin"):
            ids = self._ids(op, round_no, units)
            tag = "upd" if base == "update" else "dropin"
            names = [f"{tag} {round_no}-{k}" for k in range(units)]
            write = getattr(c, base)

            async def calls() -> None:
                for i, name in zip(ids, names, strict=True):
                    await write(i, name)
        elif base == "relations":
            rel_ids = self.seeded["rel_ids"]

            async def calls() -> None:
                for _ in range(units):
                    await c.relations(rel_ids)
        elif base in ("create_many", "create_many_dicts"):
            batches = [self._batch(slot, base) for _ in range(BULK_BATCHES)]
            method = self._bulk_method(slot, base)
            units = sum(map(len, batches))

            async def calls() -> None:
                for rows in batches:
                    await method(rows)
        elif base == "concurrent":
            return await self._sample_concurrent(slot, round_no)
        elif base in STRATEGIES:
            return await self._sample_counter(slot, op, units)
        else:  # pragma: no cover
            raise ValueError(op)
        gc.collect()
        with c.activate():
            start = time.perf_counter()
            await calls()
            elapsed = time.perf_counter() - start
        if base.startswith("create"):
            await self._cleanup(slot, vacuum=base.startswith("create_many"))
        return units / elapsed

    def _construct_rate(self, slot: Slot, round_no: int) -> float:
        """Rows/s of building the batch's model instances alone (what D and E both pay)."""
        del round_no  # the same rows every round: nothing is written
        rows = self.names[slot.label].rows(self.sizes.batch_rows)
        gc.collect()
        start = time.perf_counter()
        built = [User(email=e, name=n) for e, n in rows]
        elapsed = time.perf_counter() - start
        return len(built) / elapsed

    def _batch(self, slot: Slot, base: str) -> list[Any]:
        rows = self.names[slot.label].rows(self.sizes.batch_rows)
        if base == "create_many_dicts":
            return [{"email": e, "name": n} for e, n in rows]
        return rows

    @staticmethod
    def _bulk_method(slot: Slot, base: str) -> Callable[[list[Any]], Awaitable[Any]]:
        if slot.label == A_EXECUTEMANY:
            return slot.contender.create_many_em  # type: ignore[attr-defined,no-any-return]
        if slot.label == A_COPY:
            return slot.contender.create_many_copy  # type: ignore[attr-defined,no-any-return]
        return getattr(slot.contender, base)  # type: ignore[no-any-return]

    async def _sample_concurrent(self, slot: Slot, round_no: int) -> float:
        for attempt in range(1, _BUSY_ATTEMPTS + 1):
            try:
                return await self._sample_concurrent_once(slot, round_no)
            except Exception as exc:
                if not _server_full(exc) or attempt == _BUSY_ATTEMPTS:
                    raise
                self.log(f"[{self.backend}] {slot.label} concurrent: the server has no free "
                         f"connection slot (other clients); retrying in {_BUSY_WAIT} s")
                await asyncio.sleep(_BUSY_WAIT)
        raise AssertionError("unreachable")

    async def _sample_concurrent_once(self, slot: Slot, round_no: int) -> float:
        batches = self.sizes.units["concurrent"] // CONCURRENT_TASKS
        env = await slot.contender.pool_env()
        try:
            with env.activate():
                warm = self._ids("concurrent-warm", round_no, CONCURRENT_TASKS, distinct=True)
                await asyncio.gather(*(env.get_update(i, "warm") for i in warm))
                work = [self._ids("concurrent", round_no * 1000 + b, CONCURRENT_TASKS,
                                  distinct=True) for b in range(batches)]
                gc.collect()
                start = time.perf_counter()
                for b, ids in enumerate(work):
                    await asyncio.gather(*(env.get_update(i, f"conc {round_no}-{b}")
                                           for i in ids))
                elapsed = time.perf_counter() - start
        finally:
            await env.close()
        return batches * CONCURRENT_TASKS / elapsed

    async def _sample_counter(self, slot: Slot, op: str, units: int) -> float:
        """The contended counter (bench/counter.py); a lost increment fails the run."""
        env = await slot.contender.counter_env()  # type: ignore[attr-defined]
        try:
            gc.collect()
            elapsed, value = await run_counter(env, op, units)
        finally:
            await env.close()
        if value != units:
            self._fail(slot, op, f"{units} increments left the counter at {value}")
        return units / elapsed

    # -- correctness, once per contender before any timing ----------------------------------

    def _fail(self, slot: Slot, op: str, message: str) -> None:
        raise CheckError(f"[{self.backend}] {slot.label} {op}: {message}")

    async def check(self, slot: Slot, op: str) -> None:
        c = slot.contender
        base = op.removeprefix("sqlite_")
        with contextlib.ExitStack() as stack:
            if isinstance(c, SqlAlchemyContender):
                c.checking = True
                stack.callback(setattr, c, "checking", False)
            with c.activate():
                await self._check(slot, op, base)

    async def _check(self, slot: Slot, op: str, base: str) -> None:  # noqa: PLR0915
        c = slot.contender
        pg = slot.admin is not None
        p1 = "$1" if pg else "{}"

        async def row_of(user_id: int) -> tuple[Any, ...] | None:
            sql = f"SELECT id, email, name FROM users WHERE id = {p1}"
            rows = (await slot.fetch(sql, user_id) if pg
                    else await slot.fetch(sql.format(int(user_id))))
            return tuple(rows[0]) if rows else None

        if base == "create":
            email, name = self.names[slot.label].rows(1)[0]
            user = c.norm_user(await c.create((email, name)))
            if user is None or user[0] is None:
                self._fail(slot, op, f"create returned no id: {user!r}")
            if await row_of(user[0]) != (user[0], email, name):
                self._fail(slot, op, f"row {user[0]} is not in the database as created")
            await self._cleanup(slot)
        elif base == "get":
            for user_id in self._ids("check", 0, 5):
                expected = await row_of(user_id)
                got = c.norm_user(await c.get(user_id))
                if got != expected:
                    self._fail(slot, op, f"get({user_id}) returned {got!r}, expected {expected!r}")
            if c.norm_user(await c.get(10**9)) is not None:
                self._fail(slot, op, "get of a missing id returned a row")
        elif base.startswith("list_"):
            users = [c.norm_user(u) for u in await c.list_page(self.sizes.offsets()[base])]
            emails = [u[1] for u in users if u is not None]
            if emails != self.expected["pages"][base]:
                self._fail(slot, op, f"page differs from the database's: {emails[:3]}...")
        elif base == "count":
            if (got := await c.count()) != self.expected["count"]:
                self._fail(slot, op, f"count {got} != {self.expected['count']}")
        elif base == "update":
            user_id = self._ids("check-update", 0, 1)[0]
            before = await row_of(user_id)
            got = c.norm_user(await c.update(user_id, "checked name"))
            after = await row_of(user_id)
            if after is None or before is None or after[2] != "checked name" or (
                    got is not None and got != after) or after[1] != before[1]:
                self._fail(slot, op, f"update returned {got!r}; database has {after!r}")
        elif base == "dropin":
            user_id = self._ids("check-dropin", 0, 1)[0]
            got = c.norm_user(await c.dropin(user_id, "dropin checked"))
            after = await row_of(user_id)
            if after is None or after[2] != "dropin checked" or got != after:
                self._fail(slot, op, f"dropin returned {got!r}; database has {after!r}")
        elif base == "concurrent":
            env = await c.pool_env()
            ids = self._ids("check-concurrent", 0, CONCURRENT_TASKS, distinct=True)
            try:
                with env.activate():
                    await asyncio.gather(*(env.get_update(i, f"cc{i}") for i in ids))
            finally:
                await env.close()
            rows = await slot.fetch("SELECT id, name FROM users WHERE id = ANY($1::int[])", ids)
            if sorted(rows) != sorted((i, f"cc{i}") for i in ids):
                self._fail(slot, op, "not every concurrent update reached the database")
        elif base in STRATEGIES:
            await self._sample_counter(slot, op, TASKS * 2)  # checks the count itself
        elif base == "relations":
            got = c.norm_relations(await c.relations(self.seeded["rel_ids"]))
            want = [(u, [u] * REL_POLICIES) for u in sorted(self.seeded["rel_ids"])]
            if got != want:
                self._fail(slot, op, "users or their policies differ from the database")
        elif base in ("create_many", "create_many_dicts"):
            batch = self._batch(slot, base)
            rows = [(r["email"], r["name"]) if isinstance(r, dict) else r for r in batch]
            result = await self._bulk_method(slot, base)(batch)
            max_id = int(self.seeded["max_id"])
            db_rows = await slot.fetch(f"SELECT id, email FROM users WHERE id > {max_id}")
            db_ids = [r[0] for r in db_rows]
            if len(db_rows) != len(rows) or len(set(db_ids)) != len(rows):
                self._fail(slot, op, f"{len(db_rows)} rows written for {len(rows)}")
            if {r[1] for r in db_rows} != {r[0] for r in rows}:
                self._fail(slot, op, "the written emails differ from the input")
            ids = c.norm_ids(result)
            if ids is not None and sorted(ids) != sorted(db_ids):
                self._fail(slot, op, "returned ids differ from the written rows' ids")
            if result and not isinstance(result[0], int) and hasattr(result[0], "email"):
                by_id = dict(db_rows)
                if any(by_id.get(u.id) != u.email for u in result):
                    self._fail(slot, op, "an instance got another row's id")
            await self._cleanup(slot)
        self.results.checks.append({"backend": self.backend, "contender": slot.label,
                                    "op": op, "ok": True})

    # -- the run -----------------------------------------------------------------------------

    async def run_checks(self) -> bool:
        for op in self.ops:
            for slot in self.slots:
                if op.key not in slot.ops:
                    continue
                try:
                    await self.check(slot, op.key)
                except Exception as exc:
                    message = (str(exc) if isinstance(exc, CheckError) else
                               f"[{self.backend}] {slot.label} {op.key}: "
                               f"{type(exc).__name__}: {exc}")
                    self.results.failures.append(message)
                    self.results.checks.append({"backend": self.backend,
                                                "contender": slot.label, "op": op.key,
                                                "ok": False, "error": message})
                    self.log(f"CHECK FAILED {message}")
        return not self.results.failures

    async def run_rounds(self, *, warmup: bool) -> None:
        total = self.rounds + (1 if warmup else 0)
        for r in range(total):
            timed = not (warmup and r == 0)
            round_no = r if warmup else r + 1
            start = time.perf_counter()
            for op in self.ops:
                slots = [s for s in self.slots if op.key in s.ops]
                k = round_no % len(slots) if slots else 0
                for slot in slots[k:] + slots[:k]:
                    value = await self.sample(slot, op.key, round_no)
                    if timed:
                        self.results.add(op.key, slot.label, value)
                if op.key == "create_many" and slots:
                    value = self._construct_rate(slots[0], round_no)
                    if timed:
                        self.results.add(op.key, CONSTRUCT, value)
            what = f"round {round_no}/{self.rounds}" if timed else "warm-up round"
            self.log(f"[{self.backend}] {what} done in {time.perf_counter() - start:.1f} s")


# --- building the two benches ----------------------------------------------------------------


def _ops_of(contender: Contender, ops: list[Op]) -> tuple[str, ...]:
    method = {"create": "create", "get": "get", "list_first": "list_page",
              "list_mid": "list_page", "list_last": "list_page", "count": "count",
              "update": "update", "concurrent": "pool_env", "relations": "relations",
              "dropin": "dropin",
              "create_many": "create_many", "create_many_dicts": "create_many_dicts",
              **dict.fromkeys(STRATEGIES, "counter_env")}
    return tuple(op.key for op in ops if contender.has(method[op.key.removeprefix("sqlite_")]))


async def tortoise_ddl(dialect: str) -> str:
    """The example models' CREATE TABLE statements, as Tortoise generates them."""
    from tortoise.context import TortoiseContext
    from tortoise.utils import get_schema_sql

    alias = f"aegis_{dialect}"
    engine = ("tortoise.backends.asyncpg" if dialect == "postgres"
              else "tortoise.backends.sqlite")
    credentials = ({"host": "127.0.0.1", "port": 5432, "user": "postgres", "database": "x"}
                   if dialect == "postgres" else {"file_path": ":memory:"})
    async with TortoiseContext() as ctx:
        await ctx.init(config={
            "connections": {alias: {"engine": engine, "credentials": credentials}},
            "apps": {"models": {"models": [EXAMPLE_MODELS], "default_connection": alias}},
        }, init_connections=False)
        return get_schema_sql(ctx.connections.get(alias), safe=False)


PG_FACTORIES: dict[str, Callable[[str], Contender]] = {
    "A": AsyncpgContender, "B": SqlAlchemyContender, "D": TortoiseContender,
    "E": AegisContender}


class PgSetup:
    """Create, seed, connect and finally drop the PostgreSQL databases of the contenders."""

    def __init__(self, admin_url: str, keys: tuple[str, ...], sizes: Sizes,
                 factories: dict[str, Callable[[str], Contender]] | None = None) -> None:
        self.dbs = PgDatabases(admin_url)
        self.keys = keys
        self.sizes = sizes
        self.factories = factories or PG_FACTORIES
        self.slots: list[Slot] = []
        self.seeded: dict[str, Any] = {}
        self.expected: dict[str, Any] = {}

    async def __aenter__(self) -> PgSetup:
        try:
            await self._setup()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def _setup(self) -> None:
        ddl = await tortoise_ddl("postgres")
        for n, key in enumerate(self.keys):
            url = await self.dbs.create(f"{n}{key[0].lower()}", ddl)
            admin = await asyncpg.connect(url)
            seeded = await seed_pg(admin, self.sizes, key)
            if self.seeded and seeded["ids"] != self.seeded["ids"]:
                raise RuntimeError("the contenders' databases were seeded differently")
            self.seeded = seeded
            if not self.expected:
                self.expected = await expected_pg(admin, self.sizes)
            contender = self.factories[key](url)
            await contender.start()
            self.slots.append(Slot(contender, key, admin))
            if key == "A":
                assert isinstance(contender, AsyncpgContender)
                self.slots.append(Slot(contender, A_EXECUTEMANY, admin))
                self.slots.append(Slot(contender, A_COPY, admin))

    async def __aexit__(self, *exc: object) -> None:
        for slot in self.slots:
            if slot.label in (A_EXECUTEMANY, A_COPY):
                continue
            with contextlib.suppress(Exception):
                await slot.contender.close()
            if slot.admin is not None:
                with contextlib.suppress(Exception):
                    await slot.admin.close()
        await self.dbs.drop_all()


SQLITE_FACTORIES: dict[str, Callable[[], Contender]] = {
    "B": lambda: SqlAlchemyContender("sqlite+aiosqlite:///:memory:", backend="sqlite"),
    "D": lambda: TortoiseContender("sqlite://:memory:", backend="sqlite"),
    "E": lambda: AegisContender("sqlite:///:memory:", backend="sqlite"),
}


async def sqlite_slots(keys: tuple[str, ...], sizes: Sizes,
                       factories: dict[str, Callable[[], Contender]] | None = None,
                       ) -> tuple[list[Slot], dict[str, Any]]:
    """In-memory sqlite contenders, each seeded with ``seed_users`` users."""
    factories = factories or SQLITE_FACTORIES
    slots: list[Slot] = []
    seeded: dict[str, Any] = {}
    for key in keys:
        contender = factories[key]()
        await contender.start()
        rows = [(seed_email(i), f"name {i % 10} {key}") for i in range(sizes.seed_users)]
        with contender.activate():
            await contender.seed(rows)  # type: ignore[attr-defined]
        slot = Slot(contender, key)
        ids = [r[0] for r in await slot.fetch("SELECT id FROM users ORDER BY id")]
        if seeded and ids != seeded["ids"]:
            raise RuntimeError("the sqlite databases were seeded differently")
        seeded = {"ids": ids, "max_id": max(ids), "rel_ids": ids[:1]}
        slots.append(slot)
    return slots, seeded


def assign_ops(slots: list[Slot], ops: list[Op]) -> None:
    for slot in slots:
        if slot.label == A_EXECUTEMANY:
            slot.ops = tuple(op.key for op in ops if op.key == "create_many")
        elif slot.label == A_COPY:
            slot.ops = tuple(op.key for op in ops if op.key == "create_many_dicts")
        else:
            slot.ops = _ops_of(slot.contender, ops)


__all__ = ["A_COPY", "A_EXECUTEMANY", "CONSTRUCT", "OPS_BY_KEY", "PAGE", "PG_FACTORIES", "PG_KEYS",
           "SQLITE_FACTORIES", "SQLITE_KEYS", "Bench", "PgSetup", "Results", "assign_ops",
           "sqlite_slots", "tortoise_ddl"]

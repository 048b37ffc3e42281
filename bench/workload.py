"""The workload: operations, their sizes at a given scale, the seed data and the databases.

Every contender runs the same operations on the same data, each on its own database with the
same schema (the example models' DDL as Tortoise generates it), so no contender disturbs
another's data and no one gets a different table layout.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

EXAMPLE_MODELS = "aegis_tortoise.examples.models"
PAGE = 50
REL_USERS = 100
REL_POLICIES = 10
CONCURRENT_TASKS = 200
POOL_SIZE = 20
MAX_OVERFLOW = 10
# Every contender's main pool gets the same ceiling: SQLAlchemy's and aegis' pool_size +
# max_overflow. The concurrent operation uses a fresh pool of exactly POOL_SIZE connections
# (max_overflow=0) per sample, so that the run never holds more than about 30 connections.
MAX_CONNECTIONS = POOL_SIZE + MAX_OVERFLOW
SEED_PREFIX = "seed"


@dataclass(frozen=True)
class Op:
    """One benchmarked operation: ``units`` calls per sample, throughput in ``unit``/s."""

    key: str
    label: str
    unit: str
    backend: str  # "postgres" or "sqlite"
    b_target: float  # E must be at least this many times B's throughput
    d_target: float  # ... and this many times D's
    a_target: float | None = None  # ... and this many times A's (create_many only)


OPS: tuple[Op, ...] = (
    Op("create", "create one row (own transaction)", "op", "postgres", 1.5, 0.95),
    Op("get", "get by primary key", "op", "postgres", 1.5, 0.95),
    Op("list_first", "list 50 rows, filter + order, first page", "op", "postgres", 1.5, 0.95),
    Op("list_mid", "list 50 rows, filter + order, middle page", "op", "postgres", 1.5, 0.95),
    Op("list_last", "list 50 rows, filter + order, last page", "op", "postgres", 1.5, 0.95),
    Op("count", "count with a filter", "op", "postgres", 1.5, 0.95),
    Op("update", "update one row by id", "op", "postgres", 1.5, 0.95),
    Op("concurrent", "200 tasks: get + update, pool of 20", "task", "postgres", 1.5, 0.95),
    Op("relations", "100 users + 10 policies each, with relations", "op", "postgres",
       1.5, 0.95),
    Op("create_many", "create_many of N rows (model instances)", "row", "postgres",
       2.0, 3.0, 0.7),
    Op("create_many_dicts", "create_many of N rows (dicts)", "row", "postgres", 2.0, 3.0, 0.7),
    # The drop-in: a service's own plain Tortoise calls (no session) under our
    # RegisterTortoise (E) against Tortoise's (D); A and B have no such thing.
    Op("dropin", "plain Tortoise outside sessions: get + save (RegisterTortoise)", "op",
       "postgres", 1.5, 0.95),
    # The contended counter (issue 19): 50 tasks, one row, pool 20. A is asyncpg with
    # SELECT ... FOR UPDATE in every row; E each of the library's strategies. B and D: none.
    Op("counter_for_update", "contended counter: 50 tasks on 1 row, for_update", "inc",
       "postgres", 0.0, 0.0, 0.8),
    Op("counter_versioned", "contended counter: 50 tasks on 1 row, expected_version + retry",
       "inc", "postgres", 0.0, 0.0),
    Op("counter_serializable", "contended counter: 50 tasks on 1 row, SERIALIZABLE + "
       "with_db_retry", "inc", "postgres", 0.0, 0.0),
    Op("sqlite_create", "sqlite: create one row", "op", "sqlite", 1.5, 0.95),
    Op("sqlite_get", "sqlite: get by primary key", "op", "sqlite", 1.5, 0.95),
    Op("sqlite_create_many", "sqlite: create_many of N rows", "row", "sqlite", 2.0, 3.0),
)
OPS_BY_KEY = {op.key: op for op in OPS}


@dataclass(frozen=True)
class Sizes:
    """How much work one sample of each operation does, at a given ``--scale``."""

    scale: float
    seed_users: int
    batch_rows: int
    units: dict[str, int] = field(default_factory=dict)

    @classmethod
    def at(cls, scale: float) -> Sizes:
        def n(base: int, minimum: int = 1) -> int:
            return max(minimum, round(base * scale))

        units = {
            "create": n(400, 3), "get": n(1500, 5), "list_first": n(400, 3),
            "list_mid": n(400, 3), "list_last": n(400, 3), "count": n(400, 3),
            "update": n(400, 3), "concurrent": CONCURRENT_TASKS * n(3),
            "relations": n(40, 1), "dropin": n(400, 3), "create_many": 1, "create_many_dicts": 1,
            "counter_for_update": n(1000, 50), "counter_versioned": n(1000, 50),
            "counter_serializable": n(1000, 50),
            "sqlite_create": n(1000, 3), "sqlite_get": n(3000, 5), "sqlite_create_many": 1,
        }
        return cls(scale=scale, seed_users=n(10_000, 400), batch_rows=n(10_000, 100),
                   units=units)

    @property
    def active_users(self) -> int:
        """Seed users that match the list/count filter (``deleted_at IS NULL``)."""
        return sum(1 for i in range(self.seed_users) if not is_soft_deleted(i))

    def offsets(self) -> dict[str, int]:
        """The list operations' offsets: first, middle and last full page."""
        active = self.active_users
        return {"list_first": 0, "list_mid": (active // 2) // PAGE * PAGE,
                "list_last": active - PAGE}


def is_soft_deleted(i: int) -> bool:
    """Every tenth seed user is soft-deleted, so the list/count filter has work to do."""
    return i % 10 == 9


def seed_email(i: int) -> str:
    # Zero-padded and shuffled by a multiplier, so email order differs from id order.
    return f"{SEED_PREFIX}{(i * 7919) % 1_000_003:07d}-{i}@example.com"


class Names:
    """Unique emails for rows created during the run (cleaned up between samples)."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.n = 0

    def rows(self, count: int) -> list[tuple[str, str]]:
        start = self.n
        self.n += count
        return [(f"w{self.tag}{i}@bench.example", f"name {i % 97}")
                for i in range(start, start + count)]


def now() -> datetime:
    return datetime.now(UTC)


# --- PostgreSQL databases ------------------------------------------------------------------


def pg_dsn(url: str) -> str:
    """A libpq URL for asyncpg from a SQLAlchemy- or Tortoise-style one."""
    for prefix in ("postgresql+asyncpg://", "asyncpg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix):]
    return url


def db_url(admin_url: str, database: str) -> str:
    """The URL of ``database`` on the server of ``admin_url`` (libpq form)."""
    base = pg_dsn(admin_url).split("?", 1)[0].rsplit("/", 1)[0]
    return f"{base}/{database}"


class PgDatabases:
    """Throw-away databases for the contenders, created and dropped via the admin database."""

    def __init__(self, admin_url: str) -> None:
        self.admin_dsn = pg_dsn(admin_url)
        self.prefix = f"aegis_bench_{uuid.uuid4().hex[:8]}"
        self.created: list[str] = []

    async def server_version(self) -> str:
        conn = await asyncpg.connect(self.admin_dsn, timeout=10)
        try:
            return str(await conn.fetchval("SHOW server_version"))
        finally:
            await conn.close()

    async def create(self, suffix: str, ddl: str) -> str:
        name = f"{self.prefix}_{suffix}"
        conn = await asyncpg.connect(self.admin_dsn, timeout=10)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        self.created.append(name)
        url = db_url(self.admin_dsn, name)
        conn = await asyncpg.connect(url, timeout=10)
        try:
            await conn.execute(ddl)
        finally:
            await conn.close()
        return url

    async def drop_all(self) -> None:
        if not self.created:
            return
        conn = await asyncpg.connect(self.admin_dsn, timeout=10)
        try:
            for name in self.created:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()
        self.created.clear()


async def seed_pg(conn: asyncpg.Connection, sizes: Sizes, tag: str) -> dict[str, Any]:
    """Insert the seed users and the policies of the first users; return what was seeded.

    Names carry the contender's ``tag``, so a contender that read another contender's
    database would fail its checks.
    """
    t = now()
    emails = [seed_email(i) for i in range(sizes.seed_users)]
    names = [f"name {i % 10} {tag}" for i in range(sizes.seed_users)]
    deleted = [t - timedelta(days=1) if is_soft_deleted(i) else None
               for i in range(sizes.seed_users)]
    ids = [r[0] for r in await conn.fetch(
        """INSERT INTO users (email, name, created_at, updated_at, deleted_at)
           SELECT e, n, $4, $4, d FROM unnest($1::text[], $2::text[], $3::timestamptz[])
           AS t(e, n, d) RETURNING id""", emails, names, deleted, t)]
    # Relations load the first REL_USERS seed users (soft-deleted ones too: no filter).
    rel_ids = ids[:REL_USERS]
    await conn.execute(
        """INSERT INTO policies (user_id, title, created_at, updated_at)
           SELECT u, 'policy ' || k, $2, $2 FROM unnest($1::int[]) AS u,
           generate_series(1, $3) AS k""", rel_ids, t, REL_POLICIES)
    await conn.execute("ANALYZE")
    return {"ids": ids, "max_id": max(ids), "rel_ids": rel_ids}


async def expected_pg(conn: asyncpg.Connection, sizes: Sizes) -> dict[str, Any]:
    """What the checks compare against, read straight from a seeded database."""
    pages = {}
    for key, offset in sizes.offsets().items():
        rows = await conn.fetch(
            "SELECT email FROM users WHERE deleted_at IS NULL ORDER BY email "
            "OFFSET $1 LIMIT $2", offset, PAGE)
        pages[key] = [r[0] for r in rows]
    count = await conn.fetchval("SELECT count(*) FROM users WHERE deleted_at IS NULL")
    return {"pages": pages, "count": count}

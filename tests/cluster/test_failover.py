"""Failover under load: a multi-host URL, the primary stopped, the synchronous standby promoted."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable

import asyncpg
import pytest

from aegis_tortoise import (
    ConfigurationError,
    DatabaseConnectionError,
    DatabaseManager,
    DatabaseSettings,
    TransactionOutcomeUnknownError,
    with_db_retry,
)
from aegis_tortoise.config import split_hosts
from tests.cluster.conftest import ClusterFactory, make_pair

pytestmark = pytest.mark.postgres

TASKS = 20
POOL_TIMEOUT = 10.0


async def test_failover_to_the_synchronous_standby(cluster_factory: ClusterFactory) -> None:
    primary, standby = make_pair(cluster_factory, "fo")
    try:
        await _failover(primary_port=primary.port, standby_port=standby.port,
                        stop=lambda: primary.stop("immediate"), promote=standby.promote)
    finally:
        standby.stop("immediate")
        primary.stop("immediate")


async def _failover(*, primary_port: int, standby_port: int, stop: Callable[[], None],
                    promote: Callable[[], None]) -> None:
    conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{primary_port}/postgres")
    await conn.execute("CREATE TABLE ledger (id text PRIMARY KEY, task int, at float8)")
    await conn.close()
    url = (f"postgresql://postgres@127.0.0.1:{primary_port},127.0.0.1:{standby_port}"
           "/postgres?target_session_attrs=read-write")
    db = DatabaseManager(url, models=[], pool_size=TASKS, max_overflow=0,
                         pool_timeout=POOL_TIMEOUT)
    assert f"127.0.0.1:{primary_port},127.0.0.1:{standby_port}" in db.url.masked()
    acked: dict[str, float] = {}
    unknown: set[str] = set()
    failed: dict[str, BaseException] = {}
    attempts: dict[str, int] = {}
    running = True
    promoted = float("inf")
    resumed_event = asyncio.Event()

    @with_db_retry(max_attempts=12, backoff_factor=0.05, max_backoff=1.0)
    async def write(key: str, task: int) -> None:
        attempts[key] = attempts.get(key, 0) + 1
        async with db.session() as session:
            await session.execute("INSERT INTO ledger VALUES (:id, :task, :at)",
                                  {"id": key, "task": task, "at": time.time()})

    async def worker(task: int) -> None:
        n = 0
        while running:
            key = f"{task}-{n}"
            n += 1
            try:
                await write(key, task)
                acked[key] = time.monotonic()
                if acked[key] > promoted:
                    resumed_event.set()
            except TransactionOutcomeUnknownError:
                unknown.add(key)  # reported as such: with_db_retry did not retry it
            except DatabaseConnectionError as exc:
                failed[key] = exc

    workers = [asyncio.create_task(worker(t)) for t in range(TASKS)]
    try:
        await asyncio.sleep(1.0)
        before = len(acked)
        stopped = time.monotonic()
        await asyncio.to_thread(stop)
        await asyncio.sleep(0.3)
        await asyncio.to_thread(promote)
        promoted = time.monotonic()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(resumed_event.wait(), POOL_TIMEOUT)
        await asyncio.sleep(1.0)
    finally:
        running = False
        await asyncio.gather(*workers)
        await db.close()
    resumed = min((t for t in acked.values() if t > promoted), default=float("inf"))
    times = sorted(acked.values())
    gap = max(b - a for a, b in itertools.pairwise(times))
    assert resumed - promoted < POOL_TIMEOUT
    assert failed == {}
    for key in unknown:
        assert attempts[key] >= 1
    conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{standby_port}/postgres")
    try:
        assert await conn.fetchval("SELECT pg_is_in_recovery()") is False
        on_new_primary = {r["id"] for r in await conn.fetch("SELECT id FROM ledger")}
    finally:
        await conn.close()
    # Synchronous replication: every acknowledged write survived the failover, and nothing
    # is there that was neither acknowledged nor reported as outcome-unknown.
    print(f"\nfailover: {before} writes before the stop, {len(acked)} acknowledged, "
          f"{len(unknown)} outcome unknown ({len(unknown & on_new_primary)} of them "
          f"committed), {len(failed)} failed; stop->promote {promoted - stopped:.2f} s; "
          f"longest pause between acknowledged writes {gap:.2f} s; load resumed "
          f"{resumed - promoted:.2f} s after promote")
    assert set(acked) <= on_new_primary, sorted(set(acked) - on_new_primary)[:10]
    assert on_new_primary - set(acked) <= unknown


def test_multi_host_urls_in_settings_and_configs(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "postgresql://app:s3cr3tpw@db1:5432,db2:5433/shop?target_session_attrs=read-write"
    monkeypatch.setenv("DATABASE_URL", url)
    settings = DatabaseSettings()
    assert "s3cr3tpw" not in repr(settings)
    db = DatabaseManager.from_settings(settings, models=[])
    assert db.url.masked() == "postgresql://app:***@db1:5432,db2:5433/shop"
    assert db.url.options == {"target_session_attrs": "read-write"}
    assert split_hosts(str(db.url.host)) == (["db1", "db2"], [5432, 5433])
    config = {"connections": {"default": url.replace("postgresql", "postgres", 1)},
              "apps": {"models": {"models": ["aegis_tortoise.examples.models"]}}}
    from_config = DatabaseManager.from_tortoise_config(config)
    assert from_config.url.masked() == "asyncpg://app:***@db1:5432,db2:5433/shop"
    assert from_config.pgbouncer is False
    config["connections"]["default"] += "&pgbouncer=true"
    assert DatabaseManager.from_tortoise_config(config).pgbouncer is True
    with pytest.raises(ConfigurationError, match="host:port"):
        DatabaseManager("postgresql://u@db1:x,db2/db", models=[])

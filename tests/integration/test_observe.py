"""Statement timings, the slow-query log, db.stats() and OpenTelemetry spans, on sqlite and
PostgreSQL."""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aegis_tortoise import (
    DatabaseConnectionError,
    DatabaseManager,
    PoolTimeoutError,
    with_db_retry,
)
from aegis_tortoise.config import DatabaseSettings
from aegis_tortoise.examples.models import User
from tests.conftest import EXAMPLE_MODELS, reset_pg_schema

SECRET = "hunter2-secret-value"


def _slow_sql(backend: str) -> str:
    """A statement of ~50 ms or more with one parameter, :secret."""
    if backend == "postgres":
        return "SELECT pg_sleep(0.05), CAST(:secret AS text) AS s"
    return ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
            "WHERE x < 400000) SELECT count(*), :secret FROM c")


@pytest.fixture
async def manager_factory(backend: str, db_url: str) -> AsyncIterator[
        list[DatabaseManager]]:
    if backend == "postgres":
        await reset_pg_schema(db_url)
    made: list[DatabaseManager] = []
    yield made
    for db in made:
        await db.close()


def _make(made: list[DatabaseManager], url: str, **settings: object) -> DatabaseManager:
    db = DatabaseManager(url, models=EXAMPLE_MODELS, pool_size=1, max_overflow=0,
                         pool_timeout=0.5, settings=DatabaseSettings(**settings))
    made.append(db)
    return db


async def _settle() -> None:
    # asyncpg reports a statement to its query loggers with loop.call_soon.
    for _ in range(3):
        await asyncio.sleep(0)


def _slow_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "aegis_tortoise.sql"
            and r.levelno == logging.WARNING and "slow query" in r.getMessage()]


async def test_slow_query_warning_redacts_parameters(
        backend: str, db_url: str, manager_factory: list[DatabaseManager],
        caplog: pytest.LogCaptureFixture) -> None:
    db = _make(manager_factory, db_url, database_slow_query_ms=20)
    caplog.set_level(logging.WARNING, logger="aegis_tortoise.sql")
    async with db.session() as session:
        await session.execute("SELECT 1")
        await session.execute(_slow_sql(backend), {"secret": SECRET})
    await _settle()
    (record,) = _slow_records(caplog)
    message = record.getMessage()
    assert "slow_query_ms=20" in message
    assert "1 redacted" in message
    assert SECRET not in message
    assert float(re.search(r"slow query: ([\d.]+) ms", message).group(1)) >= 20  # type: ignore[union-attr]
    stats = db.stats()
    assert stats["slow_statements"] == 1
    assert stats["statements"] >= 3  # BEGIN or the like, SELECT 1, the slow one


async def test_slow_query_parameters_when_asked(
        backend: str, db_url: str, manager_factory: list[DatabaseManager],
        caplog: pytest.LogCaptureFixture) -> None:
    db = _make(manager_factory, db_url, database_slow_query_ms=20,
               database_slow_query_parameters=True)
    caplog.set_level(logging.WARNING, logger="aegis_tortoise.sql")
    async with db.session() as session:
        await session.execute(_slow_sql(backend), {"secret": SECRET})
    await _settle()
    (record,) = _slow_records(caplog)
    assert SECRET in record.getMessage()


async def test_statement_durations_at_debug(
        backend: str, db_url: str, manager_factory: list[DatabaseManager],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="aegis_tortoise.sql")
    db = _make(manager_factory, db_url)
    await db.generate_schemas()
    async with db.session() as session:
        await User.create(email="timed@example.com", name="T")
        await session.execute("SELECT count(*) FROM users")
    await _settle()
    lines = [r.getMessage() for r in caplog.records
             if r.name == "aegis_tortoise.sql" and r.levelno == logging.DEBUG]
    assert any(re.fullmatch(r"\d+\.\d{3} ms: SELECT count\(\*\) FROM users", m) for m in lines)
    assert any(re.match(r'\d+\.\d{3} ms: INSERT INTO "users"', m) for m in lines), lines
    assert not _slow_records(caplog)  # no slow_query_ms: no warnings


async def test_stats_pool_waits_timeouts_and_retries(
        backend: str, db_url: str, manager_factory: list[DatabaseManager]) -> None:
    db = _make(manager_factory, db_url)
    before = db.stats()
    assert before["acquired"] == before["timeouts"] == before["waiting"] == 0
    assert before["size"] == 0  # nothing connected yet

    async def other_request() -> None:
        async with db.session() as session:
            await session.execute("SELECT 1")

    async with db.session() as session:
        await session.execute("SELECT 1")
        held = db.stats()
        assert (held["in_use"], held["max_size"]) == (1, 1)
        waiter = asyncio.create_task(other_request(), context=contextvars.Context())
        await asyncio.sleep(0.1)
        assert db.stats()["waiting"] == 1
        with pytest.raises(PoolTimeoutError):
            await waiter
    after = db.stats()
    assert after["waiting"] == 0
    assert after["timeouts"] == 1
    assert after["acquired"] == 1
    assert after["wait_max_ms"] >= after["wait_mean_ms"] > 0
    await other_request()
    assert db.stats()["acquired"] == 2
    assert db.stats()["in_use"] == 0

    attempts: list[int] = []

    @with_db_retry(max_attempts=3, backoff_factor=0.01)
    async def flaky() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise DatabaseConnectionError("simulated: connection lost")

    retries = db.stats()["retries"]
    await flaky()
    assert db.stats()["retries"] == retries + 1
    assert set(db.stats()) == {
        "size", "in_use", "idle", "max_size", "waiting", "acquired", "timeouts",
        "wait_mean_ms", "wait_max_ms", "statements", "slow_statements", "slow_query_ms",
        "retries"}


SPAN_SCRIPT = '''
import asyncio, json, sys
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)

from aegis_tortoise import DatabaseManager, ServiceException


async def main(url):
    db = DatabaseManager(url, models=["aegis_tortoise.examples.models"], pool_size=1,
                         max_overflow=0, pool_timeout=5, pool_recycle=60, echo=False)
    with trace.get_tracer("test").start_as_current_span("request"):
        async with db.session() as session:
            await session.execute("SELECT :v AS secret", {"v": "hunter2"})
        try:
            async with db.session() as session:
                await session.execute("SELECT * FROM no_such_table")
        except ServiceException:
            pass
    for _ in range(3):
        await asyncio.sleep(0)
    await db.close()


asyncio.run(main(sys.argv[1]))
print(json.dumps([
    {"name": s.name, "kind": s.kind.name, "attributes": dict(s.attributes),
     "parent": s.parent.span_id if s.parent else None, "span_id": s.context.span_id,
     "status": s.status.status_code.name, "duration": s.end_time - s.start_time}
    for s in exporter.get_finished_spans()]))
'''


async def test_opentelemetry_spans_per_statement(backend: str, db_url: str,
                                                 tmp_path: Path) -> None:
    """In a process of its own: a tracer provider is process-wide and cannot be unset."""
    if backend == "postgres":
        await reset_pg_schema(db_url)
    url = db_url if backend == "postgres" else f"sqlite:///{tmp_path}/spans.db"
    script = tmp_path / "spans.py"
    script.write_text(SPAN_SCRIPT)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), url, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    spans = json.loads(out)
    (request,) = [s for s in spans if s["name"] == "request"]
    statements = [s for s in spans if s["kind"] == "CLIENT"]
    system = "postgresql" if backend == "postgres" else "sqlite"
    (select,) = [s for s in statements if "AS secret" in s["attributes"]["db.query.text"]]
    assert select["parent"] == request["span_id"]
    attributes = select["attributes"]
    assert attributes["db.system.name"] == system
    assert attributes["db.operation.name"] == "SELECT"
    assert select["name"] == f"SELECT {attributes['db.namespace']}"
    assert select["status"] == "UNSET"
    assert select["duration"] > 0
    if backend == "postgres":
        assert attributes["db.namespace"] == db_url.rsplit("/", 1)[1]
        assert (attributes["server.address"], attributes["server.port"]) == ("127.0.0.1", 5432)
    assert "hunter2" not in out.decode()  # parameter values are never recorded
    (failed,) = [s for s in statements if "no_such_table" in s["attributes"]["db.query.text"]]
    assert failed["status"] == "ERROR"
    assert failed["attributes"]["error.type"]
    assert failed["parent"] == request["span_id"]

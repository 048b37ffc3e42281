"""Large row builds run with the cyclic collector paused (aegis_tortoise._collector), and the
collector is always left as it was found."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from aegis_tortoise import DatabaseManager, _collector
from aegis_tortoise._bulk import fetch_rows
from aegis_tortoise._reads import rows_of
from aegis_tortoise.examples.models import User
from tests.integration.test_repository_support import UserRepository


@contextmanager
def collections() -> Iterator[list[int]]:
    """A list that fills with the generation of every collection that starts meanwhile."""
    started: list[int] = []

    def record(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started.append(info["generation"])

    gc.callbacks.append(record)
    try:
        yield started
    finally:
        gc.callbacks.remove(record)


async def _records(db: DatabaseManager, n: int) -> tuple[UserRepository, list[Any]]:
    async with db.session() as session:
        await UserRepository(session).create_many(
            [{"email": f"u{i}@x.io", "name": f"N{i}"} for i in range(n)], returning=False)
    session = db.session()
    await session.__aenter__()
    repo = UserRepository(session)
    sql = f"SELECT {rows_of(repo).columns_sql} FROM users ORDER BY id"
    return repo, await fetch_rows(session.connection, sql, [])


async def test_a_large_build_runs_at_most_one_collection(
        db: DatabaseManager, monkeypatch: pytest.MonkeyPatch) -> None:
    repo, records = await _records(db, 5_000)
    try:
        plan = rows_of(repo)
        assert gc.isenabled()
        gc.collect()
        with collections() as started:
            built = plan.build(records)
            paused = len(started)
        assert gc.isenabled()
        assert [u.id for u in built] == [u.id for u in await User.all().order_by("id")]
        monkeypatch.setattr(_collector, "PAUSE_FROM", 10**9)  # the same build, unpaused
        gc.collect()
        with collections() as started:
            plan.build(records)
            unpaused = len(started)
        # 10,000 tracked objects (instance + __dict__ each): about 14 young collections
        # unpaused; paused, only the one the first allocation after the build runs.
        assert paused <= 1 < unpaused
    finally:
        await repo.session.__aexit__(None, None, None)


async def test_the_collector_is_left_as_it_was(db: DatabaseManager) -> None:
    repo, records = await _records(db, _collector.PAUSE_FROM)
    try:
        plan = rows_of(repo)
        gc.disable()
        try:
            plan.build(records)
            assert not gc.isenabled()  # the caller's choice stands
        finally:
            gc.enable()
        seen: list[bool] = []

        def failing_build() -> None:
            with _collector.paused(_collector.PAUSE_FROM):
                seen.append(gc.isenabled())
                raise ValueError("a converter failed mid-build")

        with pytest.raises(ValueError, match="mid-build"):
            failing_build()
        assert seen == [False]
        assert gc.isenabled()
    finally:
        await repo.session.__aexit__(None, None, None)

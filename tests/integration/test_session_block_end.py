"""The end of a session block while another task's call on the session runs (#18 item 10).

API.md: calls on one session are serialised or refused with TransactionError. The end of the
block (commit or rollback, then the connection's release) is serialised too: it waits for
the running call, and a call made after it is refused with TransactionError. The other task
never gets a (retryable) DatabaseConnectionError, and nothing runs on a connection that went
back to the pool.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from aegis_tortoise import DatabaseManager, Session, TransactionError, TransactionManager
from aegis_tortoise.examples.models import User
from tests.integration.test_repository_support import UserRepository

#: A statement that runs ~0.3 s on each backend.
SLOW = {
    "postgres": "SELECT pg_sleep(0.3)",
    "sqlite": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1500000) "
              "SELECT count(*) FROM c",
}


async def _slow_then_write(session: Session, backend: str) -> str:
    """A call that is running when the block ends, then a write after it ended."""
    await session.execute(SLOW[backend])
    try:
        await UserRepository(session).create({"email": "late@x.io", "name": "late"})
    except TransactionError as exc:
        return f"refused: {exc}"
    return "written"


async def _emails(db: DatabaseManager) -> set[str]:
    async with db.session() as session:
        return {u.email for u in await UserRepository(session).list()}


async def test_block_end_waits_for_a_running_call(db: DatabaseManager, backend: str) -> None:
    async with db.session() as session:
        await UserRepository(session).create({"email": "a@x.io", "name": "a"})
        task = asyncio.create_task(_slow_then_write(session, backend))
        await asyncio.sleep(0.05)  # the task's statement is running now
    # The commit waited for the running statement; the task's next call is refused cleanly.
    outcome = await task
    assert outcome.startswith("refused: "), outcome
    assert "closed" in outcome
    assert await _emails(db) == {"a@x.io"}


async def test_block_end_commits_a_running_write(db: DatabaseManager, backend: str) -> None:
    async def write(session: Session) -> Any:
        async with session.savepoint():
            await session.execute(SLOW[backend])
            return await UserRepository(session).create({"email": "b@x.io", "name": "b"})

    async with db.session() as session:
        task = asyncio.create_task(write(session))
        await asyncio.sleep(0.05)
    assert (await task).email == "b@x.io"
    assert await _emails(db) == {"b@x.io"}


async def test_rollback_at_block_end_waits_too(db: DatabaseManager, backend: str) -> None:
    tasks: list[asyncio.Task[Any]] = []

    async def block() -> None:
        async with db.session() as session:
            await UserRepository(session).create({"email": "c@x.io", "name": "c"})
            tasks.append(asyncio.create_task(session.execute(SLOW[backend])))
            await asyncio.sleep(0.05)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await block()
    task = tasks[0]
    await task  # the statement finished normally, then the transaction was rolled back
    assert await _emails(db) == set()


async def test_plain_tortoise_call_in_another_task(db: DatabaseManager, backend: str) -> None:
    async def plain(session: Session) -> str:
        await session.execute(SLOW[backend])
        try:
            await User.create(email="plain@x.io", name="plain")
        except TransactionError as exc:
            return f"refused: {exc}"
        return "written"

    async with db.session() as session:
        task = asyncio.create_task(plain(session))
        await asyncio.sleep(0.05)
    assert (await task).startswith("refused: ")
    assert await _emails(db) == set()
    # The connection went back clean: another session works normally.
    async with db.session() as session:
        await UserRepository(session).create({"email": "next@x.io", "name": "next"})
    assert await _emails(db) == {"next@x.io"}


async def test_cancelled_block_end_still_waits(db: DatabaseManager, backend: str) -> None:
    # The block's task is cancelled while its end waits for the other call: the running
    # statement finishes, the transaction is rolled back, and the cancellation goes on.
    started = asyncio.Event()
    other: list[asyncio.Task[Any]] = []

    async def block() -> None:
        async with db.session() as session:
            await UserRepository(session).create({"email": "d@x.io", "name": "d"})
            other.append(asyncio.create_task(session.execute(SLOW[backend])))
            await asyncio.sleep(0.05)
            started.set()

    outer = asyncio.create_task(block())
    await started.wait()
    await asyncio.sleep(0.02)  # the block's end now waits for the other task's statement
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer
    await other[0]  # finished normally, never a connection error
    assert await _emails(db) == set()


async def test_savepoint_end_waits_for_a_task_of_its_block(db: DatabaseManager,
                                                           backend: str) -> None:
    # A task started inside a savepoint block shares its operation (as iterate's finalizer
    # does after a break): its statement may still run when the block ends. Found by the
    # stateful test (tests/stateful): RELEASE / ROLLBACK TO SAVEPOINT then failed with
    # asyncpg's "another operation is in progress".
    tasks: list[asyncio.Task[Any]] = []

    async def block(session: Session, *, fail: bool) -> None:
        async with TransactionManager(session).transaction():
            await UserRepository(session).create({"email": f"{fail}@x.io", "name": "s"})
            tasks.append(asyncio.create_task(session.execute(SLOW[backend])))
            await asyncio.sleep(0.05)  # its statement is running now
            if fail:
                raise RuntimeError("boom")

    for fail in (False, True):
        async with db.session() as session:
            if fail:
                with pytest.raises(RuntimeError, match="boom"):
                    await block(session, fail=fail)
            else:
                await block(session, fail=fail)
        await tasks[-1]
    assert await _emails(db) == {"False@x.io"}


async def test_savepoint_start_waits_for_a_task_of_its_block(db: DatabaseManager,
                                                             backend: str) -> None:
    # The same for SAVEPOINT itself: a nested block begins while a task of the outer block
    # (sharing its operation) still runs a statement (found by the stateful test).
    async with db.session() as session:
        async with TransactionManager(session).transaction():
            task = asyncio.create_task(session.execute(SLOW[backend]))
            await asyncio.sleep(0.05)  # its statement is running now
            async with TransactionManager(session).transaction():
                await UserRepository(session).create({"email": "n@x.io", "name": "n"})
        await task
    assert await _emails(db) == {"n@x.io"}

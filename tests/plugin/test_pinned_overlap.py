"""create_many and update_many inside a plain in_transaction() under the pytest plugin's
rollback isolation (aegis_tortoise._pinned), run as a user runs it (pytester): statements
sent from a task of their own would wait forever for the pin's lock, which in_transaction()
holds in the caller's task."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import PLUGIN_INI, PgServer

pytest_plugins = ["pytester"]

INNER = '''
import asyncio

from tortoise.transactions import in_transaction

from aegis_tortoise.examples.repositories import UserRepository


async def test_bulk_writes_inside_in_transaction(db_manager):
    async with db_manager.session() as session:
        users = await UserRepository(session).create_many(
            [{"email": f"u{i}@x.io", "name": "u"} for i in range(3)])
    # A plain Tortoise transaction (a drop-in service's own code), and inside it a session.
    async with in_transaction():
        async with db_manager.session() as session:
            repo = UserRepository(session)
            async with asyncio.timeout(5):  # same task: update() here works
                await repo.update(users[0].id, name="y")
            async with asyncio.timeout(5):
                updated = await repo.update_many([{"id": u.id, "name": "x"} for u in users])
            async with asyncio.timeout(5):  # create_many overlaps its INSERT when unpinned
                created = await repo.create_many(
                    [{"email": f"v{i}@x.io", "name": "v"} for i in range(300)])
    assert [u.name for u in updated] == ["x", "x", "x"]
    assert len({u.id for u in created}) == 300
'''


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    pytester.makeini(PLUGIN_INI)
    pytester.makepyfile(test_inner=INNER)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=120)


def test_bulk_writes_inside_in_transaction_under_the_pin_sqlite(
        pytester: pytest.Pytester) -> None:
    """Without the timeouts the inner test would hang, not fail."""
    result = _run(pytester)
    result.assert_outcomes(passed=1)


@pytest.mark.postgres
def test_bulk_writes_inside_in_transaction_under_the_pin_postgres(
        pytester: pytest.Pytester, pg_server: PgServer) -> None:
    """The same on PostgreSQL (--aegis-db-url)."""
    url = pg_server.url_for(pg_server.create_database(f"pin_overlap_{uuid.uuid4().hex[:8]}"))
    result = _run(pytester, f"--aegis-db-url={url}")
    result.assert_outcomes(passed=1)

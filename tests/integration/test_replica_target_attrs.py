"""A replica URL with its own ``target_session_attrs`` (standby, read-only) whose every host
is a primary now (a node promoted under Patroni): readonly sessions skip it, as any replica
whose node is a primary, instead of failing."""

from __future__ import annotations

import pytest

from aegis_tortoise import DatabaseManager
from tests.conftest import EXAMPLE_MODELS, reset_pg_schema

pytestmark = pytest.mark.postgres


async def test_a_replica_url_asking_for_a_standby_on_a_primary_is_skipped(
        pg_database: str) -> None:
    await reset_pg_schema(pg_database)
    db = DatabaseManager(pg_database, models=EXAMPLE_MODELS, read_your_writes=0, pool_size=1,
                         max_overflow=0, pool_timeout=10,
                         replica_urls=[pg_database + "?target_session_attrs=standby"])
    try:
        for _ in range(3):
            async with db.session(readonly=True) as session:
                # The primary serves, in a READ ONLY transaction.
                result = await session.execute(
                    "SELECT pg_is_in_recovery(), current_setting('transaction_read_only')")
                assert result.fetchall() == [(False, "on")]
        assert db.stats()["replica_fallbacks"] == 3
        assert db.stats()["replica_reads"] == 0
    finally:
        await db.close()

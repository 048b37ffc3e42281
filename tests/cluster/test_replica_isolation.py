"""A readonly session on a hot standby asked for SERIALIZABLE runs REPEATABLE READ (a
standby refuses SERIALIZABLE); on the primary it keeps SERIALIZABLE."""

from __future__ import annotations

import pytest

from aegis_tortoise import DatabaseManager
from tests.cluster.conftest import REPLICATED, Topology, where
from tests.conftest import EXAMPLE_MODELS

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("standbys_back")]


async def test_serializable_readonly_on_a_standby(truncated: Topology) -> None:
    db = DatabaseManager(truncated.primary.url(REPLICATED), models=EXAMPLE_MODELS,
                         replica_urls=[truncated.standbys["s1"].url(REPLICATED)], pool_size=2,
                         max_overflow=0, read_your_writes=0, isolation_level="serializable")
    try:
        async with db.session(readonly=True) as session:
            assert (await where(session))[0] is True  # on the standby
            level = (await session.execute("SHOW transaction_isolation")).scalar()
            assert level == "repeatable read"
            assert (await session.execute('SELECT count(*) FROM "users"')).scalar() >= 0
        async with db.session() as session:
            assert (await session.execute("SHOW transaction_isolation")).scalar() == (
                "serializable")
    finally:
        await db.close()

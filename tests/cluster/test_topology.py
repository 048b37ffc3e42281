"""The cluster fixture itself: who is primary, who streams, PgBouncer in front."""

from __future__ import annotations

import asyncpg
import pytest

from tests.cluster.conftest import Topology

pytestmark = pytest.mark.postgres


async def test_topology_primary_standbys_and_bouncer(topology: Topology) -> None:
    assert topology.primary.port != 5432
    assert await topology.primary.fetchval("SELECT pg_is_in_recovery()") is False
    for standby in topology.standbys.values():
        assert await standby.fetchval("SELECT pg_is_in_recovery()") is True
    assert await topology.primary.fetchval("SHOW synchronous_standby_names") == "s1"
    assert topology.bouncer is not None
    conn = await asyncpg.connect(topology.bouncer.url(), statement_cache_size=0)
    try:
        assert await conn.fetchval("SHOW port") == str(topology.primary.port)
    finally:
        await conn.close()

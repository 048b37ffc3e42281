"""The run's shared PostgreSQL connection (:mod:`aegis_tortoise._loop_bridge`): a connection
the server ended is discarded with its loop, thread and socket (#18 item 20: the loop and
two sockets leaked, and the inner pytest run crashed under pytest 9.2)."""

from __future__ import annotations

import gc
import warnings

import pytest

from aegis_tortoise import DatabaseManager
from aegis_tortoise._loop_bridge import _shared, discard, shared_connection


@pytest.mark.postgres
async def test_a_discarded_connection_leaves_no_loop_or_socket(pg_db: DatabaseManager) -> None:
    await pg_db.init()
    bridged = await shared_connection(pg_db._client())
    try:
        pid = await bridged.fetchval("SELECT pg_backend_pid()")
        async with pg_db.session() as session:  # the server ends it, as in a lost connection
            await session.execute("SELECT pg_terminate_backend(:pid)", {"pid": pid})
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            await discard(bridged)
            gc.collect()
        assert bridged._loop.is_closed()
        assert not bridged._thread.is_alive()
        assert bridged not in _shared.values()
        leaks = [w for w in caught if issubclass(w.category, ResourceWarning)]
        assert leaks == []
    finally:
        if not bridged._loop.is_closed():
            await discard(bridged)

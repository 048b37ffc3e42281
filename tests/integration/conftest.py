"""Fixtures shared by the integration tests that need more than tests/conftest.py gives."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.conftest import PgServer
from tests.faults.proxy import FaultProxy


@pytest.fixture
async def proxy(pg_server: PgServer) -> AsyncIterator[FaultProxy]:
    """A TCP proxy in front of the test PostgreSQL server (latency, cuts: tests/faults)."""
    host, port = pg_server.admin_url.split("@")[-1].split("/")[0].split(":")
    started = await FaultProxy(host, int(port)).start()
    try:
        yield started
    finally:
        await started.stop()

"""service_tests/ is the drop-in service's own suite: test_dropin.py runs it in processes of
its own (with DROPIN_REGISTER set), never inside this suite's process."""

import os
from collections.abc import AsyncIterator

import pytest

collect_ignore = [] if os.environ.get("DROPIN_REGISTER") else ["service_tests"]


@pytest.fixture(autouse=True)
async def _leave_postgres_empty(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Tables of the drop-in models must not outlive a test on the shared PostgreSQL
    database (the service's own suite, run in processes of its own, never asks for one)."""
    url = None
    if "backend" in request.fixturenames and request.getfixturevalue("backend") == "postgres":
        url = request.getfixturevalue("db_url")
    yield
    if url is not None:
        from tests.conftest import reset_pg_schema

        await reset_pg_schema(url)

"""service_tests/ (and worker_tests/, the apps under contrib_*/) are the drop-in services'
own suites: test_dropin.py and its siblings run them in processes of their own (with
DROPIN_REGISTER / DROPIN_TORTOISE set), never inside this suite's process."""

import os
from collections.abc import AsyncIterator

import pytest

collect_ignore = [name for name, flag in (("service_tests", "DROPIN_REGISTER"),
                                         ("frameworks_tests", "DROPIN_REGISTER"),
                                         ("worker_tests", "DROPIN_TORTOISE"))
                  if not os.environ.get(flag)]


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

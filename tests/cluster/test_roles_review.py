"""Review cases of roles that change under open pools (issue 22): plain Tortoise calls outside
sessions on a primary fenced read-only, as sessions are."""

from __future__ import annotations

import pytest

from aegis_tortoise import DatabaseManager, with_db_retry
from aegis_tortoise.examples.models import User
from tests.cluster.conftest import ClusterFactory, make_pair
from tests.conftest import EXAMPLE_MODELS

pytestmark = pytest.mark.postgres


async def test_a_plain_call_leaves_a_fenced_primary_for_the_new_one(
        cluster_factory: ClusterFactory) -> None:
    """A plain Tortoise write outside any session under with_db_retry, on a pooled connection
    whose primary turned read-only (default_transaction_read_only) while another node was
    promoted: the connection is not reused, and the retry lands on the new primary."""
    old, new = make_pair(cluster_factory, "plainfence")
    url = (f"postgresql://postgres@127.0.0.1:{old.port},127.0.0.1:{new.port}/postgres"
           "?target_session_attrs=read-write")
    db = DatabaseManager(url, models=EXAMPLE_MODELS, pool_size=2, max_overflow=0,
                         pool_timeout=10, global_context=True)  # plain calls, as a drop-in
    attempts = 0

    @with_db_retry(max_attempts=4, backoff_factor=0.05)
    async def write(email: str) -> None:
        nonlocal attempts
        attempts += 1
        await User.create(email=email, name=email)

    try:
        await db.generate_schemas()
        await write("before@x.org")
        await old.fetchval("ALTER SYSTEM SET default_transaction_read_only = on")
        await old.fetchval("SELECT pg_reload_conf()")
        new.promote()
        attempts = 0
        await write("after@x.org")
        assert attempts == 2  # the pooled connection once, then a new one
        assert await new.fetchval("SELECT count(*) FROM users") == 2
    finally:
        await db.close()
        new.stop("immediate")
        old.stop("immediate")

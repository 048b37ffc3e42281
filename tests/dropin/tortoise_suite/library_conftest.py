"""conftest.py for the tests of the tortoise-orm 1.1.9 sdist, routing every set-up through
aegis-tortoise (run.py copies it to the sdist's root).

The sdist ships its tests without the repository's root conftest, so the fixtures those
tests use (``db``, ``db_module``, ``db_simple``, ``db_isolated``, ``db_truncate``) are
written here, with the same isolation: a context per module, each test in a transaction
rolled back at its end. Every context is a ``DatabaseManager.from_tortoise_config`` one,
and ``tortoise.context.tortoise_test_context`` (which the sdist's own conftests and tests
call) is replaced by :func:`library_test_context`, closed where Tortoise closes.
"""

import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest_asyncio
import tortoise.context as tortoise_context
from tortoise.backends.base.config_generator import generate_config

from aegis_tortoise import DatabaseManager

DB_URL = os.environ.get("TORTOISE_TEST_DB", "sqlite://:memory:")


async def _drop_postgres(credentials: dict[str, Any]) -> None:
    conn = await asyncpg.connect(host=credentials["host"], port=int(credentials["port"]),
                                 user=credentials["user"],
                                 password=credentials.get("password") or None,
                                 database="postgres")
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{credentials["database"]}" WITH (FORCE)')
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def library_test_context(modules: list[str], db_url: str = "sqlite://:memory:",
                               app_label: str = "models", *,
                               connection_label: str | None = None, use_tz: bool = True,
                               timezone: str = "UTC",
                               routers: list[Any] | None = None,
                               ) -> AsyncIterator[tortoise_context.TortoiseContext]:
    """tortoise_test_context's arguments and effect, on a DatabaseManager."""
    config = generate_config(db_url, app_modules={app_label: modules},
                             connection_label=connection_label, testing=True)
    manager = DatabaseManager.from_tortoise_config(config, use_tz=use_tz, timezone=timezone,
                                                   routers=routers, pool_size=3,
                                                   max_overflow=2)
    # As Tortoise's: a database of its own ("..._{}" in the URL names a fresh one), created
    # here, and (unlike Tortoise's) dropped at the end.
    manager._create_db = True
    await manager.init()
    ctx = manager._ctx
    assert ctx is not None
    token = tortoise_context._current_context.set(ctx)
    try:
        await ctx.generate_schemas(safe=False)
        yield ctx
    finally:
        await manager.close()
        tortoise_context._current_context.reset(token)
        credentials = next(iter(config["connections"].values()))["credentials"]
        if "{}" in db_url and "database" in credentials:
            await _drop_postgres(credentials)


if os.environ.get("TSUITE_PLAIN"):
    # The reference run: Tortoise's own set-up, with the same fixtures.
    library_test_context = tortoise_context.tortoise_test_context  # type: ignore[assignment]
else:
    tortoise_context.tortoise_test_context = library_test_context


@pytest_asyncio.fixture(scope="module")
async def db_module() -> AsyncIterator[Any]:
    async with library_test_context(["tests.testmodels"], DB_URL, "models",
                                    connection_label="models") as ctx:
        previous = tortoise_context._global_context
        tortoise_context._global_context = ctx  # as the upstream fixture: tasks find it
        try:
            yield ctx
        finally:
            tortoise_context._global_context = previous


@pytest_asyncio.fixture
async def db(db_module: Any) -> AsyncIterator[Any]:
    token = tortoise_context._current_context.set(db_module)
    try:
        transaction = db_module.db()._in_transaction()
        await transaction.__aenter__()

        class _RollbackError(Exception):
            pass

        try:
            yield db_module
        finally:
            await transaction.__aexit__(_RollbackError, _RollbackError(), None)
    finally:
        tortoise_context._current_context.reset(token)


@pytest_asyncio.fixture
async def db_simple(db_module: Any) -> AsyncIterator[Any]:
    token = tortoise_context._current_context.set(db_module)
    try:
        yield db_module
    finally:
        tortoise_context._current_context.reset(token)


@pytest_asyncio.fixture
async def db_isolated() -> AsyncIterator[Any]:
    async with library_test_context(["tests.testmodels"], DB_URL, "models",
                                    connection_label="models") as ctx:
        yield ctx


@pytest_asyncio.fixture
async def db_truncate(db_module: Any) -> AsyncIterator[Any]:
    token = tortoise_context._current_context.set(db_module)
    try:
        yield db_module
        for model in db_module.apps.get_models_iterable():
            quote = model._meta.db.query_class.SQL_CONTEXT.quote_char
            await model._meta.db.execute_script(
                f"DELETE FROM {quote}{model._meta.db_table}{quote}")
    finally:
        tortoise_context._current_context.reset(token)


def make_db_fixture(modules: list[str], app_label: str = "models",
                    connection_label: str = "models") -> Any:
    """A function-scoped context of other model modules (the sdist's conftests use it)."""

    @pytest_asyncio.fixture
    async def _db_fixture() -> AsyncIterator[Any]:
        async with library_test_context(modules, DB_URL, app_label,
                                        connection_label=connection_label) as ctx:
            yield ctx

    return _db_fixture

"""Issue 21: ``from aegis_tortoise import Tortoise`` (its manager, pool options, errors) and
``DatabaseManager.from_tortoise_config(db_url=..., modules=...)``, on both backends."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import tortoise
import tortoise.context as tortoise_context
from tortoise.exceptions import ConfigurationError as TortoiseConfigurationError
from tortoise.transactions import in_transaction

from aegis_tortoise import ConfigurationError, DatabaseManager, Tortoise
from aegis_tortoise.examples.models import User
from aegis_tortoise.examples.repositories import UserRepository
from tests.conftest import EXAMPLE_MODELS, reset_pg_schema


@pytest.fixture
async def url(db_url: str, backend: str, tmp_path: object) -> AsyncIterator[str]:
    if backend == "postgres":
        await reset_pg_schema(db_url)
        yield db_url
        await reset_pg_schema(db_url)
    else:
        yield f"sqlite://{tmp_path}/facade.db"


async def test_init_gives_a_manager_with_pool_options(url: str, backend: str) -> None:
    ctx = await Tortoise.init(db_url=url, modules={"models": EXAMPLE_MODELS}, use_tz=True,
                              timezone="Asia/Seoul", pool_size=2, max_overflow=1,
                              pool_timeout=3)
    try:
        db = Tortoise.db
        assert isinstance(db, DatabaseManager)
        assert (db.pool_size, db.max_overflow, db.pool_timeout) == (2, 1, 3)
        assert (db.dialect, db.timezone) == (backend, "Asia/Seoul")
        assert ctx is db._ctx is tortoise_context._global_context
        assert tortoise.Tortoise.apps is Tortoise.apps  # Tortoise's own sees the same
        await Tortoise.generate_schemas()
        plain = await User.create(email="p@x", name="P")
        async with db.session() as session:
            repo = UserRepository(session)
            assert (await repo.get(plain.id)).email == "p@x"
            await repo.create({"email": "s@x", "name": "S"})
        async with in_transaction():
            assert await User.all().count() == 2
    finally:
        await Tortoise.close_connections()
    assert tortoise_context._global_context is None
    with pytest.raises(ConfigurationError, match=r"Tortoise\.init"):
        Tortoise.db  # noqa: B018 - the property raises


@pytest.mark.parametrize(("arguments", "field"), [
    ({}, "config"),
    ({"db_url": "sqlite://:memory:"}, "modules"),
    ({"db_url": "sqlite://:memory:", "modules": {"models": EXAMPLE_MODELS},
      "table_name_generator": str}, "table_name_generator"),
])
async def test_bad_arguments_are_both_configuration_errors(arguments: dict[str, object],
                                                           field: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        await Tortoise.init(**arguments)  # type: ignore[arg-type]
    assert isinstance(raised.value, TortoiseConfigurationError)  # what Tortoise raises
    assert raised.value.details["field"] == field
    assert tortoise_context._global_context is None


async def test_from_tortoise_config_takes_db_url_and_modules(url: str, backend: str) -> None:
    db = DatabaseManager.from_tortoise_config(db_url=url, modules={"models": EXAMPLE_MODELS},
                                              pool_size=2, use_tz=False)
    try:
        assert (db.dialect, db.alias, db.use_tz) == (backend, "default", False)
        await db.generate_schemas()
        async with db.session() as session:
            user = await UserRepository(session).create({"email": "u@x", "name": "U"})
        assert user.created_at.tzinfo is None
    finally:
        await db.close()
    with pytest.raises(ConfigurationError, match="modules"):
        DatabaseManager.from_tortoise_config(db_url=url)

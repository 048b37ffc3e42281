"""What a Tortoise service relies on, under a DatabaseManager: each was broken before the
drop-in work (issue 10's "Why" list) and is checked here on sqlite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextvars
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from tortoise import Tortoise, connections
from tortoise.config import TortoiseConfig
from tortoise.context import get_current_context
from tortoise.contrib.test import tortoise_test_context, truncate_all_models
from tortoise.exceptions import ConfigurationError as TortoiseConfigurationError
from tortoise.router import router
from tortoise.transactions import in_transaction

from aegis_tortoise import ConfigurationError, DatabaseManager, TransactionError
from aegis_tortoise._register import test_manager
from aegis_tortoise.fastapi import RegisterTortoise
from tests.conftest import reset_pg_schema
from tests.dropin import routers
from tests.dropin.archive_models import Record
from tests.dropin.service.models import Event
from tests.dropin.shop_models import Product

SERVICE = "tests.dropin.service.models"
T = TypeVar("T")


def in_empty_context(make: Callable[[], Awaitable[T]]) -> asyncio.Task[T]:
    """Run ``make()`` in a task that inherits no context variable (a worker's task)."""
    async def run() -> T:
        return await make()

    return asyncio.get_running_loop().create_task(run(), context=contextvars.Context())


def tortoise_url(url: str) -> str:
    """The test database's URL as a Tortoise config writes it."""
    return url.replace("postgresql://", "postgres://").replace("sqlite:///:memory:",
                                                               "sqlite://:memory:")



@pytest.fixture
async def service_db(db_url: str, backend: str) -> AsyncIterator[DatabaseManager]:
    """A manager of the service's models, published as the process's Tortoise context."""
    if backend == "postgres":
        await reset_pg_schema(db_url)
    db = DatabaseManager(db_url, models=[SERVICE], global_context=True, pool_timeout=10)
    await db.init()
    await db.generate_schemas()
    try:
        yield db
    finally:
        await db.close()


async def test_plain_tortoise_outside_sessions(service_db: DatabaseManager) -> None:
    async def work() -> tuple[int, bool, int]:
        await Event.create(title="a")
        async with in_transaction("default") as conn:
            await Event.create(title="b", using_db=conn)
        assert Tortoise.apps is not None
        same = connections.get("default") is Tortoise.get_connection("default")
        before = await Event.all().count()
        await truncate_all_models()
        return before, same, await Event.all().count()

    assert await in_empty_context(work) == (2, True, 0)
    await service_db.close()
    assert await in_empty_context(lambda: asyncio.sleep(0, get_current_context())) is None


async def test_one_global_context_per_process(service_db: DatabaseManager, db_url: str) -> None:
    second = DatabaseManager(db_url, models=[SERVICE], global_context=True)
    with pytest.raises(ConfigurationError, match="global_context=False") as info:
        await second.init()
    assert info.value.details == {"field": "global_context"}
    await second.close()


async def test_the_connection_is_named_default(service_db: DatabaseManager) -> None:
    async with service_db.session() as session:
        assert connections.get("default") is session.connection
        await Event.create(title="outer")

        async def inner() -> None:
            async with in_transaction("default"):  # a savepoint of the session
                await Event.create(title="inner")
                raise RuntimeError

        with pytest.raises(RuntimeError):
            await inner()
        assert await Event.all().values_list("title", flat=True) == ["outer"]


async def test_tortoise_init_before_and_after_a_manager(db_url: str, backend: str,
                                                        tmp_path: Path) -> None:
    """A script's Tortoise.init and tortoise.contrib.test contexts beside a manager, same
    dialect, other databases: neither breaks the other."""
    if backend == "postgres":
        await reset_pg_schema(db_url)
        other_url = tortoise_url(db_url)  # the same server; other tables would do as well
    else:
        other_url = f"sqlite://{tmp_path}/other.db"
    ctx = await Tortoise.init(db_url=other_url, modules={"models": [SERVICE]})
    try:
        await Tortoise.generate_schemas()
        await truncate_all_models()
        await Event.create(title="from Tortoise.init")
        db = DatabaseManager(db_url if backend == "postgres" else "sqlite:///:memory:",
                             models=[SERVICE])
        await db.generate_schemas()
        async with db.session():
            await Event.create(title="from the manager")
            expected = 2 if backend == "postgres" else 1  # one database on PostgreSQL
            assert await Event.all().count() == expected
        # Tortoise's own context still works, after the manager prepared the models.
        assert "from Tortoise.init" in await Event.all().values_list("title", flat=True)
        async with tortoise_test_context([SERVICE]) as test_ctx:
            assert test_ctx is get_current_context()
            await Event.create(title="in a contrib.test context")
            assert await Event.all().count() == 1
        async with db.session():  # and the manager again, after both
            assert await Event.filter(title="from the manager").count() == 1
        await db.close()
        await truncate_all_models()
    finally:
        await Tortoise.close_connections()
        ctx.__exit__(None, None, None)


async def test_time_zone_and_routers_are_each_managers_own(tmp_path: Path) -> None:
    saved = (os.environ.get("USE_TZ"), os.environ.get("TIMEZONE"), router._routers)
    shanghai = DatabaseManager("sqlite:///:memory:", models=[SERVICE], timezone="Asia/Shanghai",
                               routers=["tests.dropin.routers.CountingRouter"],
                               global_context=True)
    utc = DatabaseManager(f"sqlite:///{tmp_path}/utc.db", models=[SERVICE])
    naive = DatabaseManager(f"sqlite:///{tmp_path}/naive.db", models=[SERVICE],
                            use_tz=False, timezone="Asia/Tokyo")
    try:
        for db in (shanghai, utc, naive):
            await db.generate_schemas()
        assert (os.environ.get("USE_TZ"), os.environ.get("TIMEZONE"), router._routers) == saved
        routers.calls.clear()
        async with shanghai.session(), asyncio.timeout(10):
            async with utc.session():  # another task's view would be the same
                pass
            first = await Event.create(title="sh")
            assert first.created_at.utcoffset() == timedelta(hours=8)
            await Event.all().count()
        assert routers.calls == []  # inside a session, the session wins over the router
        await Event.all().count()  # outside: shanghai's context (the global one) routes it
        assert routers.calls == ["Event"]
        async with utc.session():
            second = await Event.create(title="utc")
            assert second.created_at.utcoffset() == timedelta(0)
            await Event.all().count()
        async with naive.session():
            third = await Event.create(title="naive")
            assert third.created_at.tzinfo is None
        assert routers.calls == ["Event"]  # the UTC manager has no router
        async with shanghai.session():
            read = await Event.get(title="sh")
            assert read.created_at.utcoffset() == timedelta(hours=8)
    finally:
        for db in (shanghai, utc, naive):
            await db.close()


async def test_models_of_other_app_labels_are_loaded(db_url: str, backend: str) -> None:
    if backend == "postgres":
        await reset_pg_schema(db_url)
    db = DatabaseManager(db_url, models=[SERVICE, "tests.dropin.shop_models"])
    try:
        await db.generate_schemas()
        async with db.session():
            assert Tortoise.apps is not None
            assert set(Tortoise.apps.apps) == {"models", "shop"}
            await Product.create(name="tea")
            assert await Product.all().count() == 1
    finally:
        await db.close()


def _two_connection_config(tmp_path: Path) -> dict[str, Any]:
    return {
        "connections": {"default": "sqlite://:memory:",
                        "archive": f"sqlite://{tmp_path}/archive.db"},
        "apps": {"models": {"models": [SERVICE]},
                 "archive": {"models": ["tests.dropin.archive_models"],
                             "default_connection": "archive"}},
        "timezone": "Asia/Shanghai",
    }


async def test_from_tortoise_config_honours_the_whole_config(tmp_path: Path) -> None:
    db = DatabaseManager.from_tortoise_config(_two_connection_config(tmp_path), pool_timeout=5)
    assert db.alias == "default"
    assert db.timezone == "Asia/Shanghai"
    try:
        await db.generate_schemas()
        async with db.session():
            event = await Event.create(title="x")
            assert event.created_at.utcoffset() == timedelta(hours=8)
            await Record.create(text="kept")  # the archive connection, autocommit
        async with db.session():
            assert await Record.all().count() == 1
            assert connections.get("archive") is not connections.get("default")
    finally:
        await db.close()
    # Tortoise's meaning of sqlite:///... in a config: an absolute path.
    assert (tmp_path / "archive.db").exists()


@pytest.mark.parametrize("form", ["dict", "TortoiseConfig", "dotted path", "json file"])
async def test_from_tortoise_config_takes_each_form(form: str, tmp_path: Path) -> None:
    config: Any = {"connections": {"main": f"sqlite://{tmp_path}/f.db"},
                   "apps": {"models": {"models": [SERVICE], "default_connection": "main"}}}
    if form == "TortoiseConfig":
        config = TortoiseConfig.from_dict(config)
    elif form == "dotted path":
        config = "tests.dropin.service.config.TORTOISE_ORM"
    elif form == "json file":
        path = tmp_path / "tortoise.json"
        path.write_text(json.dumps(config), encoding="utf-8")
        config = str(path)
    db = DatabaseManager.from_tortoise_config(config)
    expected_alias = "default" if form == "dotted path" else "main"
    assert db.alias == expected_alias
    try:
        await db.generate_schemas()
        async with db.session():
            assert connections.get(expected_alias) is not None
            await Event.create(title=form)
            assert await Event.all().count() == 1
    finally:
        await db.close()


def test_database_url_keeps_sqlalchemy_meaning_and_configs_keep_tortoises() -> None:
    assert DatabaseManager("sqlite:///tmp/x.db", models=[]).url.database == "tmp/x.db"
    config = {"connections": {"default": "sqlite:///tmp/x.db"},
              "apps": {"models": {"models": [SERVICE]}}}
    absolute = DatabaseManager.from_tortoise_config(config).url.database
    assert absolute == "/tmp/x.db"  # noqa: S108 - a path compared, never opened


@pytest.mark.parametrize(("config", "message", "details"), [
    ({"connections": {"default": {"engine": "tortoise.backends.mysql", "credentials": {}}},
      "apps": {"models": {"models": [SERVICE]}}}, "tortoise.backends.mysql",
     {"connection": "default", "engine": "tortoise.backends.mysql"}),
    ("tests.dropin.service.config.NOPE", "has no 'NOPE'",
     {"config": "tests.dropin.service.config.NOPE"}),
    ("/nonexistent/tortoise.json", "does not exist",
     {"config_file": "/nonexistent/tortoise.json"}),
    ({"connections": {}}, "apps", None),
])
def test_bad_tortoise_configs_are_configuration_errors(
        config: Any, message: str, details: dict[str, str] | None) -> None:
    with pytest.raises(ConfigurationError, match=message) as info:
        DatabaseManager.from_tortoise_config(config)
    if details is not None:
        assert info.value.details == details


@pytest.mark.parametrize(("option", "value"), [("timezone", "Mars/Olympus"),
                                                ("timezone", 5), ("use_tz", "yes")])
def test_bad_time_zone_options_name_the_field(option: str, value: Any) -> None:
    with pytest.raises(ConfigurationError) as info:
        DatabaseManager("sqlite:///:memory:", models=[], **{option: value})
    assert info.value.details == {"field": option}


async def test_another_connection_name_waits_for_open_sessions(db_url: str,
                                                               backend: str) -> None:
    """Same dialect, another connection name for the same model classes: refused while a
    session of the first manager uses them (it would re-point the classes), fine after."""
    first = DatabaseManager(db_url, models=[SERVICE])
    other = DatabaseManager.from_tortoise_config({
        "connections": {"primary": tortoise_url(db_url)},
        "apps": {"models": {"models": [SERVICE], "default_connection": "primary"}}})
    try:
        await first.generate_schemas()
        async with first.session():
            await Event.create(title="kept")
            with pytest.raises(TransactionError, match="connection name"):
                await other.init()
            assert await Event.all().count() == 1  # the first session is unharmed
        await other.generate_schemas()  # now the classes may follow the other manager
        async with other.session():
            assert await Event.all().count() == (1 if backend == "postgres" else 0)
        async with first.session():
            assert await Event.filter(title="kept").count() == 1
    finally:
        await first.close()
        await other.close()


def test_a_tortoise_config_ignores_database_url_in_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://user@host/elsewhere")
    monkeypatch.setenv("DATABASE_MODELS", "no.such.module")
    db = DatabaseManager.from_tortoise_config({"connections": {"default": "sqlite://:memory:"},
                                               "apps": {"models": {"models": [SERVICE]}}})
    assert db.url.database == ":memory:"


async def test_register_errors_are_tortoises_configuration_error_too() -> None:
    with pytest.raises(TortoiseConfigurationError, match="modules") as info:
        async with RegisterTortoise(db_url="sqlite://:memory:"):
            pass
    assert isinstance(info.value, ConfigurationError)  # and ours
    config = {"connections": {"default": "sqlite://:memory:"},
              "apps": {"models": {"models": ["no.such.module"]}}}
    with pytest.raises(TortoiseConfigurationError, match=r"no\.such\.module"):
        async with RegisterTortoise(config=config):
            pass


async def test_a_registration_reused_under_the_plugin_leaves_the_test_manager_open() -> None:
    registration = RegisterTortoise(db_url="sqlite://:memory:", modules={"models": [SERVICE]},
                                    generate_schemas=True)
    async with registration:  # a run of its own: its manager, closed at the end
        pass
    tests_manager = DatabaseManager("sqlite:///:memory:", models=[SERVICE])
    await tests_manager.generate_schemas()
    token = test_manager.set(tests_manager)
    try:
        async with registration:
            assert registration.db is tests_manager
        assert tests_manager.is_initialized  # not closed by the registration
    finally:
        test_manager.reset(token)
        await tests_manager.close()

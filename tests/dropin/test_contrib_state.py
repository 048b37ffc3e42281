"""Issue 21: each framework registration keeps its DatabaseManager where that framework
keeps state (documented in docs/guides/from-tortoise.md), with the pool options given."""

from __future__ import annotations

from typing import Any

import pytest

from aegis_tortoise import DatabaseManager

# The frameworks' own deprecations (websockets.legacy under Sanic...) are not ours.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

CONFIG = {"connections": {"default": "sqlite://:memory:"},
          "apps": {"models": {"models": ["tests.dropin.frameworks.models"]}}}


async def test_starlette_app_state_db() -> None:
    from starlette.applications import Starlette

    from aegis_tortoise.contrib.starlette import RegisterTortoise

    app = Starlette()
    async with RegisterTortoise(app, CONFIG, None, None, None, True, pool_timeout=2) as orm:
        assert app.state.db is orm.db
        assert isinstance(orm.db, DatabaseManager)
        assert orm.db.pool_timeout == 2
    assert not hasattr(app.state, "db")


async def test_aiohttp_app_db_key() -> None:
    from aiohttp import web

    from aegis_tortoise.contrib.aiohttp import db_key, register_tortoise

    app = web.Application()
    register_tortoise(app, CONFIG, None, None, None, True, pool_timeout=3)
    app.freeze()
    await app.startup()
    try:
        assert isinstance(app[db_key], DatabaseManager)
        assert app[db_key].pool_timeout == 3
    finally:
        await app.cleanup()
    assert db_key not in app


async def test_quart_extensions() -> None:
    from quart import Quart

    from aegis_tortoise.contrib.quart import EXTENSION, register_tortoise

    app = Quart("state")
    register_tortoise(app, CONFIG, generate_schemas=True, pool_timeout=4)
    await app.startup()
    try:
        assert app.extensions[EXTENSION].pool_timeout == 4
    finally:
        await app.shutdown()
    assert EXTENSION not in app.extensions


async def test_sanic_app_ctx_db() -> None:
    from sanic import Sanic
    from sanic import json as sanic_json

    from aegis_tortoise.contrib.sanic import register_tortoise

    app = Sanic("state_test")
    register_tortoise(app, CONFIG, pool_timeout=5)

    async def handler(request: Any) -> Any:
        return sanic_json({"pool_timeout": request.app.ctx.db.pool_timeout})

    app.add_route(handler, "/db")
    _, response = await app.asgi_client.get("/db")
    assert response.json == {"pool_timeout": 5}
    assert not hasattr(app.ctx, "db")  # the server stopped after the request


async def test_blacksheep_injects_the_manager() -> None:
    from blacksheep import Application

    from aegis_tortoise.contrib.blacksheep import register_tortoise

    app = Application()
    register_tortoise(app, CONFIG, pool_timeout=6)
    app.router.add_get("/db", _blacksheep_handler)
    await app.start()
    try:
        assert app.services.resolve(DatabaseManager).pool_timeout == 6
        from blacksheep.testing import TestClient

        response = await TestClient(app).get("/db")
        assert await response.json() == {"pool_timeout": 6}
    finally:
        await app.stop()
    with pytest.raises(Exception, match="has not started"):
        app.services.resolve(DatabaseManager)


async def _blacksheep_handler(db: DatabaseManager) -> Any:
    from blacksheep import json

    return json({"pool_timeout": db.pool_timeout})

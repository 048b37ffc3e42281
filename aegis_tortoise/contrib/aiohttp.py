"""``tortoise.contrib.aiohttp`` on a :class:`~aegis_tortoise.DatabaseManager`.

An aiohttp service changes one import::

    # before: from tortoise.contrib.aiohttp import register_tortoise
    from aegis_tortoise.contrib.aiohttp import db_key, register_tortoise

The manager is ``app[db_key]`` while the app runs (``request.app[db_key]`` in a handler):
aiohttp keeps application state under typed ``web.AppKey`` keys.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import ModuleType
from typing import Any

from aegis_tortoise.contrib import require
from aegis_tortoise.contrib._registration import Registration
from aegis_tortoise.manager import DatabaseManager

web: Any = require("aiohttp.web", "aiohttp")

__all__ = ["db_key", "register_tortoise"]

#: The application key of the manager: ``app[db_key]``.
db_key: Any = web.AppKey("aegis_tortoise.db", DatabaseManager)


def register_tortoise(  # noqa: PLR0917 - Tortoise's positional signature
    app: Any,
    config: dict[str, Any] | None = None,
    config_file: str | None = None,
    db_url: str | None = None,
    modules: dict[str, Iterable[str | ModuleType]] | None = None,
    generate_schemas: bool = False,
    **options: Any,
) -> None:
    """``tortoise.contrib.aiohttp.register_tortoise`` (Tortoise 1.1.9): the same arguments and
    hooks (``on_startup`` opens, ``on_cleanup`` closes), plus pool options."""

    def keep(manager: DatabaseManager) -> None:
        app[db_key] = manager

    def forget() -> None:
        app.pop(db_key, None)

    orm = Registration(app, config=config, config_file=config_file, db_url=db_url,
                       modules=modules, generate_schemas=generate_schemas, keep=keep,
                       forget=forget, options=options)

    async def init_orm(app: Any) -> None:
        await orm.init_orm()

    async def close_orm(app: Any) -> None:
        await orm.close_orm()

    app.on_startup.append(init_orm)
    app.on_cleanup.append(close_orm)

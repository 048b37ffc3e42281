"""``tortoise.contrib.sanic`` on a :class:`~aegis_tortoise.DatabaseManager`.

A Sanic service changes one import::

    # before: from tortoise.contrib.sanic import register_tortoise
    from aegis_tortoise.contrib.sanic import register_tortoise

The manager is ``app.ctx.db`` while the server runs (``request.app.ctx.db`` in a handler),
where Sanic keeps application state.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from types import ModuleType
from typing import Any

from aegis_tortoise.contrib import require
from aegis_tortoise.contrib._registration import Registration
from aegis_tortoise.manager import DatabaseManager

require("sanic", "sanic")

__all__ = ["register_tortoise"]

logger = logging.getLogger("aegis_tortoise.contrib.sanic")


def register_tortoise(  # noqa: PLR0917 - Tortoise's positional signature
    app: Any,
    config: dict[str, Any] | None = None,
    config_file: str | None = None,
    db_url: str | None = None,
    modules: dict[str, Iterable[str | ModuleType]] | None = None,
    generate_schemas: bool = False,
    _enable_global_fallback: bool = True,
    **options: Any,
) -> None:
    """``tortoise.contrib.sanic.register_tortoise`` (Tortoise 1.1.9): the same arguments and
    hooks (``main_process_start`` creates the schemas, ``before_server_start`` /
    ``after_server_stop`` open and close), plus pool options."""

    def keep(manager: DatabaseManager) -> None:
        app.ctx.db = manager

    def forget() -> None:
        if hasattr(app.ctx, "db"):
            del app.ctx.db

    def registration(schemas: bool) -> Registration:
        return Registration(app, config=config, config_file=config_file, db_url=db_url,
                            modules=modules, generate_schemas=schemas, keep=keep,
                            forget=forget, enable_global_fallback=_enable_global_fallback,
                            options=options)

    current: list[Registration] = []

    if generate_schemas:
        async def init_orm_main(app: Any) -> None:
            # The main process only creates the tables; the workers serve.
            orm = registration(schemas=True)
            await orm.init_orm()
            await orm.close_orm()
        app.main_process_start(init_orm_main)

    async def init_orm(app: Any) -> None:
        # Under sanic-testing, main_process_start does not run: the server creates them.
        orm = registration(schemas=generate_schemas
                           and getattr(app, "_test_manager", None) is not None)
        await orm.init_orm()
        current.append(orm)
    app.before_server_start(init_orm)

    async def close_orm(app: Any) -> None:
        while current:
            await current.pop().close_orm()
    app.after_server_stop(close_orm)

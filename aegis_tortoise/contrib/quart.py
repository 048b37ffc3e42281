"""``tortoise.contrib.quart`` on a :class:`~aegis_tortoise.DatabaseManager`.

A Quart service changes one import::

    # before: from tortoise.contrib.quart import register_tortoise
    from aegis_tortoise.contrib.quart import register_tortoise

The manager is ``app.extensions["aegis_tortoise"]`` while the app serves
(``current_app.extensions["aegis_tortoise"]`` in a handler), where Quart (like Flask) keeps
extensions' state.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from types import ModuleType
from typing import Any

from aegis_tortoise._facade import Tortoise
from aegis_tortoise.contrib import require
from aegis_tortoise.contrib._registration import Registration
from aegis_tortoise.manager import DatabaseManager

require("quart", "quart")

__all__ = ["EXTENSION", "register_tortoise"]

#: The key of the manager in ``app.extensions``.
EXTENSION = "aegis_tortoise"


def register_tortoise(  # noqa: PLR0917 - Tortoise's positional signature
    app: Any,
    config: dict[str, Any] | None = None,
    config_file: str | None = None,
    db_url: str | None = None,
    modules: dict[str, Iterable[str | ModuleType]] | None = None,
    generate_schemas: bool = False,
    **options: Any,
) -> None:
    """``tortoise.contrib.quart.register_tortoise`` (Tortoise 1.1.9): the same arguments and
    hooks (``before_serving`` opens, ``after_serving`` closes, the ``generate-schemas`` CLI
    command), plus pool options."""

    def keep(manager: DatabaseManager) -> None:
        app.extensions[EXTENSION] = manager

    def forget() -> None:
        app.extensions.pop(EXTENSION, None)

    orm = Registration(app, config=config, config_file=config_file, db_url=db_url,
                       modules=modules, generate_schemas=generate_schemas, keep=keep,
                       forget=forget, options=options)

    async def init_orm() -> None:
        await orm.init_orm()
    app.before_serving(init_orm)

    async def close_orm() -> None:
        await orm.close_orm()
    app.after_serving(close_orm)

    @app.cli.command("generate-schemas")  # type: ignore[untyped-decorator]
    def generate_schemas_command() -> None:
        """Populate DB with Tortoise-ORM schemas."""

        async def inner() -> None:
            await Tortoise.init(config=config, config_file=config_file, db_url=db_url,
                                modules=modules, **options)
            await Tortoise.generate_schemas()
            await Tortoise.close_connections()

        asyncio.run(inner())

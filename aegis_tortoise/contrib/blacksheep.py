"""``tortoise.contrib.blacksheep`` on a :class:`~aegis_tortoise.DatabaseManager`.

A BlackSheep service changes one import::

    # before: from tortoise.contrib.blacksheep import register_tortoise
    from aegis_tortoise.contrib.blacksheep import register_tortoise

The manager is a service of the app's dependency injection: a handler parameter annotated
``DatabaseManager`` receives it, and ``app.services`` resolves it.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import ModuleType
from typing import Any

from tortoise.exceptions import DoesNotExist, IntegrityError

from aegis_tortoise.contrib import require
from aegis_tortoise.contrib._registration import Registration
from aegis_tortoise.errors import ConfigurationError
from aegis_tortoise.manager import DatabaseManager

responses: Any = require("blacksheep.server.responses", "blacksheep")

__all__ = ["register_tortoise"]


def register_tortoise(  # noqa: PLR0917 - Tortoise's positional signature
    app: Any,
    config: dict[str, Any] | None = None,
    config_file: str | None = None,
    db_url: str | None = None,
    modules: dict[str, Iterable[str | ModuleType]] | None = None,
    generate_schemas: bool = False,
    add_exception_handlers: bool = False,
    **options: Any,
) -> None:
    """``tortoise.contrib.blacksheep.register_tortoise`` (Tortoise 1.1.9): the same arguments,
    hooks (``on_start`` opens with the global fallback, ``on_stop`` closes) and exception
    handlers, plus pool options."""
    current: list[DatabaseManager] = []

    def manager() -> DatabaseManager:
        if not current:
            raise ConfigurationError("The app has not started: its DatabaseManager is "
                                     "available between on_start and on_stop")
        return current[0]

    def keep(db: DatabaseManager) -> None:
        current[:] = [db]

    orm = Registration(app, config=config, config_file=config_file, db_url=db_url,
                       modules=modules, generate_schemas=generate_schemas, keep=keep,
                       forget=current.clear, enable_global_fallback=True, options=options)
    # Registered once, before the container is built at start; resolves the running one.
    app.services.add_transient_by_factory(manager, DatabaseManager)

    async def init_orm(context: Any) -> None:
        await orm.init_orm()
    app.on_start(init_orm)

    async def close_orm(context: Any) -> None:
        await orm.close_orm()
    app.on_stop(close_orm)

    if add_exception_handlers:
        async def doesnotexist_exception_handler(self: Any, request: Any,
                                                 exc: DoesNotExist) -> Any:
            return responses.json({"detail": str(exc)}, 404)
        app.exceptions_handlers[DoesNotExist] = doesnotexist_exception_handler

        async def integrityerror_exception_handler(self: Any, request: Any,
                                                   exc: IntegrityError) -> Any:
            return responses.json(
                {"detail": [{"loc": [], "msg": str(exc), "type": "IntegrityError"}]}, 422)
        app.exceptions_handlers[IntegrityError] = integrityerror_exception_handler

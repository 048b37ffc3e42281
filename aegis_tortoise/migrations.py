"""The Tortoise config that aerich reads, and a small API that runs aerich in-process.

``pyproject.toml`` names ``aegis_tortoise.migrations.TORTOISE_ORM`` under ``[tool.aerich]``,
so ``aerich upgrade`` needs no flags. The config is built, each time aerich reads it, from the
same settings the application uses: ``DATABASE_URL`` (SQLAlchemy- or Tortoise-style) and
``DATABASE_MODELS``, plus ``aerich.models``. Both must be set: an unset ``DATABASE_MODELS``
is refused rather than replaced by the example models, since a migration generated from
the wrong models would drop the service's own tables.

aerich 0.10 initialises Tortoise in the *current* context and re-prepares the model classes
for its own connection. :func:`upgrade` and :func:`downgrade` therefore run aerich in a task
of its own, with a fresh :class:`~tortoise.context.TortoiseContext`, and put the model classes
back as they were afterwards, so a live :class:`~aegis_tortoise.DatabaseManager` in the same
process keeps working.
"""

from __future__ import annotations

import asyncio
import contextvars
import importlib
import inspect
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from aerich import Command
from aerich.migrate import Migrate
from tortoise.context import TortoiseContext, _current_context
from tortoise.models import Model

from aegis_tortoise._tortoise_config import DEFAULT_CONNECTION
from aegis_tortoise.config import DatabaseSettings, parse_database_url
from aegis_tortoise.errors import ConfigurationError

__all__ = [
    "APP_LABEL",
    "DEFAULT_LOCATION",
    "EXAMPLE_MODELS",
    "downgrade",
    "tortoise_config",
    "upgrade",
]

APP_LABEL = "models"
"""The Tortoise app label (``DatabaseManager`` uses it too; ``"models.User"`` references)."""
EXAMPLE_MODELS = ("aegis_tortoise.examples.models",)
"""The example models, whose migrations this repository's ``migrations/`` holds
(``DATABASE_MODELS=aegis_tortoise.examples.models``); never used unless named."""
DEFAULT_LOCATION = "./migrations"
"""aerich's migrations folder, relative to the working directory (``[tool.aerich] location``)."""
_AERICH_MODELS = "aerich.models"

T = TypeVar("T")

TORTOISE_ORM: dict[str, Any]
"""The config aerich reads (``tortoise_config()`` with the current settings), built on access."""


def tortoise_config(database_url: str | None = None, models: Iterable[str] | None = None, *,
                    settings: DatabaseSettings | None = None) -> dict[str, Any]:
    """The Tortoise config for aerich, from the application's settings.

    Args:
        database_url: A database URL; default ``settings.database_url`` (``DATABASE_URL``).
        models: Model modules; default ``settings.database_models`` (``DATABASE_MODELS``).
            ``aerich.models`` is always added.
        settings: The settings to read; default ``DatabaseSettings()`` (environment, ``.env``).

    Raises:
        ConfigurationError: the URL is invalid, or it is an in-memory sqlite database (the
            default when ``DATABASE_URL`` is unset), which a migration could not outlive; or
            no model module is given (``DATABASE_MODELS`` unset).
    """
    if database_url is None or models is None:
        settings = settings if settings is not None else DatabaseSettings()
    raw_url = database_url if database_url is not None else settings.database_url  # type: ignore[union-attr]
    url = parse_database_url(raw_url)
    if url.is_memory:
        raise ConfigurationError(
            "Migrations need a persistent database, but the database URL is in-memory sqlite "
            "(the default when DATABASE_URL is unset); set DATABASE_URL, e.g. "
            "DATABASE_URL=postgresql+asyncpg://user:password@localhost/dbname aerich upgrade",
            details={"scheme": url.scheme},
        )
    modules = [m for m in (models if models is not None else settings.database_models)  # type: ignore[union-attr]
               if m != _AERICH_MODELS]
    if not modules:
        # Never a fallback: `aerich migrate` against other models than the service's would
        # write a migration that drops the service's tables.
        raise ConfigurationError(
            "No model modules for the migrations: set DATABASE_MODELS to the service's "
            "model modules, e.g. DATABASE_MODELS=app.models aerich migrate (this "
            "repository's own migrations: DATABASE_MODELS=aegis_tortoise.examples.models)",
            details={"setting": "DATABASE_MODELS"},
        )
    if _AERICH_MODELS not in modules:
        modules.append(_AERICH_MODELS)
    # The same connection name as DatabaseManager's (and a plain Tortoise config's):
    # Tortoise stores it on the model classes and caches SQL per name.
    alias = DEFAULT_CONNECTION
    return {
        "connections": {alias: url.tortoise_connection()},
        "apps": {APP_LABEL: {"models": modules, "default_connection": alias}},
    }


def __getattr__(name: str) -> Any:
    # Built on access, not at import: the environment is read when aerich asks, and importing
    # this module never fails because of an unset or wrong DATABASE_URL.
    if name == "TORTOISE_ORM":
        return tortoise_config()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


async def upgrade(database_url: str | None = None, models: Iterable[str] | None = None, *,
                  location: str | Path = DEFAULT_LOCATION) -> list[str]:
    """Apply the migrations not yet applied (``aerich upgrade``), each in a transaction.

    Args:
        database_url: Default ``DATABASE_URL``.
        models: Default ``DATABASE_MODELS`` (required when not given).
        location: The migrations folder (it holds ``models/``).

    Returns:
        The migration files applied, oldest first (empty when the database is up to date).
    """
    config = tortoise_config(database_url, models)
    return await _run(config, location, lambda command: command.upgrade(run_in_transaction=True))


async def downgrade(database_url: str | None = None, models: Iterable[str] | None = None, *,
                    version: int = -1, location: str | Path = DEFAULT_LOCATION) -> list[str]:
    """Revert migrations (``aerich downgrade``): the last one, or down to ``version``.

    Args:
        version: ``-1`` reverts the last applied migration; ``N`` reverts every migration
            from number ``N`` on.

    Returns:
        The migration files reverted.

    Raises:
        aerich.exceptions.DowngradeError: nothing to revert, or the migration has no
            downgrade SQL.
    """
    config = tortoise_config(database_url, models)
    return await _run(config, location,
                      lambda command: command.downgrade(version, delete=False))


async def _run(config: dict[str, Any], location: str | Path,
               action: Callable[[Command], Awaitable[T]]) -> T:
    folder = Migrate.get_migration_dir(str(location), APP_LABEL)
    if not folder.is_dir():
        raise ConfigurationError(
            f"No migrations folder {folder}; run from the project root, pass location=, or "
            "create the first migration with `aerich init-db`",
            details={"location": str(location)},
        )

    async def isolated() -> T:
        saved = _model_state(config)
        ctx = TortoiseContext()
        token = _current_context.set(ctx)
        try:
            # Command.__aenter__ runs Tortoise.init in the current context: ours.
            async with Command(tortoise_config=config, app=APP_LABEL,
                               location=str(location)) as command:
                return await action(command)
        finally:
            await ctx.close_connections()
            _current_context.reset(token)
            _restore_model_state(saved)

    # An empty contextvars.Context: no session or transaction of the caller leaks into aerich.
    return await asyncio.create_task(isolated(), context=contextvars.Context())


_STATE_ATTRS = ("default_connection", "basetable", "basequery", "basequery_all_fields")


def _model_state(config: dict[str, Any]) -> list[tuple[type[Model], tuple[Any, ...]]]:
    """What Tortoise.init changes on the model classes of ``config``, to restore later."""
    saved: list[tuple[type[Model], tuple[Any, ...]]] = []
    seen: set[type[Model]] = set()
    for app in config["apps"].values():
        for module_name in app["models"]:
            module = importlib.import_module(module_name)
            for value in vars(module).values():
                if (inspect.isclass(value) and issubclass(value, Model)
                        and not value._meta.abstract and value not in seen):
                    seen.add(value)
                    saved.append((value, tuple(getattr(value._meta, a) for a in _STATE_ATTRS)))
    return saved


def _restore_model_state(saved: list[tuple[type[Model], tuple[Any, ...]]]) -> None:
    for model, values in saved:
        for attr, value in zip(_STATE_ATTRS, values, strict=True):
            setattr(model._meta, attr, value)

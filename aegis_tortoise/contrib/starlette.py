"""``tortoise.contrib.starlette`` on a :class:`~aegis_tortoise.DatabaseManager`.

A Starlette service changes one import::

    # before: from tortoise.contrib.starlette import RegisterTortoise, register_tortoise
    from aegis_tortoise.contrib.starlette import RegisterTortoise, register_tortoise

The manager is ``app.state.db`` while the app runs (``request.app.state.db`` in a
handler), as with the FastAPI registration.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from types import ModuleType
from typing import TYPE_CHECKING, Any

from aegis_tortoise._register import RegisterTortoise as _FastAPIRegisterTortoise
from aegis_tortoise.contrib import require

if TYPE_CHECKING:
    from tortoise.config import TortoiseConfig

require("starlette", "starlette")

__all__ = ["RegisterTortoise", "register_tortoise"]


class RegisterTortoise(_FastAPIRegisterTortoise):
    """``tortoise.contrib.starlette.RegisterTortoise`` (Tortoise 1.1.9): the same arguments
    (positional ones too), plus pool options; the manager is ``.db`` and ``app.state.db``."""

    def __init__(  # noqa: PLR0917 - Tortoise's positional signature
        self,
        app: Any,
        config: dict[str, Any] | TortoiseConfig | None = None,
        config_file: str | None = None,
        db_url: str | None = None,
        modules: dict[str, Iterable[str | ModuleType]] | None = None,
        generate_schemas: bool = False,
        use_tz: bool = True,
        timezone: str = "UTC",
        _create_db: bool = False,
        _enable_global_fallback: bool = True,
        **options: Any,
    ) -> None:
        super().__init__(app, config, config_file, db_url, modules, generate_schemas,
                         use_tz=use_tz, timezone=timezone, _create_db=_create_db,
                         _enable_global_fallback=_enable_global_fallback, **options)


def register_tortoise(  # noqa: PLR0917 - Tortoise's positional signature
    app: Any,
    config: dict[str, Any] | None = None,
    config_file: str | None = None,
    db_url: str | None = None,
    modules: dict[str, Iterable[str | ModuleType]] | None = None,
    generate_schemas: bool = False,
    **options: Any,
) -> None:
    """``tortoise.contrib.starlette.register_tortoise``: the ORM for the app's lifespan, on
    a manager (``app.state.db``). Same arguments, plus pool options."""
    original_lifespan = app.router.lifespan_context

    @asynccontextmanager
    async def orm_inited_lifespan(app_instance: Any) -> AsyncIterator[Mapping[str, Any] | None]:
        orm = RegisterTortoise(app_instance, config, config_file, db_url, modules,
                               generate_schemas, **options)
        async with orm, original_lifespan(app_instance) as maybe_state:
            yield maybe_state

    app.router.lifespan_context = orm_inited_lifespan

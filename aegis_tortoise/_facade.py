"""``from aegis_tortoise import Tortoise``: Tortoise's ``Tortoise`` class for scripts and
workers, with a :class:`~aegis_tortoise.DatabaseManager` behind it.

A worker written for plain Tortoise changes one import::

    # before: from tortoise import Tortoise
    from aegis_tortoise import Tortoise

    await Tortoise.init(config=TORTOISE_ORM, pool_size=10, pool_timeout=5)
    await Tortoise.generate_schemas()
    await Event.create(title="x")              # plain Tortoise, as before
    async with Tortoise.db.session() as session: ...   # and this library's API
    await Tortoise.close_connections()

It subclasses Tortoise 1.1.9's class, so everything it does not override (``apps``,
``get_connection``, ``describe_models``, ``init_models``, ``is_inited``...) is Tortoise's
own, reading the current context, which is the manager's.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar

import tortoise
import tortoise.context as tortoise_context
from tortoise import classproperty
from tortoise.config import TortoiseConfig
from tortoise.context import TortoiseContext, _current_context

from aegis_tortoise._tortoise_config import RegistrationError
from aegis_tortoise.errors import ConfigurationError
from aegis_tortoise.manager import DatabaseManager

if TYPE_CHECKING:
    from tortoise.models import Model

__all__ = ["Tortoise"]

logger = logging.getLogger("aegis_tortoise.tortoise")


class Tortoise(tortoise.Tortoise):
    """Tortoise's ``Tortoise`` (1.1.9) on a :class:`~aegis_tortoise.DatabaseManager`.

    ``init`` takes Tortoise's arguments plus this library's pool options and sets up one
    manager for the process: :attr:`db`. Its context is current in the task that called
    ``init`` (and the tasks it starts), as with Tortoise, and it is published as the
    process's fallback context unless another one is, so other tasks find it too.
    """

    _manager: ClassVar[DatabaseManager | None] = None
    _token: ClassVar[contextvars.Token[TortoiseContext | None] | None] = None

    @classproperty
    def db(cls) -> DatabaseManager:  # noqa: N805 - a class property, as Tortoise's apps
        """The manager behind ``Tortoise.init`` (sessions, repositories, retries)."""
        if Tortoise._manager is None:
            raise ConfigurationError("aegis_tortoise.Tortoise is not initialised: call "
                                     "await Tortoise.init(...) first")
        return Tortoise._manager

    @classmethod
    async def init(  # noqa: PLR0917 - Tortoise's signature
        cls,
        config: dict[str, Any] | TortoiseConfig | None = None,
        config_file: str | None = None,
        _create_db: bool = False,
        db_url: str | None = None,
        modules: dict[str, Iterable[str | ModuleType]] | None = None,
        use_tz: bool = True,
        timezone: str = "UTC",
        routers: list[str | type] | None = None,
        table_name_generator: Callable[[type[Model]], str] | None = None,
        init_connections: bool = True,
        _enable_global_fallback: bool = False,
        **options: Any,
    ) -> TortoiseContext:
        """Set up the ORM as ``tortoise.Tortoise.init`` does, on a new manager.

        Args:
            config: A ``TORTOISE_ORM`` dict or ``TortoiseConfig`` (one of the three sources).
            config_file: A ``.json``/``.yml`` config file.
            _create_db: Create the databases first (tests), as Tortoise's.
            db_url: A Tortoise URL, with ``modules``.
            modules: App label to model modules, with ``db_url``.
            use_tz: As Tortoise's (the config's own ``use_tz`` wins).
            timezone: As Tortoise's (the config's own ``timezone`` wins).
            routers: As Tortoise's (the config's own ``routers`` win).
            table_name_generator: Not supported: must be ``None``.
            init_connections: Not supported: must be ``True`` (connections open lazily).
            _enable_global_fallback: Publish the context for every task. It is published
                anyway when no other context is; ``True`` makes another one an error.
            **options: This library's options (``pool_size``, ``pool_timeout``, ``echo``...).

        Returns:
            The Tortoise context, as Tortoise returns it.

        Raises:
            RegistrationError: A bad or unsupported argument (also a Tortoise
                ``ConfigurationError``, which is what Tortoise raises).
        """
        if table_name_generator is not None or not init_connections:
            raise RegistrationError(
                "aegis_tortoise.Tortoise.init does not take table_name_generator or "
                "init_connections=False; use tortoise.Tortoise for those",
                details={"field": "table_name_generator" if table_name_generator is not None
                         else "init_connections"})
        if Tortoise._manager is not None:
            # As Tortoise re-initialising its context: the previous connections are closed.
            await cls.close_connections()
        publish = _enable_global_fallback or tortoise_context._global_context is None
        try:
            manager = DatabaseManager.from_tortoise_config(
                config or config_file, db_url=db_url, modules=modules, use_tz=use_tz,
                timezone=timezone, routers=routers, global_context=publish, **options)
            manager._create_db = _create_db
            await manager.init()
        except RegistrationError:
            raise
        except ConfigurationError as exc:
            raise RegistrationError(exc.message, details=exc.details, cause=exc) from exc
        ctx = manager._ctx
        assert ctx is not None  # noqa: S101 - init() sets it
        Tortoise._manager = manager
        # As Tortoise.init: the context is current in the calling task from here on.
        Tortoise._token = _current_context.set(ctx)
        logger.info("Tortoise-ORM started on %r", manager)
        return ctx

    @classmethod
    def _owns_current(cls) -> bool:
        manager = Tortoise._manager
        current = tortoise_context.get_current_context()
        return manager is not None and (current is None or current is manager._ctx)

    @classmethod
    async def generate_schemas(cls, safe: bool = True) -> None:
        """Create the tables of every connection's models, as Tortoise's.

        Args:
            safe: Skip tables that already exist.
        """
        if not cls._owns_current():
            await super().generate_schemas(safe)
            return
        await cls.db.generate_schemas(safe=safe)

    @classmethod
    async def close_connections(cls) -> None:
        """Close the manager's connections, as Tortoise closes its context's."""
        manager = Tortoise._manager
        if manager is None or not cls._owns_current():
            await super().close_connections()
            return
        Tortoise._manager = None
        token, Tortoise._token = Tortoise._token, None
        if token is not None:
            try:
                _current_context.reset(token)
            except ValueError:  # closed from another task than init ran in
                logger.debug("Tortoise.close_connections in another context than init")
        await manager.close()
        logger.info("Tortoise-ORM shutdown")

    @classmethod
    async def _drop_databases(cls) -> None:
        """Drop the configured databases (tests), as Tortoise's; the manager is closed."""
        manager = Tortoise._manager
        if manager is None or not cls._owns_current():
            await super()._drop_databases()
            return
        ctx = manager._ctx
        token = _current_context.set(ctx)
        try:
            await super()._drop_databases()
        finally:
            _current_context.reset(token)
        await cls.close_connections()

"""RegisterTortoise and register_tortoise: Tortoise's FastAPI registration, on a DatabaseManager.

A service written for plain Tortoise switches one import
(``from tortoise.contrib.fastapi import RegisterTortoise`` becomes
``from aegis_tortoise.fastapi import RegisterTortoise``) and keeps its config, its ORM calls,
its exception handlers and its tests. Behind the registration is a
:class:`~aegis_tortoise.DatabaseManager` (``.db``, ``app.state.db``), so the same app also
gets sessions, repositories, retries and the pool timeout.

Mirrors ``tortoise.contrib.fastapi`` of Tortoise 1.1.9: the same arguments, defaults and
side effects (``app.state._tortoise_context``, the caller's current Tortoise context, the
deprecated ``add_exception_handlers`` patch of Starlette's ``ExceptionMiddleware``).
"""

from __future__ import annotations

import contextvars
import logging
import warnings
from collections.abc import AsyncIterator, Generator, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any, Self

import tortoise.context as tortoise_context
from tortoise.config import TortoiseConfig
from tortoise.context import TortoiseContext, _current_context
from tortoise.contrib.fastapi import tortoise_exception_handlers
from tortoise.exceptions import DoesNotExist

from aegis_tortoise._tortoise_config import RegistrationError, config_source
from aegis_tortoise._tortoise_state import remember_environment
from aegis_tortoise.errors import ConfigurationError
from aegis_tortoise.manager import DatabaseManager

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["RegisterTortoise", "RegistrationError", "register_tortoise",
           "tortoise_exception_handlers"]

logger = logging.getLogger("aegis_tortoise.fastapi")

# Set by the pytest plugin's app fixtures: registrations then run on the test's manager.
test_manager: contextvars.ContextVar[DatabaseManager | None] = contextvars.ContextVar(
    "aegis_test_manager", default=None)


def _add_exception_handlers_lazily() -> None:
    """Tortoise 1.1.9's ``add_exception_handlers=True``, verbatim in effect: a deprecation
    warning, and Starlette's ExceptionMiddleware gains the two handlers when it first runs
    (the app's middleware stack is built before the lifespan starts)."""
    from starlette.middleware.exceptions import ExceptionMiddleware

    warnings.warn(
        "Setting `add_exception_handlers` to be true is deprecated, "
        "use `FastAPI(exception_handlers=tortoise_exception_handlers())` instead."
        "See more about it on https://tortoise.github.io/examples/fastapi",
        DeprecationWarning,
        stacklevel=3,
    )
    original = ExceptionMiddleware.__call__
    if getattr(original, "_aegis_tortoise_handlers", False):
        return

    async def call(self: Any, *args: Any, **kwargs: Any) -> None:
        if DoesNotExist not in self._exception_handlers:
            self._exception_handlers.update(tortoise_exception_handlers())
        await original(self, *args, **kwargs)

    call._aegis_tortoise_handlers = True  # type: ignore[attr-defined]
    ExceptionMiddleware.__call__ = call  # type: ignore[method-assign]


class RegisterTortoise(AbstractAsyncContextManager["RegisterTortoise"]):
    """Tortoise ORM for a FastAPI app's lifespan, on a :class:`DatabaseManager`.

    Takes exactly the arguments of ``tortoise.contrib.fastapi.RegisterTortoise`` (one of
    ``config``, ``config_file`` or ``db_url`` + ``modules``; ``generate_schemas``,
    ``add_exception_handlers``, ``use_tz``, ``timezone``, ``_create_db``,
    ``_enable_global_fallback``), plus this library's pool options (``pool_size``,
    ``max_overflow``, ``pool_timeout``, ``pool_recycle``, ``echo``, driver options).

    .. code-block:: python

        @asynccontextmanager
        async def lifespan(app: FastAPI):
            async with RegisterTortoise(app, config=TORTOISE_ORM, pool_timeout=5):
                yield

    Attributes:
        db: The :class:`DatabaseManager` (also ``app.state.db``), set on entering.
    """

    def __init__(  # noqa: PLR0917 - Tortoise's positional signature, kept for the drop-in
        self,
        app: FastAPI | None = None,
        config: dict[str, Any] | TortoiseConfig | None = None,
        config_file: str | None = None,
        db_url: str | None = None,
        modules: dict[str, Iterable[str | ModuleType]] | None = None,
        generate_schemas: bool = False,
        add_exception_handlers: bool = False,
        use_tz: bool = True,
        timezone: str = "UTC",
        _create_db: bool = False,
        _enable_global_fallback: bool | None = True,
        **options: Any,
    ) -> None:
        self.app: Any = app
        self.config = config
        self.config_file = config_file
        self.db_url = db_url
        self.modules = modules
        self.generate_schemas = generate_schemas
        self.use_tz = use_tz
        self.timezone = timezone
        self._create_db = _create_db
        self._enable_global_fallback = _enable_global_fallback
        self.options = options
        self._context: TortoiseContext | None = None
        self._manager: DatabaseManager | None = None
        self._owned = False
        self._published = False
        self._token: contextvars.Token[TortoiseContext | None] | None = None
        if add_exception_handlers and app is not None:
            _add_exception_handlers_lazily()

    def __repr__(self) -> str:
        return f"<RegisterTortoise {self._manager!r}>"

    @property
    def db(self) -> DatabaseManager:
        """The manager behind the registration (available once entered)."""
        if self._manager is None:
            raise ConfigurationError("RegisterTortoise is not entered yet: use it as "
                                     "'async with RegisterTortoise(app, ...):'")
        return self._manager

    def _config(self) -> Mapping[str, Any] | TortoiseConfig | str:
        try:
            return config_source(self.config, self.config_file, self.db_url, self.modules)
        except ConfigurationError as exc:
            raise RegistrationError(f"RegisterTortoise: {exc.message}", details=exc.details,
                                    cause=exc) from exc

    async def init_orm(self) -> TortoiseContext:
        """Initialise the manager and its Tortoise context (what entering does)."""
        manager = test_manager.get()
        self._owned = manager is None
        try:
            if manager is None:
                publish = self._enable_global_fallback
                if publish is None:  # registrations without the flag: when nobody else is
                    publish = tortoise_context._global_context is None
                manager = DatabaseManager.from_tortoise_config(
                    self._config(), use_tz=self.use_tz, timezone=self.timezone,
                    global_context=publish, **self.options)
                manager._create_db = self._create_db
            self._manager = manager
            await manager.init()
        except ConfigurationError as exc:
            if isinstance(exc, RegistrationError):
                raise
            raise RegistrationError(exc.message, details=exc.details, cause=exc) from exc
        ctx = manager._ctx
        assert ctx is not None  # noqa: S101 - init() sets it
        self._context = ctx
        if (not self._owned and self._enable_global_fallback is not False
                and tortoise_context._global_context is None):
            # The test's manager serves the app's tasks too, for the test's duration.
            tortoise_context.set_global_context(ctx)
            remember_environment(ctx)
            self._published = True
        # As Tortoise.init: the context is current in the task that registered it.
        self._token = _current_context.set(ctx)
        self._keep(manager, ctx)
        logger.info("Tortoise-ORM started on %r", manager)
        if self.generate_schemas and self._owned:
            logger.info("Tortoise-ORM generating schema")
            await manager.generate_schemas()
        return ctx

    async def close_orm(self) -> None:
        """Close the manager's connections (what leaving does)."""
        if self._token is not None:
            try:
                _current_context.reset(self._token)
            except ValueError:
                logger.debug("RegisterTortoise left in another context than it entered")
            self._token = None
        if self._published:
            if tortoise_context._global_context is self._context:
                tortoise_context._global_context = None
            self._published = False
        if self._manager is not None and self._owned:
            await self._manager.close()
        self._forget()
        self._context = None
        logger.info("Tortoise-ORM shutdown")

    def _keep(self, manager: DatabaseManager, ctx: TortoiseContext) -> None:
        """Put the manager where the framework keeps state (Starlette: ``app.state``)."""
        if self.app is not None:
            self.app.state._tortoise_context = ctx
            self.app.state.db = manager

    def _forget(self) -> None:
        """Undo :meth:`_keep` when the app stops."""
        if self.app is not None:
            for name in ("_tortoise_context", "db"):
                if hasattr(self.app.state, name):
                    delattr(self.app.state, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Self:
        return self

    async def __aenter__(self) -> Self:
        await self.init_orm()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close_orm()

    def __await__(self) -> Generator[None, None, Self]:
        async def _self() -> Self:
            return await self.__aenter__()

        return _self().__await__()


def register_tortoise(  # noqa: PLR0917 - Tortoise's positional signature
    app: FastAPI,
    config: dict[str, Any] | TortoiseConfig | None = None,
    config_file: str | None = None,
    db_url: str | None = None,
    modules: dict[str, Iterable[str | ModuleType]] | None = None,
    generate_schemas: bool = False,
    add_exception_handlers: bool = False,
    **options: Any,
) -> None:
    """Tortoise's ``register_tortoise``: the ORM set up for the app's lifespan.

    Same arguments as ``tortoise.contrib.fastapi.register_tortoise``, plus this library's
    pool options. The manager is ``app.state.db`` while the app runs.
    """
    # FastAPI's own helper, as Tortoise 1.1.9 uses it (private in FastAPI).
    from fastapi.routing import _merge_lifespan_context

    @asynccontextmanager
    async def orm_lifespan(app_instance: FastAPI) -> AsyncIterator[None]:
        async with RegisterTortoise(app_instance, config, config_file, db_url, modules,
                                    generate_schemas, **options):
            yield

    original_lifespan = app.router.lifespan_context
    app.router.lifespan_context = _merge_lifespan_context(orm_lifespan, original_lifespan)
    if add_exception_handlers:
        for exception_type, handler in tortoise_exception_handlers().items():
            app.exception_handler(exception_type)(handler)

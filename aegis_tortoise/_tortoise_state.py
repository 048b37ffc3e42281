"""Per-context time zone and routers for Tortoise ORM (which keeps both process-wide).

Tortoise 1.1.9 stores ``use_tz``/``timezone`` in ``os.environ`` (read through cached
functions in ``tortoise.timezone``) and its routers in one module-level ``ConnectionRouter``.
Every ``TortoiseContext.init`` rewrites both, so two managers (or a manager and a
``Tortoise.init``) with different settings clobber each other. Each ``TortoiseContext``
does keep its own copy (``_use_tz``, ``_timezone``, ``_routers``): :func:`install` makes
Tortoise read those of the current context, and falls back to the process-wide values when
no initialised context is current, which is exactly what Tortoise does with one context.

Whose settings apply (:func:`_context`):

- inside an operation of a session (a repository call, ``session.execute``...), those of the
  session's manager, whatever other managers' sessions are nested around or inside it;
- else those of the current Tortoise context (the innermost session's, or the published one);
- the published context (the one plain Tortoise calls fall back to, as after
  ``Tortoise.init``) follows ``USE_TZ``/``TIMEZONE`` when code changes them in ``os.environ``
  after it was published and calls ``tortoise.timezone._reset_timezone_cache()``, as Tortoise
  does; a manager that is not published keeps its own settings always.

:func:`keep_process_state` undoes what a context's ``init`` writes to the process, so a
manager's initialisation leaves ``os.environ`` and the global router as they were.

Inside a session the session wins over the routers: while a session of a manager is open in
the current task, plain Tortoise calls on the models of the session's connection skip the
routers and run in the session (:func:`bind_sessions`). Outside sessions the routers choose
exactly as under ``Tortoise.init``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import weakref
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import tzinfo
from typing import TYPE_CHECKING, Any

import tortoise.context as tortoise_context
import tortoise.fields.data as tortoise_data
from tortoise import timezone as tortoise_tz
from tortoise.context import TortoiseContext, get_current_context, set_global_context
from tortoise.exceptions import ConfigurationError as TortoiseConfigurationError
from tortoise.router import ConnectionRouter, router

from aegis_tortoise._operations import operation
from aegis_tortoise.errors import ConfigurationError

if TYPE_CHECKING:
    from tortoise.backends.base.client import BaseDBAsyncClient
    from tortoise.models import Model

    from aegis_tortoise.manager import DatabaseManager
    from aegis_tortoise.session import Session

__all__ = ["bind_sessions", "install", "keep_process_state", "publish_context",
           "remember_environment", "unpublish_context"]

# The process-wide readers as Tortoise 1.1.9 defines them (cached, from os.environ).
_env_use_tz = tortoise_tz.get_use_tz
_env_timezone = tortoise_tz.get_timezone
_parse_timezone = functools.lru_cache(maxsize=64)(tortoise_tz.parse_timezone)
_router_instances: weakref.WeakKeyDictionary[TortoiseContext, list[Any]] = (
    weakref.WeakKeyDictionary())
# Per manager context: the sessions' connection alias, and the manager's contextvar holding
# the session open in the current task (DatabaseManager._current).
_sessions: weakref.WeakKeyDictionary[TortoiseContext, tuple[str, ContextVar[Session | None]]] = (
    weakref.WeakKeyDictionary())
# Per published context: USE_TZ/TIMEZONE in os.environ when it was published.
_published_env: weakref.WeakKeyDictionary[TortoiseContext, tuple[str | None, str | None]] = (
    weakref.WeakKeyDictionary())
# Bumped by every reset of the timezone cache; _env_changed is recomputed when it moved.
_resets = 0
_env_checked: tuple[int, TortoiseContext | None, bool] = (-1, None, False)
_installed = False


def _env() -> tuple[str | None, str | None]:
    return os.environ.get("USE_TZ"), os.environ.get("TIMEZONE")


def _operation_context(op: object) -> TortoiseContext | None:
    """The context of the manager whose session runs operation ``op`` in this task."""
    for ctx, (_alias, current) in list(_sessions.items()):
        session = current.get()
        if session is not None and session._op is op:
            return ctx
    return None


def _context() -> TortoiseContext | None:
    ctx = get_current_context()
    op = operation.get()
    if op is not None:
        # A call of a session: its manager's settings, even when another manager's session
        # is the current context (sessions of two managers nested).
        bound = _sessions.get(ctx) if ctx is not None else None
        session = bound[1].get() if bound is not None else None
        if session is None or session._op is not op:
            ctx = _operation_context(op) or ctx
    return ctx if ctx is not None and ctx._inited else None


def _env_changed(ctx: TortoiseContext) -> bool:
    """Whether ``ctx`` is published and USE_TZ/TIMEZONE were changed (and the timezone cache
    reset, which is when Tortoise reads them again) since it was published."""
    global _env_checked
    if ctx is not tortoise_context._global_context:
        return False
    resets, checked_ctx, changed = _env_checked
    if resets != _resets or checked_ctx is not ctx:
        snapshot = _published_env.get(ctx)
        if snapshot is None:
            snapshot = _published_env[ctx] = _env()
        changed = _env() != snapshot
        _env_checked = (_resets, ctx, changed)
    return changed


def get_use_tz() -> bool:
    """``use_tz`` of the context whose settings apply (else the process-wide setting)."""
    ctx = _context()
    if ctx is None or _env_changed(ctx):
        return _env_use_tz()
    return ctx._use_tz


def get_timezone() -> str:
    """``timezone`` of the context whose settings apply (else the process-wide setting)."""
    ctx = _context()
    if ctx is None or _env_changed(ctx):
        return _env_timezone()
    return ctx._timezone


def get_default_timezone() -> tzinfo:
    """The current context's time zone as a tzinfo (parsed once per name)."""
    return _parse_timezone(get_timezone())


def _routers(default: ConnectionRouter, ctx: TortoiseContext | None) -> list[Any] | None:
    if ctx is None:
        return default._routers
    instances = _router_instances.get(ctx)
    if instances is None or len(instances) != len(ctx._routers):
        # Tortoise instantiates each router class once, at init; so do we, per context.
        instances = [cls() for cls in ctx._routers]
        _router_instances[ctx] = instances
    return instances


def bind_sessions(ctx: TortoiseContext, alias: str,
                  current: ContextVar[Session | None]) -> None:
    """Let the sessions of ``ctx``'s manager win over its routers.

    Args:
        ctx: The manager's Tortoise context.
        alias: The connection its sessions run on.
        current: The manager's contextvar of the session open in the current task.
    """
    _sessions[ctx] = (alias, current)


def _in_session(ctx: TortoiseContext | None, model: type[Model]) -> bool:
    """Whether a session of ``ctx``'s manager is open in the current task and runs on
    ``model``'s connection (its transaction client is bound to that alias)."""
    bound = _sessions.get(ctx) if ctx is not None else None
    if bound is None:
        return False
    alias, current = bound
    session = current.get()
    return (session is not None and session.is_active
            and model._meta.default_connection == alias)


def _route(self: ConnectionRouter, model: type[Model], action: str) -> BaseDBAsyncClient | None:
    # Mirrors ConnectionRouter._router_func/_db_route (Tortoise 1.1.9) over the context's
    # routers instead of the process-wide list. One difference, on purpose: inside a session,
    # the session wins. Tortoise 1.1.9 asks the router even inside in_transaction(), so a
    # routed read would leave the session's transaction and miss its own writes; API.md has
    # plain Tortoise calls inside a session run in its transaction. None here makes Tortoise
    # take model._meta.db, which is the session's client (bound to the alias).
    from tortoise.connection import get_connection
    from tortoise.exceptions import ConfigurationError

    ctx = _context()
    routers = _routers(self, ctx)
    if not routers or _in_session(ctx, model):
        return None
    for instance in routers:
        method = getattr(instance, action, None)
        if method is None:
            continue
        chosen = method(model)
        if chosen:
            try:
                return get_connection(chosen)
            except ConfigurationError:
                return None
    return None


def _db_for_read(self: ConnectionRouter, model: type[Model]) -> BaseDBAsyncClient | None:
    return _route(self, model, "db_for_read")


def _db_for_write(self: ConnectionRouter, model: type[Model]) -> BaseDBAsyncClient | None:
    return _route(self, model, "db_for_write")


def _cache_clear() -> None:
    global _resets
    _resets += 1
    _env_use_tz.cache_clear()
    _env_timezone.cache_clear()


# tortoise.timezone._reset_timezone_cache() (called by every init) clears the caches of the
# functions it finds under these names: ours clear the process-wide readers'.
get_use_tz.cache_clear = _cache_clear  # type: ignore[attr-defined]
get_timezone.cache_clear = _cache_clear  # type: ignore[attr-defined]
get_default_timezone.cache_clear = _cache_clear  # type: ignore[attr-defined]


def install() -> None:
    """Make Tortoise read time zone and routers from the current context (idempotent).

    Replaces module attributes of Tortoise 1.1.9: ``tortoise.timezone.get_use_tz`` /
    ``get_timezone`` / ``get_default_timezone`` (``now()``, ``localtime()`` and the other
    helpers there look them up at call time), the copies ``tortoise.fields.data`` imported by
    name, and ``ConnectionRouter.db_for_read`` / ``db_for_write``.
    """
    global _installed
    if _installed:
        return
    tortoise_tz.get_use_tz = get_use_tz  # type: ignore[assignment]
    tortoise_tz.get_timezone = get_timezone  # type: ignore[assignment]
    tortoise_tz.get_default_timezone = get_default_timezone  # type: ignore[assignment]
    tortoise_data.get_use_tz = get_use_tz  # type: ignore[attr-defined,assignment]
    tortoise_data.get_default_timezone = get_default_timezone  # type: ignore[attr-defined,assignment]
    ConnectionRouter.db_for_read = _db_for_read  # type: ignore[method-assign]
    ConnectionRouter.db_for_write = _db_for_write  # type: ignore[method-assign]
    _installed = True


@contextlib.contextmanager
def keep_process_state() -> Iterator[None]:
    """Restore ``USE_TZ``/``TIMEZONE`` and the global routers that a context's init rewrites."""
    saved_env = {name: os.environ.get(name) for name in ("USE_TZ", "TIMEZONE")}
    saved_routers = router._routers
    try:
        yield
    finally:
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        _cache_clear()
        router._routers = saved_routers


def remember_environment(ctx: TortoiseContext) -> None:
    """Note USE_TZ/TIMEZONE as they are when ``ctx`` is published (see :func:`_env_changed`)."""
    global _env_checked
    _published_env[ctx] = _env()
    _env_checked = (-1, None, False)


def publish_context(ctx: TortoiseContext, manager: DatabaseManager) -> None:
    """Make ``ctx`` the process's fallback Tortoise context (global_context=True)."""
    try:
        set_global_context(ctx)
        remember_environment(ctx)
    except TortoiseConfigurationError as exc:
        raise ConfigurationError(
            f"{manager!r} cannot publish its Tortoise context: another one (a Tortoise.init "
            "or RegisterTortoise with _enable_global_fallback=True, or a manager with "
            "global_context=True) already serves plain Tortoise calls in this process. Give "
            "this one global_context=False (_enable_global_fallback=False)",
            details={"field": "global_context"}) from exc


def unpublish_context(ctx: TortoiseContext | None) -> None:
    """Stop ``ctx`` serving as the process's fallback context, if it does."""
    if ctx is not None and tortoise_context._global_context is ctx:
        tortoise_context._global_context = None

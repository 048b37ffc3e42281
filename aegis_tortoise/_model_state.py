"""Model-class state that Tortoise keeps per class, shared by every context in the process.

Tortoise 1.1.9 stores on each model class the name of its connection
(``_meta.default_connection``) and its base queries in one SQL dialect
(``_meta.basequery``), and caches insert/delete SQL per (connection name, table) in
``EXECUTOR_CACHE``. Managers (and any ``Tortoise.init``) that share model classes therefore
share this state. :func:`activate` puts a manager's state back on its models before a
session when someone else changed it, which works as long as no session of another dialect
is using those models at the same time; then it raises a clear error instead.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from tortoise.apps import Apps
from tortoise.backends.base import executor

from aegis_tortoise.errors import TransactionError

if TYPE_CHECKING:
    from tortoise.models import Model

    from aegis_tortoise.manager import DatabaseManager

__all__ = ["activate", "conflicting_manager", "dialect_error", "install", "record", "register"]

_managers: weakref.WeakSet[DatabaseManager] = weakref.WeakSet()
# (dialect, connection name) each model's class state was last prepared for by a manager;
# absent when something else (a Tortoise.init, another context) prepared it since.
_prepared: dict[type[Model], tuple[str, str]] = {}
# Which model owns each (connection name, schema, table): Tortoise's EXECUTOR_CACHE is keyed
# by it, so two model classes on one key would run each other's cached SQL.
table_owners: dict[tuple[str, str | None, str], type[Model]] = {}
_generation = 0
_installed = False


def register(manager: DatabaseManager) -> None:
    """Track ``manager`` for the dialect-conflict check."""
    _managers.add(manager)


def generation() -> int:
    """Bumped whenever any model's class state changes."""
    return _generation


def conflicting_manager(manager: DatabaseManager,
                        models: Iterable[type[Model]]) -> DatabaseManager | None:
    """Another manager with a session open on some of ``models`` that needs their class
    state otherwise: another dialect, or another connection name."""
    wanted = set(models)
    for other in list(_managers):
        if other is manager or not other._active_sessions:
            continue
        for model in wanted.intersection(other._models):
            # Same dialect and same connection name: the class state serves both.
            if (other.dialect, other._model_connections.get(model)) != (
                    manager.dialect, manager._model_connections.get(model)):
                return other
    return None


def dialect_error(manager: DatabaseManager, other: DatabaseManager) -> TransactionError:
    """The error for two managers wanting the same model classes' state at once."""
    return TransactionError(
        f"Cannot open a {manager.dialect} session on {manager.url.masked()} while a "
        f"{other.dialect} session on {other.url.masked()} is using the same model classes: "
        "Tortoise ORM keeps one SQL dialect and one connection name per model class, so "
        "managers that differ in either and share models must work one after the other",
        details={"dialect": manager.dialect, "busy_dialect": other.dialect},
    )


def _forget_sql(model: type[Model], connection: str | None) -> None:
    """Drop Tortoise's cached insert/delete SQL of ``model`` (it is in one dialect)."""
    if connection is not None:
        executor.EXECUTOR_CACHE.pop((connection, model._meta.schema, model._meta.db_table),
                                    None)


def prepare(manager: DatabaseManager, models: Iterable[type[Model]]) -> None:
    """Point the model classes at the manager's connections and build their base queries in
    its dialect (synchronous, so atomic on the event loop)."""
    global _generation
    query_class = manager._client().query_class
    for model in models:
        # Mirrors tortoise.apps.Apps._build_initial_querysets (Tortoise 1.1.9).
        meta = model._meta
        connection = manager._model_connections[model]
        _forget_sql(model, meta.default_connection)
        meta.default_connection = connection
        basequery = query_class.from_(meta.basetable)
        meta.basequery = basequery
        meta.basequery_all_fields = basequery.select(*meta.db_fields)
        _prepared[model] = (manager.dialect, connection)
    _generation += 1


def record(manager: DatabaseManager, models: Iterable[type[Model]]) -> None:
    """Note that Tortoise's init has just prepared ``models`` for ``manager``."""
    global _generation
    for model in models:
        _prepared[model] = (manager.dialect, manager._model_connections[model])
    _generation += 1


def activate(manager: DatabaseManager) -> None:
    """Make the manager's models use its connection names and build SQL of its dialect,
    unless another dialect's open session uses them."""
    if manager._generation_seen == _generation:
        return
    stale = [m for m in manager._models
             if _prepared.get(m) != (manager.dialect, manager._model_connections[m])]
    if stale:
        other = conflicting_manager(manager, stale)
        if other is not None:
            raise dialect_error(manager, other)
        prepare(manager, stale)
    manager._generation_seen = _generation


def _build_initial_querysets(self: Apps) -> None:
    """Tortoise's own, then forget what no longer holds for these models: the cached SQL
    and a manager's claim where the dialect changed, the claim where the connection did."""
    global _generation
    models = [model for app in self.apps.values() for model in app.values()]
    dialects = {model: type(model._meta.basequery) for model in models}
    _original_build(self)
    for model in models:
        meta = model._meta
        if type(meta.basequery) is not dialects[model]:
            _forget_sql(model, meta.default_connection)
            _prepared.pop(model, None)
        elif (claim := _prepared.get(model)) is not None and claim[1] != meta.default_connection:
            _prepared.pop(model, None)
    _generation += 1


_original_build: Any = Apps._build_initial_querysets


def install() -> None:
    """Wrap ``Apps._build_initial_querysets`` (Tortoise 1.1.9), which every init calls, so a
    ``Tortoise.init`` elsewhere in the process is noticed before the next session."""
    global _installed
    if not _installed:
        Apps._build_initial_querysets = _build_initial_querysets  # type: ignore[method-assign]
        _installed = True

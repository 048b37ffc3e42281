"""The registration the framework modules share: RegisterTortoise with the framework's own
place for the manager, started and stopped from the framework's hooks."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any

from tortoise.config import TortoiseConfig
from tortoise.context import TortoiseContext

from aegis_tortoise._register import RegisterTortoise
from aegis_tortoise.manager import DatabaseManager

__all__ = ["Registration"]


class Registration(RegisterTortoise):
    """RegisterTortoise for a framework whose app is not Starlette's: ``keep`` puts the
    manager where the framework keeps state, ``forget`` takes it away again."""

    def __init__(
        self,
        app: Any,
        *,
        config: dict[str, Any] | TortoiseConfig | None,
        config_file: str | None,
        db_url: str | None,
        modules: dict[str, Iterable[str | ModuleType]] | None,
        generate_schemas: bool = False,
        keep: Callable[[DatabaseManager], None],
        forget: Callable[[], None],
        enable_global_fallback: bool | None = None,
        options: dict[str, Any],
    ) -> None:
        super().__init__(None, config, config_file, db_url, modules, generate_schemas,
                         _enable_global_fallback=enable_global_fallback, **options)
        self.framework_app = app
        self._keep_manager = keep
        self._forget_manager = forget

    def _keep(self, manager: DatabaseManager, ctx: TortoiseContext) -> None:
        self._keep_manager(manager)

    def _forget(self) -> None:
        self._forget_manager()

"""Model modules named in settings: imported up front, so a wrong one is our error.

Tortoise 1.1.9 reports an unknown module as its own ``ConfigurationError`` raised while
handling the ``ModuleNotFoundError`` (and only warns about a module without models), deep
inside ``TortoiseContext.init``. :func:`check_model_modules` runs first and names the module
and the setting instead.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterable
from types import ModuleType

from tortoise.models import Model

from aegis_tortoise.errors import ConfigurationError

__all__ = ["check_model_modules", "module_models"]


def check_model_modules(modules: Iterable[str | ModuleType]) -> None:
    """Import each model module and check that it defines Tortoise models.

    Raises:
        ConfigurationError: a module cannot be found or fails to import, or defines no
            model; chained to the import error.
    """
    for module in modules:
        if isinstance(module, ModuleType):
            _require_models(module)
            continue
        try:
            imported = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            missing = exc.name or module
            found = "not found" if module == missing or module.startswith(f"{missing}.") else (
                f"imports {missing!r}, which is not installed")
            raise ConfigurationError(
                f"Model module {module!r} {found}: check DATABASE_MODELS (or models=); "
                "the module must be importable from the working directory or an installed "
                "package",
                details={"module": module}, cause=exc) from exc
        except Exception as exc:
            raise ConfigurationError(
                f"Model module {module!r} failed to import: {type(exc).__name__}: {exc}",
                details={"module": module}, cause=exc) from exc
        _require_models(imported)


def _require_models(module: ModuleType) -> None:
    if not module_models(module):
        raise ConfigurationError(
            f"Model module {module.__name__!r} defines no Tortoise models: check "
            "DATABASE_MODELS (or models=)",
            details={"module": module.__name__})


def module_models(module: ModuleType) -> list[type[Model]]:
    """The models Tortoise 1.1.9's ``Apps._discover_models`` would find in ``module``:
    ``__models__`` if the module sets it, else every concrete model class in it."""
    candidates = getattr(module, "__models__", None)
    if candidates:
        try:
            candidates = [*candidates]
        except TypeError:
            candidates = None
    if not candidates:
        candidates = [getattr(module, name) for name in dir(module)]
    return [c for c in candidates
            if inspect.isclass(c) and issubclass(c, Model) and not c._meta.abstract]

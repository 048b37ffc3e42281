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

__all__ = ["check_model_modules"]


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
    # What Tortoise discovers: __models__ if the module sets it, else every model class in it.
    names = getattr(module, "__models__", None)
    values = [getattr(module, n) for n in names] if names is not None else vars(module).values()
    if not any(inspect.isclass(v) and issubclass(v, Model) for v in values):
        raise ConfigurationError(
            f"Model module {module.__name__!r} defines no Tortoise models: check "
            "DATABASE_MODELS (or models=)",
            details={"module": module.__name__})

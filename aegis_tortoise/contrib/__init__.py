"""Tortoise's framework registrations (``tortoise.contrib.<framework>``) on a
:class:`~aegis_tortoise.DatabaseManager`.

One module per framework Tortoise 1.1.9 integrates with: ``starlette``, ``sanic``,
``aiohttp``, ``quart`` and ``blacksheep``. Each ``register_tortoise`` takes the arguments of
Tortoise's function of that name (positional ones too), plus this library's pool options,
and keeps the manager where that framework keeps state. Each framework is an optional extra
(``pip install aegis-tortoise[sanic]``); importing a module without its framework raises an
``ImportError`` that names the extra.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["require"]


def require(module: str, framework: str) -> ModuleType:
    """Import ``module`` of ``framework``, or raise an ImportError naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"aegis_tortoise.contrib.{framework} needs {framework}, which is not installed: "
            f"pip install 'aegis-tortoise[{framework}]'", name=module) from exc

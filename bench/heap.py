"""A big heap for ``bench/run.py --heap N``: objects a service's process holds for its lifetime.

A service keeps its framework, pydantic models, modules and caches alive: hundreds of
thousands to millions of objects the cyclic garbage collector tracks. A full collection walks
all of them, so whatever leaves cyclic garbage (a prefetched reverse relation holds its
owner) costs more in such a process than in a small benchmark script (issue 23).
"""

from __future__ import annotations

import gc
from typing import Any

__all__ = ["allocate", "tracked"]


def allocate(count: int) -> list[Any]:
    """About ``count`` tracked objects, containers of containers like an app's state.

    Each unit is a dict holding a list and a tuple of one more dict (4 tracked objects, as a
    config entry or a cached model would be). The caller keeps the result alive for the run.
    """
    units = []
    for i in range(max(count, 0) // 4):
        inner = {"i": i}
        units.append({"key": str(i), "items": [i, inner], "meta": (i, {"n": i})})
    return units


def tracked() -> int:
    """How many objects the garbage collector tracks now."""
    return len(gc.get_objects())

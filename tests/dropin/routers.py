"""A Tortoise router that counts the reads it routes (for the per-manager routers test)."""

from typing import Any

calls: list[str] = []


class CountingRouter:
    def db_for_read(self, model: type[Any]) -> str | None:
        calls.append(model.__name__)
        return None

    def db_for_write(self, model: type[Any]) -> str | None:
        return None

"""An example model with an optimistic version (docs/concurrency.md)."""

from __future__ import annotations

from tortoise import fields

from aegis_tortoise.models import VersionedEntity

__all__ = ["Account"]


class Account(VersionedEntity):
    """An account whose balance is changed read-modify-write."""

    owner = fields.CharField(max_length=50)
    balance = fields.IntField(default=0)

    class Meta:
        table = "accounts"

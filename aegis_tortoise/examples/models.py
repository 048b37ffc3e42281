"""The seed's example models, ``User`` and ``Policy``, as Tortoise models."""

from __future__ import annotations

from tortoise import fields

from aegis_tortoise.models import BaseEntity

__all__ = ["Policy", "User"]


class User(BaseEntity):
    """A user (the seed's ``users`` table)."""

    email = fields.CharField(max_length=255, unique=True)
    name = fields.CharField(max_length=100)

    policies: fields.ReverseRelation[Policy]

    class Meta:
        table = "users"


class Policy(BaseEntity):
    """A policy owned by a user (the seed's ``policies`` table)."""

    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="policies", on_delete=fields.CASCADE)
    title = fields.CharField(max_length=200)

    user_id: int

    class Meta:
        table = "policies"

"""Extra models for the repository tests (no tests here): no soft delete, varied field types."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from tortoise import fields
from tortoise.manager import Manager
from tortoise.models import Model
from tortoise.queryset import QuerySet

GADGET_MODELS = ["tests.integration.test_repository_models"]


class Gadget(Model):
    """No ``deleted_at``; defaults of every kind, for ``create_many``'s auto fields."""

    id = fields.IntField(primary_key=True)
    code = fields.CharField(max_length=50, unique=True)
    qty = fields.IntField(default=1)
    price = fields.DecimalField(max_digits=10, decimal_places=2, default=Decimal("0"))
    active = fields.BooleanField(default=True)
    token = fields.UUIDField(default=uuid.uuid4)
    data: Any = fields.JSONField(null=True)
    made_at = fields.DatetimeField(auto_now_add=True)
    changed_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "repo_gadgets"


class Ticket(Model):
    """Defaults the database supplies (``db_default``): create_many leaves those columns out."""

    id = fields.IntField(primary_key=True)
    title = fields.CharField(max_length=50)
    status = fields.CharField(max_length=20, db_default="open")
    note = fields.CharField(max_length=20, null=True, db_default="none")

    class Meta:
        table = "repo_tickets"


class ActiveOnly(Manager):
    """A model manager that hides inactive rows from every query of the model."""

    def get_queryset(self) -> QuerySet[Any]:
        return super().get_queryset().filter(active=True)


class Listed(Model):
    """A custom ``Meta.manager``: repository reads must honour it on every path."""

    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=20)
    active = fields.BooleanField(default=True)

    class Meta:
        table = "repo_listed"
        manager = ActiveOnly()


class Coded(Model):
    """A primary key the caller gives (not generated)."""

    code = fields.CharField(max_length=10, primary_key=True)
    label = fields.CharField(max_length=20)

    class Meta:
        table = "repo_coded"

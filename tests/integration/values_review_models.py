"""Models of tests/integration/test_values_review.py: one column of each kind a long
``__in`` list or a filter value can reach."""

from __future__ import annotations

import enum

from tortoise import fields
from tortoise.models import Model

__all__ = ["Color", "Kind", "Thing"]

MODELS = ["tests.integration.values_review_models"]


class Kind(enum.IntEnum):
    """An int enum."""

    A = 1
    B = 2


class Color(enum.StrEnum):
    """A text enum."""

    RED = "red"
    BLUE = "blue"


class Thing(Model):
    """One column of each kind."""

    id = fields.IntField(primary_key=True)
    code = fields.CharField(max_length=10)
    token = fields.UUIDField(null=True)
    kind = fields.IntEnumField(Kind, default=Kind.A)
    color = fields.CharEnumField(Color, null=True, max_length=8)
    at = fields.DatetimeField(null=True)
    day = fields.DateField(null=True)
    price = fields.DecimalField(max_digits=10, decimal_places=2, null=True)
    flag = fields.BooleanField(default=False)
    ratio = fields.FloatField(null=True)
    data = fields.JSONField(null=True)

    class Meta:
        table = "review_things"

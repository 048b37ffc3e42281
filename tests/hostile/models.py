"""Models of the hostile-input and hardening tests: every kind of value a filter can reach."""

from __future__ import annotations

from typing import Any

from tortoise import fields
from tortoise.models import Model

__all__ = ["Item", "Owner", "Part"]

MODELS = ["tests.hostile.models"]


class Owner(Model):
    """The owner of items: a relation to filter across (and back: a cycle)."""

    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=100)

    items: fields.ReverseRelation[Item]

    class Meta:
        table = "hostile_owners"


class Item(Model):
    """One row of every kind the hostile tests put into filters and writes."""

    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=200)
    qty = fields.IntField(default=0)
    price = fields.DecimalField(max_digits=10, decimal_places=2, null=True)
    ratio = fields.FloatField(null=True)
    span = fields.TimeDeltaField(null=True)
    data: Any = fields.JSONField(null=True)
    owner: fields.ForeignKeyNullableRelation[Owner] = fields.ForeignKeyField(
        "models.Owner", related_name="items", null=True, on_delete=fields.CASCADE)

    owner_id: int | None

    class Meta:
        table = "hostile_items"


class Part(Model):
    """A tree of parts: a self-referencing foreign key (a path may pass one table twice)."""

    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=50)
    parent: fields.ForeignKeyNullableRelation[Part] = fields.ForeignKeyField(
        "models.Part", related_name="children", null=True, on_delete=fields.CASCADE)

    children: fields.ReverseRelation[Part]

    class Meta:
        table = "hostile_parts"


#: The rows every hardening test starts from (two owners, five items).
OWNERS = [{"id": 1, "name": "ann"}, {"id": 2, "name": "bob"}]
ITEMS = [
    {"id": i, "name": f"item{i}", "qty": i, "price": f"{i}.50", "ratio": i / 4,
     "data": {"color": f"c{i}", "secret": f"s{i}", "tags": ["a", f"t{i}"], "n": i},
     "owner_id": 1 if i != 3 else 2}
    for i in range(1, 6)
]

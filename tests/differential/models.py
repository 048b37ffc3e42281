"""Models of the differential suite: every Tortoise field type and the variants around them.

- ``Owner``: int key, a ``Meta.ordering`` (total: ``name`` is unique), a unique field stored
  under another column name (``source_field``), reverse FK ``items``.
- ``Item``: the wide one: every scalar field type, null / default / callable default /
  ``db_default``, ``auto_now`` and ``auto_now_add``, a nullable FK, ``source_field`` columns.
- ``Tag``: UUID key, a NOT NULL FK to ``Item`` (``Item.tags``), a unique label.
- ``Badge``: char key, a one-to-one to ``Item``, ``TimeField(auto_now=True)``.
"""

from __future__ import annotations

import uuid
from enum import IntEnum, StrEnum

from tortoise import fields
from tortoise.models import Model

MODELS = ["tests.differential.models"]


class Kind(IntEnum):
    """For ``IntEnumField``."""

    A = 1
    B = 2
    C = 3


class Color(StrEnum):
    """For ``CharEnumField``."""

    RED = "red"
    GREEN = "green"
    BLUE = "blue"


def next_label() -> str:
    """A callable default that is not a type (unlike ``uuid.uuid4``)."""
    return f"L{uuid.uuid4().hex[:6]}"


class Owner(Model):
    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=12, unique=True, source_field="owner_name")
    rank = fields.SmallIntField(default=0)
    since = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "diff_owner"
        ordering = ("-rank", "name")


class Item(Model):
    id = fields.IntField(primary_key=True)
    num = fields.IntField()
    big = fields.BigIntField(null=True, source_field="big_value")
    small = fields.SmallIntField(default=0)
    name = fields.CharField(max_length=16, source_field="item_name")
    note = fields.TextField(null=True)
    flag = fields.BooleanField(default=False)
    price = fields.DecimalField(max_digits=8, decimal_places=2, null=True)
    ratio = fields.FloatField(null=True)
    day = fields.DateField(null=True)
    clock = fields.TimeField(null=True)
    span = fields.TimeDeltaField(null=True)
    moment = fields.DatetimeField(null=True)
    token = fields.UUIDField(default=uuid.uuid4)
    label = fields.CharField(max_length=12, default=next_label)
    data = fields.JSONField(null=True)
    blob = fields.BinaryField(null=True)
    kind = fields.IntEnumField(Kind, default=Kind.A)
    color = fields.CharEnumField(Color, null=True, max_length=8)
    status = fields.CharField(max_length=10, db_default="new")
    created = fields.DatetimeField(auto_now_add=True)
    changed = fields.DatetimeField(auto_now=True)
    owner: fields.ForeignKeyNullableRelation[Owner] = fields.ForeignKeyField(
        "models.Owner", related_name="items", null=True, source_field="owner_ref")

    class Meta:
        table = "diff_item"


class Tag(Model):
    id = fields.UUIDField(primary_key=True, default=uuid.uuid4)
    label = fields.CharField(max_length=12, unique=True)
    weight = fields.FloatField(default=1.0)
    item: fields.ForeignKeyRelation[Item] = fields.ForeignKeyField(
        "models.Item", related_name="tags")

    class Meta:
        table = "diff_tag"


class Badge(Model):
    code = fields.CharField(max_length=8, primary_key=True)
    title = fields.CharField(max_length=20, null=True)
    stamp = fields.TimeField(auto_now=True)
    item: fields.OneToOneNullableRelation[Item] = fields.OneToOneField(
        "models.Item", related_name="badge", null=True)

    class Meta:
        table = "diff_badge"

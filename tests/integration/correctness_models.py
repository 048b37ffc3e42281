"""Models for the correctness tests of issue 11 (no tests here)."""

from __future__ import annotations

from typing import Any

from tortoise import fields
from tortoise.models import Model
from tortoise.validators import validate_ipv4_address

CORRECTNESS_MODELS = ["tests.integration.correctness_models"]


class Clock(Model):
    """A ``TimeField(auto_now=True)``: update() must store a time, not a timestamp."""

    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=20)
    at = fields.TimeField(auto_now=True)

    class Meta:
        table = "corr_clock"


class Typed(Model):
    """Fields whose values need converting or validating."""

    id = fields.IntField(primary_key=True)
    token = fields.UUIDField(null=True)
    day = fields.DateField(null=True)
    price = fields.DecimalField(max_digits=10, decimal_places=2, null=True)
    ip = fields.CharField(max_length=45, null=True, validators=[validate_ipv4_address])
    data: Any = fields.JSONField(null=True)
    qty = fields.IntField(null=True)
    label = fields.CharField(max_length=20, null=True)

    class Meta:
        table = "corr_typed"


class Ranked(Model):
    """A default ordering (``Meta.ordering``) that list() and paginate() must honour."""

    id = fields.IntField(primary_key=True)
    code = fields.CharField(max_length=10)
    rank = fields.IntField()
    low = fields.IntField(default=0)

    class Meta:
        table = "corr_ranked"
        ordering = ("-rank",)


class Member(Model):
    """A field stored under another column name (``source_field``)."""

    id = fields.IntField(primary_key=True)
    email = fields.CharField(max_length=100, unique=True, source_field="email_address")

    class Meta:
        table = "corr_members"


class Keyed(Model):
    """A UUID primary key."""

    id = fields.UUIDField(primary_key=True)
    label = fields.CharField(max_length=20)

    class Meta:
        table = "corr_keyed"


class Short(Model):
    """A primary key with a validator (max_length)."""

    code = fields.CharField(max_length=5, primary_key=True)
    label = fields.CharField(max_length=20)

    class Meta:
        table = "corr_short"


class Defaulted(Model):
    """Columns the database fills in (``db_default``)."""

    id = fields.IntField(primary_key=True)
    title = fields.CharField(max_length=20)
    status = fields.CharField(max_length=20, db_default="open")
    level = fields.IntField(db_default=3)

    class Meta:
        table = "corr_defaulted"

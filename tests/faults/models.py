"""The fault tests' own table: rows tagged with the UUID of the unit of work that wrote them.

No unique constraint on purpose: a unit of work committed twice shows up as duplicate rows
instead of being stopped by the database.
"""

from __future__ import annotations

from tortoise import fields
from tortoise.models import Model

__all__ = ["Entry"]


class Entry(Model):
    """One row of a unit of work: ``part`` k of the unit ``unit``."""

    id = fields.IntField(primary_key=True)
    unit = fields.UUIDField(db_index=True)
    part = fields.IntField()
    note = fields.CharField(max_length=100, default="")

    class Meta:
        table = "fault_entries"
